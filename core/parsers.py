"""One way to read a JSON request body, with limits every public entry shares.

``json_loads`` is the only JSON decoder for request bodies: DRF views get it through
``JSONParser`` (the project default in ``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``), the
tracking API calls it directly. It refuses, as a 4xx and before any other code sees the value:

- bodies over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413 ``payload_too_large``), read no further than
  the limit;
- nesting deeper than ``PATRON_JSON_MAX_DEPTH`` (default 64) arrays/objects (400
  ``json_too_deep``). Python's ``json`` overflows the C stack or raises ``RecursionError`` on
  deep input, ``orjson.dumps`` refuses more than 254 levels when the value is stored again, and
  no real caller nests that deep;
- numbers that are not finite doubles (``1e9999999``, which Python's ``json`` turns into
  ``inf``, and ``NaN``/``Infinity`` literals) and invalid UTF-8 or JSON (400
  ``malformed_json``; ``parse_error`` through DRF, DRF's own code for it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import IO, Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from core.exceptions import PayloadTooLarge, ValidationError

DEFAULT_MAX_DEPTH = 64
# A run of 20 digits may be an integer beyond 64 bits (2**64 has 20 digits).
_LONG_INTEGER = re.compile(rb"\d{20}")


def max_depth() -> int:
    return int(getattr(settings, "PATRON_JSON_MAX_DEPTH", DEFAULT_MAX_DEPTH))


def json_has_nul(raw: bytes, value: Any) -> bool:
    """Whether ``value``, decoded from the JSON text ``raw``, holds a NUL character in a string
    or a key. PostgreSQL stores none in text or jsonb, so callers refuse such input (400, or a
    protocol error on a socket) rather than fail at the INSERT. The byte test on ``raw`` (JSON
    can only spell NUL as ``\\u0000``) spares the walk for nearly every body."""
    return b"\\u0000" in raw and _contains_nul(value)


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests arrays/objects more than ``limit`` levels (a top-level {} is 1)."""
    if not isinstance(value, (dict, list)):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def json_loads(
    data: bytes | str, *, depth_limit: int | None = None, exact_integers: bool = False
) -> Any:
    """Decode a JSON document, or raise ``ValidationError`` (400) saying what is wrong.

    Codes: ``malformed_json`` (syntax, encoding, a number out of the double range),
    ``json_too_deep`` (more than ``depth_limit`` levels, default ``PATRON_JSON_MAX_DEPTH``).
    Integers beyond 64 bits come back as floats, as ``orjson`` reads them (and as it can write
    them again), unless ``exact_integers`` asks for Python ints (for validation that must say
    "too large" rather than "not an integer").
    """
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    limit = max_depth() if depth_limit is None else depth_limit
    if json_depth_exceeds(value, limit):
        raise ValidationError(
            f"JSON may nest at most {limit} arrays or objects", code="json_too_deep"
        )
    if exact_integers and _LONG_INTEGER.search(data if isinstance(data, bytes) else data.encode()):
        # orjson reads integers beyond 64 bits as floats (10**30 would become 1e+30, and an
        # integer field would refuse it as "not an integer" instead of "too large"); the
        # standard library keeps them exact, and is safe here: the depth is checked above.
        value = json.loads(data)
    return value


def body_read(stream: IO[bytes] | Any, *, max_bytes: int, content_length: int | None) -> bytes:
    """Read a request body of at most ``max_bytes``, or raise ``PayloadTooLarge`` (413).

    A declared ``Content-Length`` over the limit is refused before anything is read; a body
    without one is read up to one byte past the limit.
    """
    if content_length is not None and content_length > max_bytes:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes", code="payload_too_large")
    if stream is None:
        return b""
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes", code="payload_too_large")
    return bytes(data)


class JSONParser(BaseParser):
    """DRF's JSON parser with Patron's limits (see the module docstring)."""

    media_type = "application/json"

    def parse(
        self,
        stream: IO[bytes] | Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        request = (parser_context or {}).get("request")
        length: int | None = None
        if request is not None:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0) or None
            except ValueError:
                length = None
        limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0) or 2**62
        body = body_read(stream, max_bytes=limit, content_length=length)
        try:
            return json_loads(body, exact_integers=True)
        except ValidationError as exc:
            if exc.code != "malformed_json":
                raise
            # DRF's own code for a body that is not JSON, which API clients already know.
            raise ParseError(exc.message, code="parse_error") from None
