"""Tracked events: processing them through the registered handlers, failures and retries."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar

from django.db import InterfaceError, OperationalError, models, transaction
from django.db.models import F
from django.utils import timezone

from commerce import registry
from commerce.models import Event, EventFailure, WriteKey

logger = logging.getLogger(__name__)


# --- Tracked events ----------------------------------------------------------------------


def event_shoppers_load(events: Sequence[Event]) -> None:
    """Load the shoppers of these events in one query (call in a handler that reads
    ``event.shopper``; ``events_process`` does not join them)."""
    models.prefetch_related_objects(list(events), "shopper")


def event_handler_key(event: Event) -> str:
    """The registry key an event is delivered under: its name for track, ``$type`` otherwise."""
    return event.name if event.type == Event.Type.TRACK else f"${event.type}"


# Errors that say nothing about the event: the database went away, a deadlock, a timeout.
# They roll the whole batch back and the task retries it; everything else is the event's own.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)

# The failures of the events in the batch being processed, noted by handlers that isolate each
# event themselves (``event_failure_note``) and by ``events_process``; None outside a batch.
_failures: ContextVar[dict[int, tuple[str, str]] | None] = ContextVar(
    "commerce_event_failures", default=None
)


def event_failure_note(*, event: Event, error: BaseException) -> None:
    """Record that ``event`` could not be processed (call from a handler, after its savepoint).

    Inside ``events_process`` the event is then recorded as failed (an ``EventFailure`` staff
    can see and retry) instead of processed; outside a batch this only logs. Transient errors
    must not be noted: re-raise them so the batch is retried.
    """
    reason = getattr(error, "message", None) or str(error) or repr(error)
    logger.warning("tracking event %s (%s %r) failed: %s", event.pk, event.type, event.name, reason)
    failures = _failures.get()
    if failures is not None:
        failures.setdefault(event.pk, (type(error).__name__, str(reason)[:2000]))


def _handlers_run(key: str, events: Sequence[Event], failures: dict[int, tuple[str, str]]) -> None:
    """Run one name's handlers over ``events`` in a savepoint; on a non-transient error, again
    one event at a time so that only the events that cause it fail."""
    handlers = registry.event_handlers(key)
    noted = dict(failures)
    try:
        with transaction.atomic():
            for handler in handlers:
                handler(events)
        return
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        failures.clear()
        failures.update(noted)  # notes made inside the rolled-back savepoint no longer hold
        if len(events) == 1:
            event_failure_note(event=events[0], error=exc)
            return
    for event in events:
        try:
            with transaction.atomic():
                for handler in handlers:
                    handler([event])
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            event_failure_note(event=event, error=exc)


@transaction.atomic
def events_process(*, event_ids: Sequence[int], include_failed: bool = False) -> int:
    """Run the registered handlers over these stored events, once each; returns how many ran.

    Claims the events that are still unprocessed (and, unless ``include_failed``, not recorded
    as failed) with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two workers given overlapping ids
    never process one event twice. Each event name's handlers run in a savepoint; when one
    raises, they run again one event at a time, and an event that still fails gets an
    ``EventFailure`` (error type, reason, attempts) instead of ``processed_at``, while the rest
    of the batch commits. A transient error (``TRANSIENT_ERRORS``) rolls the whole batch back
    for the task to retry: handlers must be idempotent.
    """
    events = Event.objects.select_for_update(skip_locked=True, of=("self",)).filter(
        id__in=list(event_ids), processed_at__isnull=True
    )
    if not include_failed:
        events = events.filter(failure__isnull=True)
    claimed = list(events.order_by("id"))
    if not claimed:
        return 0
    # A batch comes from one or two write keys: load each once, not joined into every row.
    # Shoppers are not joined either: most handlers need only ``shopper_id``; those that need
    # the row load their events' shoppers in one query (``event_shoppers_load``).
    sources = WriteKey.objects.in_bulk({event.source_id for event in claimed})
    for event in claimed:
        event.source = sources[event.source_id]
    by_key: dict[str, list[Event]] = {}
    for event in claimed:
        by_key.setdefault(event_handler_key(event), []).append(event)
    failures: dict[int, tuple[str, str]] = {}
    token = _failures.set(failures)
    try:
        for key, group in by_key.items():
            _handlers_run(key, group, failures)
    finally:
        _failures.reset(token)
    now = timezone.now()
    done = [event.id for event in claimed if event.id not in failures]
    if done:
        Event.objects.filter(id__in=done).update(processed_at=now)
        if include_failed:
            EventFailure.objects.filter(event_id__in=done).delete()
    if failures:
        _failures_record(failures, now)
    return len(claimed)


def _failures_record(failures: Mapping[int, tuple[str, str]], now: dt.datetime) -> None:
    existing = set(
        EventFailure.objects.filter(event_id__in=list(failures)).values_list("event_id", flat=True)
    )
    EventFailure.objects.filter(event_id__in=existing).update(
        attempts=F("attempts") + 1, last_failed_at=now
    )
    for event_id in existing:
        error_type, reason = failures[event_id]
        EventFailure.objects.filter(event_id=event_id).update(error_type=error_type, reason=reason)
    EventFailure.objects.bulk_create(
        [
            EventFailure(
                event_id=event_id,
                error_type=error_type[:100],
                reason=reason,
                first_failed_at=now,
                last_failed_at=now,
            )
            for event_id, (error_type, reason) in failures.items()
            if event_id not in existing
        ]
    )


def event_failures_retry(*, event_ids: Sequence[int]) -> dict[str, int]:
    """Staff: process failed events again; returns ``{"processed": n, "failed": m}``.

    An event that succeeds now loses its ``EventFailure``; one that fails again keeps it, with
    ``attempts`` one higher and the new reason. Events already processed are left alone.
    """
    ids = list(
        EventFailure.objects.filter(event_id__in=list(event_ids)).values_list("event_id", flat=True)
    )
    if not ids:
        return {"processed": 0, "failed": 0}
    events_process(event_ids=ids, include_failed=True)
    failed = EventFailure.objects.filter(event_id__in=ids, event__processed_at__isnull=True).count()
    return {"processed": len(ids) - failed, "failed": failed}
