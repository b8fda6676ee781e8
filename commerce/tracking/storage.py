"""Storing a batch of calls: ``COPY`` into ``commerce_event``, the duplicate fallback, retries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from django.db import DatabaseError, IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from commerce import tasks
from commerce.models import Event, WriteKey
from commerce.tracking.decoding import Call, IngestResult
from commerce.tracking.identity import _shoppers_assign
from commerce.tracking.validation import calls_verify

_DEADLOCK_RETRIES = 3


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
            tasks.events_process.apply_async_on_commit(  # type: ignore[call-arg]  # celery-types' stub omits apply_async's **options, argsrepr among them
                args=(ids,), argsrepr=f"[{len(ids)} ids]"
            )
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
