"""Reading import files (CSV or JSON, optionally gzipped) and parsing their fields, shared by files and the API."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from django.utils import timezone

from core.exceptions import ValidationError

CENT = Decimal("0.01")
# Order and line totals are numeric(12, 2).
MAX_AMOUNT = Decimal("9999999999.99")
MAX_QUANTITY = 1_000_000
MAX_STOCK = 2_147_483_647
URL_PATTERN = r"^(?:https?://[^\s/?#]+[^\s]*|/[^\s]*)$"
URL_PATTERN_OR_EMPTY = r"^(?:(?:https?://[^\s/?#]+[^\s]*|/[^\s]*))?$"
CURRENCY_PATTERN = r"^[A-Za-z]{3}$"
_URL_RE = re.compile(URL_PATTERN)
_CURRENCY_RE = re.compile(CURRENCY_PATTERN)
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}


# --- Reading files -----------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def rows_read(*, path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV or JSON file (optionally gzipped), chosen by the file's extension.

    CSV: a header row, one record per line; header names are matched case-insensitively.
    JSON: an array of objects; numbers with a fraction are read as ``Decimal``.
    """
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if not path.is_file():
        raise ValidationError(f"{path}: no such file", code="file_not_found")
    try:
        with _open_text(path) as handle:
            if kind == ".csv":
                reader = csv.DictReader(handle)
                if reader.fieldnames is None:
                    return []
                reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
                return [
                    {key: value for key, value in row.items() if key is not None} for row in reader
                ]
            if kind == ".json":
                data = json.load(handle, parse_float=Decimal)
            else:
                raise ValidationError(
                    f"{path.name}: expected a .csv or .json file", code="unsupported_file"
                )
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError, OSError) as exc:
        raise ValidationError(
            f"{path.name}: cannot be read: {exc}", code="unreadable_file"
        ) from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValidationError(f"{path.name}: expected a JSON array of objects", code="invalid_file")
    return data


# --- Field parsing (shared by files and the API) -----------------------------------------


class _RowError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _row_error(row: int, error: _RowError) -> ValidationError:
    return ValidationError(
        f"row {row}: {error.field}: {error.message}",
        code="invalid_row",
        extra={"row": row, "field": error.field},
    )


def _given(raw: Mapping[str, Any], key: str) -> bool:
    """A key counts as given when present with a value that is not null or blank."""
    value = raw.get(key)
    return value is not None and not (isinstance(value, str) and not value.strip())


def _text(
    raw: Mapping[str, Any], key: str, *, max_length: int, required: bool = False
) -> str | None:
    if not _given(raw, key):
        if required:
            raise _RowError(key, "is required")
        return None
    value = raw[key]
    if not isinstance(value, str | int | Decimal) or isinstance(value, bool):
        raise _RowError(key, "must be text")
    text = str(value).strip()
    if "\x00" in text:
        raise _RowError(key, "must not contain NUL characters")
    if len(text) > max_length:
        raise _RowError(key, f"must be at most {max_length} characters")
    return text


def _decimal(
    raw: Mapping[str, Any], key: str, *, minimum: Decimal, maximum: Decimal = MAX_AMOUNT
) -> Decimal | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _RowError(key, "must be a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise _RowError(key, f"must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise _RowError(key, "must be a finite number")
    if abs(amount) > maximum:  # checked first: quantize() of a huge value would overflow
        raise _RowError(key, f"must be between {minimum} and {maximum}")
    amount = amount.quantize(CENT, rounding=ROUND_HALF_UP)  # to the penny, as services.money
    if not minimum <= amount <= maximum:
        raise _RowError(key, f"must be between {minimum} and {maximum}")
    return amount


def _integer(raw: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, bool):
        raise _RowError(key, "must be a whole number")
    if isinstance(value, int):
        number = value
    else:
        try:
            exact = Decimal(str(value).strip())
        except InvalidOperation:
            raise _RowError(key, f"must be a whole number, got {value!r}") from None
        if not exact.is_finite() or exact != exact.to_integral_value():
            raise _RowError(key, f"must be a whole number, got {value!r}")
        number = int(exact)
    if not minimum <= number <= maximum:
        raise _RowError(key, f"must be between {minimum} and {maximum}")
    return number


def _boolean(raw: Mapping[str, Any], key: str) -> bool | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _RowError(key, f"must be true or false, got {value!r}")


def _url(raw: Mapping[str, Any], key: str) -> str | None:
    text = _text(raw, key, max_length=500)
    if text is not None and not _URL_RE.match(text):
        raise _RowError(key, "must be an http(s) URL or a path starting with /")
    return text


def _currency(raw: Mapping[str, Any], key: str = "currency") -> str | None:
    text = _text(raw, key, max_length=3)
    if text is not None and not _CURRENCY_RE.match(text):
        raise _RowError(key, "must be a three-letter code such as GBP")
    return text.upper() if text is not None else None


def _datetime(raw: Mapping[str, Any], key: str, *, zone: dt.tzinfo) -> dt.datetime | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _RowError(key, f"must be an ISO 8601 date and time, got {value!r}") from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=zone)
    return moment
