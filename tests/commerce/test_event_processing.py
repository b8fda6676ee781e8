"""Stored events reach the registered handlers exactly once, and old events are purged."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from commerce import registry, services, tasks
from commerce.models import Event, WriteKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def seen():
    calls: list[tuple[str, list[int]]] = []

    def handler(events):
        calls.append((events[0].name, [event.id for event in events]))

    registry.register_event_handler("Test Happened", handler)
    yield calls
    registry._event_handlers["Test Happened"].remove(handler)


def _event(
    key: WriteKey, message_id: str, *, name: str = "Test Happened", received_at=None
) -> Event:
    return Event.objects.create(
        source=key,
        message_id=message_id,
        type="track",
        name=name,
        timestamp=timezone.now(),
        received_at=received_at or timezone.now(),
    )


def test_each_event_is_handled_once_even_when_processed_twice(seen):
    key = WriteKey.objects.create(name="shop")
    first, second = _event(key, "a"), _event(key, "b")

    assert services.events_process(event_ids=[first.id, second.id]) == 2
    assert services.events_process(event_ids=[first.id, second.id]) == 0

    assert seen == [("Test Happened", [first.id, second.id])]
    assert Event.objects.filter(processed_at__isnull=True).count() == 0


def test_a_transient_failure_leaves_the_batch_for_a_retry(seen):
    key = WriteKey.objects.create(name="shop")
    event = _event(key, "boom", name="Test Exploded")

    def explode(events):
        raise OperationalError("connection lost")

    registry.register_event_handler("Test Exploded", explode)
    try:
        with pytest.raises(OperationalError):
            services.events_process(event_ids=[event.id])
    finally:
        registry._event_handlers["Test Exploded"].remove(explode)

    event.refresh_from_db()
    assert event.processed_at is None
    assert services.events_process(event_ids=[event.id]) == 1


@pytest.mark.django_db(transaction=True)
def test_a_locked_event_is_skipped_not_waited_for(seen):
    key = WriteKey.objects.create(name="shop")
    event = _event(key, "locked")
    locked = threading.Event()
    release = threading.Event()

    def hold_lock():
        from django.db import transaction

        with transaction.atomic():
            Event.objects.select_for_update().get(pk=event.pk)
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        assert services.events_process(event_ids=[event.id]) == 0
    finally:
        release.set()
        holder.join()

    assert services.events_process(event_ids=[event.id]) == 1
    assert seen == [("Test Happened", [event.id])]


def test_sweeper_processes_only_events_whose_task_was_lost(seen):
    key = WriteKey.objects.create(name="shop")
    stale = _event(key, "stale", received_at=timezone.now() - dt.timedelta(minutes=10))
    fresh = _event(key, "fresh")

    assert tasks.events_process_pending.delay(older_than_seconds=120).get() == 1

    assert seen == [("Test Happened", [stale.id])]
    fresh.refresh_from_db()
    assert fresh.processed_at is None


def test_retention_purges_only_events_past_the_limit(settings):
    settings.PATRON_EVENT_RETENTION_DAYS = 30
    key = WriteKey.objects.create(name="shop")
    old = [
        _event(key, f"old-{i}", received_at=timezone.now() - dt.timedelta(days=31))
        for i in range(3)
    ]
    kept = _event(key, "recent", received_at=timezone.now() - dt.timedelta(days=29))

    deleted = tasks.events_purge_expired.delay(batch_size=2).get()

    assert deleted == 3
    assert list(Event.objects.values_list("id", flat=True)) == [kept.id]
    assert not Event.objects.filter(id__in=[event.id for event in old]).exists()


def test_retention_of_zero_keeps_everything(settings):
    settings.PATRON_EVENT_RETENTION_DAYS = 0
    key = WriteKey.objects.create(name="shop")
    _event(key, "ancient", received_at=timezone.now() - dt.timedelta(days=3000))

    assert tasks.events_purge_expired.delay().get() == 0
    assert Event.objects.count() == 1
