"""Ingestion of Segment-compatible tracking calls: decode, validate, resolve shoppers, store.

The path a batch takes is built for throughput: one ``orjson`` parse, one pass of plain-Python
validation that either accepts every call or rejects the whole request (nothing is stored from
a rejected request), identity resolution with a constant number of queries per batch, and one
``COPY`` of the new rows straight into ``commerce_event``. A replayed ``messageId`` makes the
``COPY`` fail on the unique constraint; the batch is then stored with
``INSERT ... ON CONFLICT DO NOTHING`` instead, so duplicates are accepted and stored once.
The ids of new events go to the ``events_process`` task after commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from commerce import selectors, services, tasks
from commerce.models import Event, Shopper, ShopperAlias, WriteKey
from core.exceptions import (
    AuthenticationFailed,
    PayloadTooLarge,
    PermissionDenied,
    ValidationError,
)
from core.transactions import apply_async_on_commit

MAX_ID_LENGTH = 255
MAX_NAME_LENGTH = 255
CALL_TYPES = frozenset(Event.Type.values)
_DEADLOCK_RETRIES = 3


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
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    if b"\\u0000" in body and _contains_nul(payload):
        # PostgreSQL stores neither text nor jsonb with NUL characters.
        raise ValidationError("NUL characters (\\u0000) are not accepted", code="invalid_character")
    return payload, len(body)


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def write_key_authenticate(key: str | None) -> WriteKey:
    """The active write key with this value, or AuthenticationFailed (401)."""
    if not key:
        raise AuthenticationFailed(
            "a write key is required as the HTTP Basic username", code="missing_write_key"
        )
    source = selectors.write_key_active(key=key)
    if source is None:
        raise AuthenticationFailed("unknown or inactive write key", code="invalid_write_key")
    return source


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
    if isinstance(value, (int, float)):
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
    as given; without any, the time it was received.
    """
    original = _date(message.get("originalTimestamp"), "originalTimestamp")
    stated = _date(message.get("timestamp"), "timestamp")
    sent_at = _date(message.get("sentAt"), "sentAt") or batch_sent_at
    happened = original or stated
    if happened is None:
        return received_at
    if sent_at is None:
        return happened
    try:
        return received_at - (sent_at - happened)
    except OverflowError:
        raise _Invalid("timestamp and sentAt are too far apart", "invalid_timestamp") from None


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


def calls_normalise(
    *,
    payload: Any,
    call_type: str | None,
    received_at: dt.datetime,
    body_bytes: int = 0,
) -> list[Call]:
    """Validate a decoded request into calls; any invalid call rejects the whole request.

    ``call_type`` is the endpoint's type (``"track"`` for ``/v1/track``) or None for
    ``/v1/batch``, whose body is ``{"batch": [...], "context": {...}, "sentAt": ...}``.
    ``body_bytes`` (the decoded body's size) lets the per-call size check skip batches too
    small to hold an oversized call.
    """
    max_event = settings.PATRON_TRACK_MAX_EVENT_BYTES
    if not isinstance(payload, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body")
    if call_type is not None:
        messages: list[Any] = [payload]
        batch_context: dict[str, Any] = {}
        batch_sent_at = None
        if body_bytes > max_event:
            raise PayloadTooLarge(
                f"a call may not exceed {max_event} bytes", code="event_too_large"
            )
    else:
        batch = payload.get("batch")
        if not isinstance(batch, list):
            raise ValidationError("batch must be a list of calls", code="invalid_batch")
        if not batch:
            raise ValidationError("batch is empty", code="invalid_batch")
        messages = batch
        try:
            batch_context = _object(payload, "context")
            batch_sent_at = _date(payload.get("sentAt"), "sentAt")
        except _Invalid as exc:
            raise ValidationError(exc.message, code=exc.code) from None
        if body_bytes > max_event:
            for index, message in enumerate(messages):
                if len(orjson.dumps(message)) > max_event:
                    raise PayloadTooLarge(
                        f"batch[{index}]: a call may not exceed {max_event} bytes",
                        code="event_too_large",
                        extra={"index": index},
                    )
    calls = []
    for index, message in enumerate(messages):
        try:
            calls.append(
                _call_from_message(message, call_type, batch_context, batch_sent_at, received_at)
            )
        except _Invalid as exc:
            if call_type is not None:
                raise ValidationError(exc.message, code=exc.code) from None
            raise ValidationError(
                f"batch[{index}]: {exc.message}", code=exc.code, extra={"index": index}
            ) from None
    return calls


# --- Identity resolution -----------------------------------------------------------------


def _follow_merges(shoppers: dict[int, tuple[int | None, str | None]]) -> dict[int, int]:
    """Map each shopper id to its surviving shopper, loading merge targets as needed.

    ``shoppers`` maps id -> (merged_into_id, customer_id) and is extended in place.
    """
    pending = {m for m, _ in shoppers.values() if m is not None and m not in shoppers}
    while pending:
        for pk, merged_into, customer_id in Shopper.objects.filter(pk__in=pending).values_list(
            "pk", "merged_into_id", "customer_id"
        ):
            shoppers[pk] = (merged_into, customer_id)
        pending = {m for m, _ in shoppers.values() if m is not None and m not in shoppers}
    survivors: dict[int, int] = {}
    for pk in shoppers:
        current, seen = pk, set()
        while (
            target := shoppers.get(current, (None, None))[0]
        ) is not None and current not in seen:
            seen.add(current)
            current = target
        survivors[pk] = current
    return survivors


def _rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows


_SHOPPER = Shopper._meta.db_table
_ALIAS = ShopperAlias._meta.db_table


class _Identities:
    """Who is behind each user id and anonymous id of one batch (shopper ids)."""

    def __init__(self, user_ids: set[str], anonymous_ids: set[str]) -> None:
        shoppers: dict[int, tuple[int | None, str | None]] = {}
        # One index probe per anonymous id (LATERAL ... LIMIT 1 keeps the planner from
        # turning this into sequential scans of both tables joined by hash, which it prefers
        # for a 500-element ``= ANY`` and which grows with the shop: 4.7 ms against 2.0 ms for
        # 500 ids among 20,000 shoppers, the first cost of ingestion inside PostgreSQL).
        alias_rows = (
            _rows(
                "SELECT x.anonymous_id, s.id, s.merged_into_id, s.customer_id "  # noqa: S608  (table names are module constants; values are parameters)
                "FROM unnest(%s::text[]) AS x(anonymous_id) CROSS JOIN LATERAL ("
                f"SELECT a.shopper_id FROM {_ALIAS} a "
                "WHERE a.anonymous_id = x.anonymous_id LIMIT 1) AS a "
                f"JOIN {_SHOPPER} s ON s.id = a.shopper_id",
                [list(anonymous_ids)],
            )
            if anonymous_ids
            else []
        )
        customer_rows = (
            _rows(
                f"SELECT customer_id, id, merged_into_id FROM {_SHOPPER} "  # noqa: S608  (table names are module constants; values are parameters)
                "WHERE customer_id = ANY(%s)",
                [list(user_ids)],
            )
            if user_ids
            else []
        )
        for _, pk, merged_into, customer_id in alias_rows:
            shoppers[pk] = (merged_into, customer_id)
        for customer_id, pk, merged_into in customer_rows:
            shoppers[pk] = (merged_into, customer_id)
        survivors = _follow_merges(shoppers) if shoppers else {}
        self.by_anonymous: dict[str, int] = {row[0]: survivors[row[1]] for row in alias_rows}
        self.by_user: dict[str, int] = {row[0]: survivors[row[1]] for row in customer_rows}
        # The shopper each alias row points at (before following merges), and which shoppers
        # are known customers: an untrusted (browser) call must not land on those.
        self.alias_rows: dict[str, int] = {row[0]: row[1] for row in alias_rows}
        self.customers: set[int] = {pk for pk, (_, customer_id) in shoppers.items() if customer_id}

    def replace(self, old: int, new: int) -> None:
        for mapping in (self.by_user, self.by_anonymous):
            for key, value in mapping.items():
                if value == old:
                    mapping[key] = new


def _shoppers_insert(customer_ids: Sequence[str | None]) -> list[tuple[int, str | None]]:
    """INSERT blank shoppers (one per customer id, None for anonymous) in one statement.

    Returns (id, customer_id) of the rows inserted; a customer id that another request
    inserted first is skipped. Column defaults come from the model, so a new field with a
    default needs no change here.
    """
    blank = Shopper()
    columns, values = [], []
    for model_field in Shopper._meta.concrete_fields:
        if model_field.primary_key or model_field.name == "customer_id":
            continue
        column = model_field.column
        assert column is not None  # concrete fields always have a column
        columns.append(connection.ops.quote_name(column))
        values.append(
            model_field.get_db_prep_save(model_field.pre_save(blank, add=True), connection)
        )
    placeholders = ", ".join(["%s"] * len(values))
    return [
        (row[0], row[1])
        for row in _rows(
            f"INSERT INTO {_SHOPPER} (customer_id, {', '.join(columns)}) "  # noqa: S608  (table names are module constants; values are parameters)
            f"SELECT c, {placeholders} FROM unnest(%s::text[]) WITH ORDINALITY AS x(c, n) "
            "ORDER BY n ON CONFLICT DO NOTHING RETURNING id, customer_id",
            [*values, list(customer_ids)],
        )
    ]


def _customers_create(customer_ids: Sequence[str]) -> dict[str, int]:
    """Shoppers for new customer ids (sorted, so concurrent batches lock in one order)."""
    created = {c: pk for pk, c in _shoppers_insert(sorted(customer_ids)) if c is not None}
    missing = [c for c in customer_ids if c not in created]
    if missing:  # inserted by a concurrent request, which has committed by now
        shoppers: dict[int, tuple[int | None, str | None]] = {
            pk: (merged_into, c)
            for c, pk, merged_into in _rows(
                f"SELECT customer_id, id, merged_into_id FROM {_SHOPPER} "  # noqa: S608  (table names are module constants; values are parameters)
                "WHERE customer_id = ANY(%s)",
                [missing],
            )
        }
        survivors = _follow_merges(dict(shoppers))
        created.update({c: survivors[pk] for pk, (_, c) in shoppers.items() if c is not None})
    return created


def _aliases_create(links: Mapping[str, int | None]) -> dict[str, int]:
    """Aliases for new anonymous ids: to the given shopper, or to a new anonymous shopper (None).

    Returns anonymous id -> the shopper that owns it now; when another request created the
    same alias first, its owner wins and the shopper made here is deleted again.
    """
    needing_shopper = sorted(a for a, owner in links.items() if owner is None)
    new_ids = [pk for pk, _ in _shoppers_insert([None] * len(needing_shopper))]
    owners: dict[str, int] = {a: owner for a, owner in links.items() if owner is not None}
    owners.update(zip(needing_shopper, new_ids, strict=True))
    ordered = sorted(owners)
    inserted = {
        row[0]
        for row in _rows(
            f"INSERT INTO {_ALIAS} (anonymous_id, shopper_id, created_at) "  # noqa: S608  (table names are module constants; values are parameters)
            "SELECT a, s, now() FROM unnest(%s::text[], %s::bigint[]) AS x(a, s) "
            "ON CONFLICT (anonymous_id) DO NOTHING RETURNING anonymous_id",
            [ordered, [owners[a] for a in ordered]],
        )
    }
    lost = [a for a in ordered if a not in inserted]
    if not lost:
        return owners
    # Another request created these aliases first: its owners win.
    fresh = set(needing_shopper)
    orphans = [owners[a] for a in lost if a in fresh]
    if orphans:
        with connection.cursor() as cursor:
            # Created in this transaction and referenced by nothing: no cascade to collect.
            cursor.execute(f"DELETE FROM {_SHOPPER} WHERE id = ANY(%s)", [orphans])  # noqa: S608  (table names are module constants; values are parameters)
    rows = _rows(
        f"SELECT a.anonymous_id, s.id, s.merged_into_id, s.customer_id FROM {_ALIAS} a "  # noqa: S608  (table names are module constants; values are parameters)
        f"JOIN {_SHOPPER} s ON s.id = a.shopper_id WHERE a.anonymous_id = ANY(%s)",
        [lost],
    )
    shoppers: dict[int, tuple[int | None, str | None]] = {r[1]: (r[2], r[3]) for r in rows}
    survivors = _follow_merges(shoppers)
    owners.update({r[0]: survivors[r[1]] for r in rows})
    return owners


def _aliases_detach(identities: _Identities, anonymous_ids: Sequence[str]) -> None:
    """Move these anonymous ids off the known customers they belong to, to new anonymous
    shoppers (one each, in one INSERT and one UPDATE), as ``services.shopper_anonymous_resolve``
    does for one id: an anonymous id alone never carries a customer's identity.

    The UPDATE only moves an alias still pointing where it pointed when read; an alias another
    request changed meanwhile is read again and, if it still names a known customer, moved
    unconditionally.
    """
    ordered = sorted(anonymous_ids)
    fresh = [pk for pk, _ in _shoppers_insert([None] * len(ordered))]
    target = dict(zip(ordered, fresh, strict=True))
    moved = {
        row[0]
        for row in _rows(
            f"UPDATE {_ALIAS} AS a SET shopper_id = x.s "  # noqa: S608 (constant names)
            "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS x(a, s, old) "
            "WHERE a.anonymous_id = x.a AND a.shopper_id = x.old RETURNING a.anonymous_id",
            [ordered, fresh, [identities.alias_rows[a] for a in ordered]],
        )
    }
    lost = [a for a in ordered if a not in moved]
    if lost:
        rows = _rows(
            f"SELECT a.anonymous_id, s.id, s.merged_into_id, s.customer_id FROM {_ALIAS} a "  # noqa: S608
            f"JOIN {_SHOPPER} s ON s.id = a.shopper_id WHERE a.anonymous_id = ANY(%s)",
            [lost],
        )
        shoppers: dict[int, tuple[int | None, str | None]] = {r[1]: (r[2], r[3]) for r in rows}
        survivors = _follow_merges(shoppers)
        force = []
        for anonymous_id, pk, _, _ in rows:
            survivor = survivors[pk]
            if shoppers[survivor][1]:
                force.append(anonymous_id)
            else:  # another request detached it first: its anonymous shopper wins
                target[anonymous_id] = survivor
        if force:
            _rows(
                f"UPDATE {_ALIAS} AS a SET shopper_id = x.s "  # noqa: S608
                "FROM unnest(%s::text[], %s::bigint[]) AS x(a, s) "
                "WHERE a.anonymous_id = x.a RETURNING a.anonymous_id",
                [force, [target[a] for a in force]],
            )
        unused = [fresh[i] for i, a in enumerate(ordered) if target[a] != fresh[i]]
        if unused:
            with connection.cursor() as cursor:
                # Created in this transaction and referenced by nothing.
                cursor.execute(f"DELETE FROM {_SHOPPER} WHERE id = ANY(%s)", [unused])  # noqa: S608
    identities.by_anonymous.update(target)


def _shoppers_assign(calls: Sequence[Call], *, trusted: bool = True) -> None:
    """Set ``shopper_id`` on every call, creating and merging shoppers as the calls say.

    A constant number of queries per batch when every identity is known: one for the aliases,
    one for the customers. New identities are created in bulk. When a call ties an anonymous
    id owned by another shopper to a user id (a login, an alias call), the per-shopper merge of
    ``services.shopper_resolve`` runs for that pair.

    ``trusted`` is False for browser write keys, whose calls ``calls_verify`` has already
    stripped of unverified user ids. Then an anonymous id that belongs to a known customer and
    is not tied to that (verified) customer in this request is moved to a new anonymous
    shopper (``_aliases_detach``: the next person on the browser after a logout), and an alias
    call never merges two known customers.
    """
    user_ids = {c.user_id for c in calls if c.user_id}
    anonymous_ids = {c.anonymous_id for c in calls if c.anonymous_id}
    previous_ids = {c.previous_id for c in calls if c.previous_id}
    identities = _Identities(user_ids | previous_ids, anonymous_ids | previous_ids)

    if not trusted:
        if previous_ids & set(identities.by_user):
            # alias(previousId=<another customer>) from a browser: never merge two customers.
            for call in calls:
                if call.previous_id in identities.by_user:
                    call.previous_id = ""
        vouched = {c.anonymous_id for c in calls if c.user_id and c.anonymous_id}
        vouched |= {c.previous_id for c in calls if c.previous_id}
        known = sorted(
            a
            for a, owner in identities.by_anonymous.items()
            if owner in identities.customers and a not in vouched and a in anonymous_ids
        )
        if known:
            _aliases_detach(identities, known)

    missing_users = [u for u in user_ids if u not in identities.by_user]
    if missing_users:
        identities.by_user.update(_customers_create(missing_users))

    # A new anonymous id seen with a user id belongs to that user's shopper from the start.
    pairs: list[tuple[str, str, bool]] = []  # (user id, anonymous id, from an alias call)
    for call in calls:
        if call.user_id and call.anonymous_id:
            pairs.append((call.user_id, call.anonymous_id, False))
        if call.previous_id:
            pairs.append((call.user_id, call.previous_id, True))
    new_links: dict[str, int | None] = {}
    for user_id, anonymous_id, from_alias in pairs:
        if (
            anonymous_id not in identities.by_anonymous
            and anonymous_id not in new_links
            and not (from_alias and anonymous_id in identities.by_user)
        ):
            new_links[anonymous_id] = identities.by_user[user_id]
    for anonymous_id in anonymous_ids:
        if anonymous_id not in identities.by_anonymous and anonymous_id not in new_links:
            new_links[anonymous_id] = None
    if new_links:
        identities.by_anonymous.update(_aliases_create(new_links))

    for user_id, anonymous_id, from_alias in pairs:
        target = identities.by_user[user_id]
        if (
            from_alias
            and anonymous_id in identities.by_user
            and anonymous_id not in identities.by_anonymous
        ):
            # alias(previousId=<an earlier user id>, userId=<the new one>): one person.
            source = identities.by_user[anonymous_id]
            if source != target:
                merged = services.shopper_merge(
                    source=Shopper.objects.get(pk=source), target=Shopper.objects.get(pk=target)
                )
                identities.replace(source, merged.pk)
            continue
        owner = identities.by_anonymous[anonymous_id]
        if owner == target:
            continue
        # Merges an anonymous owner into the user's shopper; moves a known customer's device.
        shopper = services.shopper_resolve(customer_id=user_id, anonymous_id=anonymous_id)
        if Shopper.objects.filter(pk=owner, merged_into__isnull=False).exists():
            identities.replace(owner, shopper.pk)
        identities.by_anonymous[anonymous_id] = shopper.pk
        identities.by_user[user_id] = shopper.pk

    for call in calls:
        call.shopper_id = (
            identities.by_user[call.user_id]
            if call.user_id
            else identities.by_anonymous[call.anonymous_id]
        )


# --- Storage -----------------------------------------------------------------------------

_COLUMNS = (
    "id, source_id, message_id, type, name, shopper_id, anonymous_id, user_id, "
    "properties, context, timestamp, received_at"
)


def _copy_rows(
    ids: Iterable[int], source_id: int, calls: Sequence[Call], received_at: dt.datetime
) -> Iterator[tuple[Any, ...]]:
    """The event rows for COPY, in ``_COLUMNS`` order (psycopg's ``write_row`` escapes them)."""
    for pk, call in zip(ids, calls, strict=True):
        yield (
            pk,
            source_id,
            call.message_id,
            call.type,
            call.name,
            call.shopper_id,
            call.anonymous_id,
            call.user_id,
            orjson.dumps(call.properties).decode(),
            orjson.dumps(call.context).decode(),
            call.timestamp,
            received_at,
        )


_sequence_name: str | None = None


def _event_ids_allocate(count: int) -> list[int]:
    global _sequence_name
    with connection.cursor() as cursor:
        if _sequence_name is None:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Event._meta.db_table])
            _sequence_name = cursor.fetchone()[0]
        cursor.execute("SELECT nextval(%s) FROM generate_series(1, %s)", [_sequence_name, count])
        return [row[0] for row in cursor.fetchall()]


def _events_copy(source_id: int, calls: Sequence[Call], received_at: dt.datetime) -> list[int]:
    """COPY the calls into the event table; raises IntegrityError if one is stored already."""
    ids = _event_ids_allocate(len(calls))
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.copy(f"COPY {Event._meta.db_table} ({_COLUMNS}) FROM STDIN") as copy,
    ):
        for row in _copy_rows(ids, source_id, calls, received_at):
            copy.write_row(row)
    return ids


def _events_insert_new(
    source_id: int, calls: Sequence[Call], received_at: dt.datetime
) -> list[int]:
    """INSERT the calls, skipping message ids already stored; returns the ids of new rows."""
    columns = _COLUMNS.removeprefix("id, ")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Event._meta.db_table} ({columns}) "  # noqa: S608 (constant names)
            "SELECT %s, m, t, n, s, a, u, p::jsonb, c::jsonb, ts, %s FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::timestamptz[]) AS x(m, t, n, s, a, u, p, c, ts) "
            "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING id",
            [
                source_id,
                received_at,
                [c.message_id for c in calls],
                [c.type for c in calls],
                [c.name for c in calls],
                [c.shopper_id for c in calls],
                [c.anonymous_id for c in calls],
                [c.user_id for c in calls],
                [orjson.dumps(c.properties).decode() for c in calls],
                [orjson.dumps(c.context).decode() for c in calls],
                [c.timestamp for c in calls],
            ],
        )
        return sorted(row[0] for row in cursor.fetchall())


def _ingest_once(source: WriteKey, calls: list[Call], received_at: dt.datetime) -> list[int]:
    with transaction.atomic():
        _shoppers_assign(calls, trusted=source.server_side)
        try:
            with transaction.atomic():
                ids = _events_copy(source.pk, calls, received_at)
        except IntegrityError:  # a replayed messageId: store the others, once
            ids = _events_insert_new(source.pk, calls, received_at)
        if ids:
            # A short argsrepr: Celery would otherwise format every id for its logs.
            apply_async_on_commit(tasks.events_process, args=[ids], argsrepr=f"[{len(ids)} ids]")
    return ids


def events_ingest(
    *, source: WriteKey, calls: Sequence[Call], received_at: dt.datetime | None = None
) -> IngestResult:
    """Store validated calls once per (source, messageId) and queue their processing.

    Runs in one transaction: shoppers created for new identities, merges and events commit
    together. Calls are stored in time order (then messageId), which also makes two requests
    carrying the same messages lock the same rows in the same order.
    """
    received_at = received_at or timezone.now()
    unique: dict[str, Call] = {}
    for call in calls:
        unique.setdefault(call.message_id, call)
    ordered = sorted(unique.values(), key=lambda c: (c.timestamp, c.message_id))
    calls_verify(source=source, calls=ordered)
    for attempt in range(_DEADLOCK_RETRIES):
        try:
            ids = _ingest_once(source, ordered, received_at)
            break
        except OperationalError as exc:
            if attempt == _DEADLOCK_RETRIES - 1 or not _is_retryable(exc):
                raise
    return IngestResult(received=len(calls), stored=len(ids), event_ids=ids)


def _is_retryable(exc: DatabaseError) -> bool:
    # 40P01 deadlock_detected, 40001 serialization_failure.
    return getattr(exc.__cause__, "pgcode", None) in {"40P01", "40001"}
