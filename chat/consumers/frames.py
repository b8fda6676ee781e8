"""The chat protocol's frames: close codes, the frame schemas, and parsing a frame."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import orjson

from core.parsers import json_has_nul

MAX_FRAME_BYTES = 16 * 1024

CLOSE_PROTOCOL = 4000
CLOSE_HELLO = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_TOO_LARGE = 4009
CLOSE_UNAVAILABLE = 1011


MAX_RESUME = 50


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, close_code: int):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


# Frame schemas: field -> (accepted types, required). Wrong types are protocol errors (4000);
# bad values (an empty body) are application errors that do not close the socket.
Schema = dict[str, tuple[tuple[type, ...], bool]]
STR = (str,)
INT = (int,)
BOOL = (bool,)
OPT_INT = (int, type(None))
OPT_STR = (str, type(None))

SHOPPER_FRAMES: dict[str, Schema] = {
    "hello": {
        "write_key": (STR, True),
        "token": (OPT_STR, False),
        "anonymous_id": (OPT_STR, False),
        "customer_id": (OPT_STR, False),
        "customer_hash": (OPT_STR, False),
        "conversation_id": (OPT_INT, False),
        "last_seq": (OPT_INT, False),
        "locale": (OPT_STR, False),
        "page": ((dict, type(None)), False),
    },
    "message.send": {"client_id": (STR, True), "body": (STR, True)},
    "typing": {"active": (BOOL, True)},
    "read": {"seq": (INT, True)},
    "handoff.request": {},
    "page.view": {"url": (STR, True), "title": (OPT_STR, False)},
    "csat.submit": {"rating": (INT, True), "comment": (OPT_STR, False)},
    "transcript.request": {"email": (OPT_STR, False)},
    "offline.submit": {"email": (STR, True), "body": (STR, True), "client_id": (OPT_STR, False)},
    "ping": {},
}

AGENT_FRAMES: dict[str, Schema] = {
    "inbox.query": {
        "view": (STR, True),
        "state": (OPT_STR, False),
        "q": (OPT_STR, False),
        "limit": (OPT_INT, False),
        "label": (OPT_STR, False),
    },
    "conversation.open": {"conversation_id": (INT, True), "last_seq": (OPT_INT, False)},
    "conversation.leave": {"conversation_id": (INT, True)},
    "message.send": {
        "conversation_id": (INT, True),
        "client_id": (STR, True),
        "body": (STR, True),
        "internal": (BOOL, False),
    },
    "typing": {"conversation_id": (INT, True), "active": (BOOL, True)},
    "read": {"conversation_id": (INT, True), "seq": (INT, True)},
    "conversation.assign": {"conversation_id": (INT, True), "agent_id": (OPT_INT, False)},
    "conversation.transfer": {"conversation_id": (INT, True), "agent_id": (INT, True)},
    "conversation.resolve": {"conversation_id": (INT, True)},
    "transcript.send": {"conversation_id": (INT, True), "email": (OPT_STR, False)},
    "conversation.label.add": {"conversation_id": (INT, True), "label": (STR, True)},
    "conversation.label.remove": {"conversation_id": (INT, True), "label": (STR, True)},
    "conversation.snooze": {"conversation_id": (INT, True), "until": (OPT_STR, False)},
    "conversation.unsnooze": {"conversation_id": (INT, True)},
    "presence.set": {"status": (STR, True)},
    "canned.list": {},
    "ping": {},
}


def parse_frame(
    text: str | None, binary: bytes | None, frames: dict[str, Schema]
) -> dict[str, Any]:
    """Decode and check one client frame, or raise ``ProtocolError``."""
    if binary is not None:
        raise ProtocolError("protocol_error", "Binary frames are not accepted.", CLOSE_PROTOCOL)
    raw = (text or "").encode()
    if len(raw) > MAX_FRAME_BYTES:
        raise ProtocolError(
            "frame_too_large", f"Frames are limited to {MAX_FRAME_BYTES} bytes.", CLOSE_TOO_LARGE
        )
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("protocol_error", "Frames must be JSON.", CLOSE_PROTOCOL) from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError(
            "protocol_error", "A frame is a JSON object with a string type.", CLOSE_PROTOCOL
        )
    schema = frames.get(frame["type"])
    if schema is None:
        raise ProtocolError(
            "protocol_error", f"Unknown frame type {frame['type']!r}.", CLOSE_PROTOCOL
        )
    for field, (types, required) in schema.items():
        if field not in frame:
            if required:
                raise ProtocolError(
                    "protocol_error", f"{frame['type']} needs {field}.", CLOSE_PROTOCOL
                )
            continue
        value = frame[field]
        # bool is an int subclass: refuse true where a number is expected.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ProtocolError(
                "protocol_error", f"{frame['type']}.{field} has the wrong type.", CLOSE_PROTOCOL
            )
    ref = frame.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
        raise ProtocolError(
            "protocol_error", "ref must be a string of at most 64 chars.", CLOSE_PROTOCOL
        )
    for field in MAX_FIELD_CHARS.keys() & frame.keys():
        value = frame[field]
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS[field]:
            raise ProtocolError(
                "field_too_long",
                f"{frame['type']}.{field} is limited to {MAX_FIELD_CHARS[field]} characters.",
                CLOSE_PROTOCOL,
            )
    # PostgreSQL stores no NUL character in text: refused here, not a dropped socket later.
    if json_has_nul(raw, frame):
        raise ProtocolError(
            "invalid_character", "NUL characters (\\u0000) are not accepted.", CLOSE_PROTOCOL
        )
    return frame


# Identifiers a frame carries, at most the length of the columns and keys they end up in.
MAX_FIELD_CHARS: dict[str, int] = {
    "write_key": 64,
    "token": 2048,
    "anonymous_id": 255,
    "customer_id": 255,
    "customer_hash": 128,
    "client_id": 64,
    "locale": 64,
}


def parse_resume(query_string: bytes) -> list[tuple[int, int]]:
    """The console socket's ``?resume=42:17,43:5`` (conversation id ``:`` last seq seen, at
    most ``MAX_RESUME`` pairs), in the order given; no ``resume``: none. Raises
    ``ProtocolError`` for anything else."""
    values = parse_qs(query_string.decode("latin-1")).get("resume", [])
    if not values:
        return []
    pairs: list[tuple[int, int]] = []
    for item in ",".join(values).split(","):
        cid, sep, seq = item.partition(":")
        if not (sep and cid.isdigit() and seq.isdigit() and len(cid) < 19 and len(seq) < 19):
            raise ProtocolError(
                "protocol_error", "resume must be conversation_id:last_seq pairs.", CLOSE_PROTOCOL
            )
        pairs.append((int(cid), int(seq)))
    if len(pairs) > MAX_RESUME:
        raise ProtocolError(
            "protocol_error", f"resume takes at most {MAX_RESUME} conversations.", CLOSE_PROTOCOL
        )
    return pairs
