"""Validating tracking calls: fields, timestamps, identity proofs; invalid calls set aside by index."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings

from commerce import selectors
from commerce.models import WriteKey
from commerce.tracking.decoding import CALL_TYPES, MAX_ID_LENGTH, MAX_NAME_LENGTH, Call
from core.exceptions import ApplicationError, PayloadTooLarge, PermissionDenied, ValidationError

# --- Validation --------------------------------------------------------------------------


class _Invalid(Exception):
    """A problem with one call; turned into a ValidationError naming the call's index."""

    def __init__(self, message: str, code: str = "invalid_event") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _identifier(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if value is None or isinstance(value, bool):
        if value is not None:
            raise _Invalid(f"{key} must be a string", "invalid_identity")
        return ""
    if isinstance(value, float) and value.is_integer():
        # 17850.0 (a spreadsheet's or a JavaScript number) is customer 17850.
        value = str(int(value))
    elif isinstance(value, (int, float)):
        value = str(value)
    elif not isinstance(value, str):
        raise _Invalid(f"{key} must be a string", "invalid_identity")
    value = value.strip()
    if len(value) > MAX_ID_LENGTH:
        raise _Invalid(f"{key} is longer than {MAX_ID_LENGTH} characters", "invalid_identity")
    return value


def _object(message: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = message.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Invalid(f"{key} must be a JSON object", "invalid_field")
    return value


def _text(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"{key} must be a string", "invalid_field")
    if len(value) > MAX_NAME_LENGTH:
        raise _Invalid(f"{key} is longer than {MAX_NAME_LENGTH} characters", "invalid_field")
    return value


def _date(value: Any, key: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{key} must be an ISO-8601 date string", "invalid_timestamp")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(
            f"{key} is not an ISO-8601 date: {value[:40]!r}", "invalid_timestamp"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    try:
        # In UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts.
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise _Invalid(f"{key} is out of range: {value[:40]!r}", "invalid_timestamp") from None


def _call_timestamp(
    message: Mapping[str, Any], batch_sent_at: dt.datetime | None, received_at: dt.datetime
) -> dt.datetime:
    """When the call happened, corrected for the client's clock like Segment does.

    With ``sentAt``: ``receivedAt - (sentAt - originalTimestamp)``, where the client's own time
    of the call is ``originalTimestamp`` or else ``timestamp``. Without it, the client's time
    as given; without any, the time it was received. Never later than ``received_at``: nothing
    can have happened after Patron received it, and a device whose clock runs a year ahead
    would otherwise put its events at the top of every "latest first" list for a year.
    """
    original = _date(message.get("originalTimestamp"), "originalTimestamp")
    stated = _date(message.get("timestamp"), "timestamp")
    sent_at = _date(message.get("sentAt"), "sentAt") or batch_sent_at
    happened = original or stated
    if happened is None:
        return received_at
    if sent_at is not None:
        try:
            happened = received_at - (sent_at - happened)
        except OverflowError:
            raise _Invalid("timestamp and sentAt are too far apart", "invalid_timestamp") from None
    return min(happened, received_at)


def _call_from_message(
    message: Any,
    call_type: str | None,
    batch_context: dict[str, Any],
    batch_sent_at: dt.datetime | None,
    received_at: dt.datetime,
) -> Call:
    if not isinstance(message, dict):
        raise _Invalid("each call must be a JSON object")
    if call_type is None:
        call_type = message.get("type")
        if not isinstance(call_type, str) or call_type not in CALL_TYPES:
            raise _Invalid(
                f"type must be one of {', '.join(sorted(CALL_TYPES))}, got {call_type!r}",
                "invalid_type",
            )
    user_id = _identifier(message, "userId")
    anonymous_id = _identifier(message, "anonymousId")
    context = _object(message, "context")
    if batch_context:
        context = {**batch_context, **context}
    previous_id = ""
    name = ""
    if call_type == "track":
        properties = _object(message, "properties")
        name = _text(message, "event")
        if not name:
            raise _Invalid("event (the name of the tracked action) is required", "missing_event")
    elif call_type in ("page", "screen"):
        properties = _object(message, "properties")
        name = _text(message, "name")
    elif call_type == "identify":
        # Traits may arrive in context.traits (analytics.js) as well as top-level traits.
        context_traits = context.get("traits")
        properties = _object(message, "traits")
        if isinstance(context_traits, dict) and context_traits:
            properties = {**context_traits, **properties}
    elif call_type == "group":
        properties = _object(message, "traits")
        name = _identifier(message, "groupId")
        if not name:
            raise _Invalid("groupId is required", "missing_group")
    else:  # alias
        properties = _object(message, "properties")
        previous_id = _identifier(message, "previousId")
        if not previous_id or not user_id:
            raise _Invalid("alias needs both previousId and userId", "missing_identity")
        properties = {**properties, "previousId": previous_id}
    if not user_id and not anonymous_id:
        raise _Invalid("either userId or anonymousId is required", "missing_identity")
    message_id = _identifier(message, "messageId") or str(uuid.uuid4())
    user_hash, context, properties = _proof_take(call_type, context, properties)
    return Call(
        type=call_type,
        message_id=message_id,
        name=name,
        user_id=user_id,
        anonymous_id=anonymous_id,
        properties=properties,
        context=context,
        timestamp=_call_timestamp(message, batch_sent_at, received_at),
        previous_id=previous_id,
        user_hash=user_hash,
    )


# Where a browser's proof of its userId may travel (docs/identity.md): analytics.js lets a page
# set ``context`` on every call (a source middleware, or the options argument) and sends traits
# with identify, so both are read, in this order. The proof is never stored.
PROOF_CONTEXT_KEYS = ("userHash", "user_hash")
PROOF_TRAIT_KEYS = ("user_hash", "userHash")


def _proof_take(
    call_type: str, context: dict[str, Any], properties: dict[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The call's proof of its userId, and its context and properties without it."""
    proof = ""
    context_traits = context.get("traits")
    if any(k in context for k in PROOF_CONTEXT_KEYS) or (
        isinstance(context_traits, dict) and any(k in context_traits for k in PROOF_TRAIT_KEYS)
    ):
        context = dict(context)
        for key in PROOF_CONTEXT_KEYS:
            value = context.pop(key, None)
            if isinstance(value, str) and value and not proof:
                proof = value
        if isinstance(context_traits, dict):
            context_traits = dict(context_traits)
            for key in PROOF_TRAIT_KEYS:
                value = context_traits.pop(key, None)
                if isinstance(value, str) and value and not proof:
                    proof = value
            context["traits"] = context_traits
    if call_type == "identify" and any(k in properties for k in PROOF_TRAIT_KEYS):
        properties = dict(properties)
        for key in PROOF_TRAIT_KEYS:
            value = properties.pop(key, None)
            if isinstance(value, str) and value and not proof:
                proof = value
    return proof[:MAX_ID_LENGTH], context, properties


def calls_verify(*, source: WriteKey, calls: Sequence[Call]) -> None:
    """Apply the verified-identity rule to calls sent with a browser (public) write key.

    A ``userId`` from a browser counts only with its proof (``hex(HMAC-SHA256(identity secret,
    userId))``, see ``selectors.identity_verified``); a proof on any call of the request
    verifies that userId for the whole request. Calls whose userId is not verified lose it
    (and an alias call its ``previousId``): they are recorded on the anonymous shopper only,
    so nothing is merged into a known customer and no known customer's profile changes.
    A call with an unverified userId and no anonymousId has no anonymous shopper to land on:
    the request is refused (403 ``identity_unverified``) and nothing is stored.

    Server-side keys are trusted: their calls are left as they are. One HMAC per distinct
    userId and at most one query (the store's secret, cached) per request.
    """
    if source.server_side:
        return
    claimed = {c.user_id for c in calls if c.user_id}
    if not claimed:
        return
    proofs: dict[str, set[str]] = {}
    for call in calls:
        if call.user_id and call.user_hash:
            proofs.setdefault(call.user_id, set()).add(call.user_hash)
    secret = selectors.identity_secret_get() if proofs else ""
    verified = {
        user_id
        for user_id, candidates in proofs.items()
        if any(
            selectors.identity_verified(customer_id=user_id, proof=proof, secret=secret)
            for proof in candidates
        )
    }
    for index, call in enumerate(calls):
        if call.user_id and call.user_id not in verified and not call.anonymous_id:
            raise PermissionDenied(
                f"calls[{index}]: a userId sent with a browser write key needs its proof "
                "(context.userHash) or an anonymousId",
                code="identity_unverified",
                extra={"index": index},
            )
    for call in calls:
        if call.user_id and call.user_id not in verified:
            call.user_id = ""
            call.previous_id = ""


@dataclass(frozen=True)
class CallError:
    """Why the call at ``index`` of a batch was not stored (``status``: 400 or 413)."""

    index: int
    code: str
    message: str
    status: int = 400

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": self.message}


def calls_validate(
    *,
    payload: Any,
    call_type: str | None,
    received_at: dt.datetime,
    body_bytes: int = 0,
) -> tuple[list[Call], list[CallError]]:
    """Validate a decoded request into calls, setting invalid calls of a batch aside.

    ``call_type`` is the endpoint's type (``"track"`` for ``/v1/track``) or None for
    ``/v1/batch``, whose body is ``{"batch": [...], "context": {...}, "sentAt": ...}``.
    ``body_bytes`` (the decoded body's size) lets the per-call size check skip batches too
    small to hold an oversized call.

    Returns the valid calls and, for a batch, one ``CallError`` per invalid call, by index in
    ``batch`` (Segment's clients never retry a 400, so refusing the whole batch for one bad call
    would lose the good ones for good). Raises ``ValidationError`` (400) or ``PayloadTooLarge``
    (413) when the request as a whole is wrong, when the one call of a single-call endpoint is
    invalid, and when no call of a batch is valid (then ``detail.errors`` lists every one).
    """
    max_event = settings.PATRON_TRACK_MAX_EVENT_BYTES
    if not isinstance(payload, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body")
    if call_type is not None:
        if body_bytes > max_event:
            raise PayloadTooLarge(
                f"a call may not exceed {max_event} bytes", code="event_too_large"
            )
        try:
            return [_call_from_message(payload, call_type, {}, None, received_at)], []
        except _Invalid as exc:
            raise ValidationError(exc.message, code=exc.code) from None

    batch = payload.get("batch")
    if not isinstance(batch, list):
        raise ValidationError("batch must be a list of calls", code="invalid_batch")
    if not batch:
        raise ValidationError("batch is empty", code="invalid_batch")
    try:
        batch_context = _object(payload, "context")
        batch_sent_at = _date(payload.get("sentAt"), "sentAt")
    except _Invalid as exc:
        raise ValidationError(exc.message, code=exc.code) from None
    check_size = body_bytes > max_event
    calls: list[Call] = []
    errors: list[CallError] = []
    for index, message in enumerate(batch):
        if check_size and len(orjson.dumps(message)) > max_event:
            errors.append(
                CallError(
                    index,
                    "event_too_large",
                    f"batch[{index}]: a call may not exceed {max_event} bytes",
                    status=PayloadTooLarge.status,
                )
            )
            continue
        try:
            calls.append(
                _call_from_message(message, None, batch_context, batch_sent_at, received_at)
            )
        except _Invalid as exc:
            errors.append(CallError(index, exc.code, f"batch[{index}]: {exc.message}"))
    if not calls:
        first = errors[0]
        error_class: type[ApplicationError] = (
            PayloadTooLarge if first.status == PayloadTooLarge.status else ValidationError
        )
        raise error_class(
            first.message,
            code=first.code,
            extra={"index": first.index, "errors": [e.as_dict() for e in errors]},
        )
    return calls, errors
