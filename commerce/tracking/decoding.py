"""Tracking calls decoded: the call and result types, payload decoding, write-key authentication."""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from typing import Any

from commerce.models import Event
from core.exceptions import PayloadTooLarge, ValidationError
from core.parsers import json_has_nul, json_loads

MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 255
CALL_TYPES = frozenset(Event.Type.values)


@dataclass(slots=True)
class Call:
    """One validated tracking call, ready to store (``shopper_id`` is filled by resolution)."""

    type: str
    message_id: str
    name: str
    user_id: str
    anonymous_id: str
    properties: dict[str, Any]
    context: dict[str, Any]
    timestamp: dt.datetime
    previous_id: str = ""
    shopper_id: int | None = None
    user_hash: str = ""


@dataclass(frozen=True)
class IngestResult:
    received: int
    stored: int
    event_ids: list[int] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


# --- Decoding ----------------------------------------------------------------------------


def payload_decode(
    *,
    body: bytes,
    content_encoding: str = "",
    max_bytes: int,
    too_large_code: str = "body_too_large",
) -> tuple[Any, int]:
    """Parse a request body (plain or gzip/deflate) into JSON, refusing more than ``max_bytes``.

    Returns the payload and the size of the decoded JSON in bytes.

    The limit applies to the decompressed JSON, so a small gzip bomb is refused (413) without
    ever being inflated past the limit.
    """
    encoding = content_encoding.strip().lower()
    if encoding in {"gzip", "x-gzip", "deflate"}:
        # wbits 47 (32 + 15) detects a gzip or zlib header automatically.
        inflater = zlib.decompressobj(47)
        try:
            body = inflater.decompress(body, max_bytes + 1)
        except zlib.error:
            raise ValidationError(
                f"the body is not valid {encoding} data", code="malformed_body"
            ) from None
        if len(body) > max_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(
                f"the decompressed body exceeds {max_bytes} bytes", code=too_large_code
            )
    elif encoding not in {"", "identity"}:
        raise ValidationError(
            f"unsupported Content-Encoding {content_encoding!r}", code="unsupported_encoding"
        )
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the body exceeds {max_bytes} bytes", code=too_large_code)
    payload = json_loads(body)
    if json_has_nul(body, payload):
        # PostgreSQL stores neither text nor jsonb with NUL characters.
        raise ValidationError("NUL characters (\\u0000) are not accepted", code="invalid_character")
    return payload, len(body)
