"""One bad event fails on its own, with its reason for staff; the rest of its batch goes on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone

from commerce import registry, services, tasks
from commerce.models import Event, EventFailure, Order, Product, WriteKey
from tests.commerce.tracking_support import batch_sender, track

pytestmark = pytest.mark.django_db


def _order(message_id: str, order_id: str, price: Any) -> dict[str, Any]:
    return track(
        message_id,
        event="Order Completed",
        userId="c-1",
        properties={
            "order_id": order_id,
            "products": [{"product_id": "MUG", "name": "Mug", "price": price, "quantity": 1}],
        },
    )


@pytest.fixture
def send(client, django_capture_on_commit_callbacks):
    return batch_sender(client, django_capture_on_commit_callbacks, server_side=True)


def test_a_price_of_1e300_fails_its_event_and_the_rest_of_the_batch_is_processed(send):
    send(
        _order("m-1", "1001", 8),
        _order("m-2", "1002", 1e300),
        _order("m-3", "1003", "4.25"),
        track("m-4", event="Product Viewed", userId="c-1", properties={"sku": "X", "price": 1e300}),
    )

    assert sorted(Order.objects.values_list("number", "total")) == [
        ("1001", Decimal("8.00")),
        ("1003", Decimal("4.25")),
    ]
    bad = Event.objects.get(message_id="m-2")
    assert bad.processed_at is None
    failure = EventFailure.objects.get()
    assert (failure.event_id, failure.error_type, failure.attempts) == (
        bad.id,
        "ValidationError",
        1,
    )
    assert failure.reason == "price is too large: 1e+300"
    assert set(
        Event.objects.filter(processed_at__isnull=False).values_list("message_id", flat=True)
    ) == {"m-1", "m-3", "m-4"}
    # The product the view describes is created, without the impossible price.
    assert Product.objects.get(sku="X").price == Decimal("0.00")


@pytest.fixture
def fragile() -> Iterator[dict[str, Any]]:
    """A handler of "Test Fragile" that raises ``state["error"]`` for events named in it."""
    state: dict[str, Any] = {"bad": set(), "error": RuntimeError("boom"), "seen": []}

    def handler(events: Sequence[Event]) -> None:
        for event in events:
            if event.message_id in state["bad"]:
                raise state["error"]
        state["seen"].append([e.message_id for e in events])
        Product.objects.create(
            sku="P-" + "-".join(e.message_id for e in events), title="x", price=Decimal("1.00")
        )

    registry.register_event_handler("Test Fragile", handler)
    yield state
    registry._event_handlers["Test Fragile"].remove(handler)


def _event(key: WriteKey, message_id: str, **fields: Any) -> Event:
    return Event.objects.create(
        source=key,
        message_id=message_id,
        type="track",
        name="Test Fragile",
        timestamp=timezone.now(),
        **fields,
    )


def test_a_handler_bug_for_one_event_is_recorded_and_the_others_are_handled(fragile):
    key = WriteKey.objects.create(name="shop")
    events = [_event(key, m) for m in ("a", "b", "c")]
    fragile["bad"] = {"b"}

    assert services.events_process(event_ids=[e.id for e in events]) == 3

    # The batch ran once (rolled back), then one event at a time.
    assert fragile["seen"] == [["a"], ["c"]]
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["P-a", "P-c"]
    failure = EventFailure.objects.get()
    assert (failure.event_id, failure.error_type, failure.reason) == (
        events[1].id,
        "RuntimeError",
        "boom",
    )
    assert list(
        Event.objects.filter(processed_at__isnull=True).values_list("message_id", flat=True)
    ) == ["b"]


def test_a_transient_error_leaves_the_whole_batch_for_a_retry_and_records_nothing(fragile):
    key = WriteKey.objects.create(name="shop")
    events = [_event(key, m) for m in ("a", "b")]
    fragile["bad"] = {"b"}
    fragile["error"] = OperationalError("server closed the connection unexpectedly")

    with pytest.raises(OperationalError):
        services.events_process(event_ids=[e.id for e in events])

    assert EventFailure.objects.count() == 0
    assert Event.objects.filter(processed_at__isnull=True).count() == 2
    assert Product.objects.count() == 0


def test_the_sweeper_leaves_failed_events_to_staff(fragile):
    key = WriteKey.objects.create(name="shop")
    old = timezone.now() - dt.timedelta(minutes=10)
    failed = _event(key, "bad", received_at=old)
    _event(key, "lost", received_at=old)
    fragile["bad"] = {"bad"}
    services.events_process(event_ids=[failed.id])
    fragile["bad"] = set()  # even once fixed, only staff's retry takes it again

    assert tasks.events_process_pending.delay(older_than_seconds=120).get() == 1

    assert fragile["seen"] == [["lost"]]
    failed.refresh_from_db()
    assert failed.processed_at is None
    assert EventFailure.objects.get().attempts == 1


def test_retry_processes_a_fixed_event_and_counts_attempts_of_one_still_failing(fragile):
    key = WriteKey.objects.create(name="shop")
    first, second = _event(key, "x"), _event(key, "y")
    fragile["bad"] = {"x", "y"}
    services.events_process(event_ids=[first.id, second.id])
    assert EventFailure.objects.count() == 2

    fragile["bad"] = {"y"}
    fragile["error"] = ValueError("still broken")
    assert services.event_failures_retry(event_ids=[first.id, second.id]) == {
        "processed": 1,
        "failed": 1,
    }

    first.refresh_from_db()
    assert first.processed_at is not None
    failure = EventFailure.objects.get()
    assert (failure.event_id, failure.attempts, failure.error_type, failure.reason) == (
        second.id,
        2,
        "ValueError",
        "still broken",
    )
    assert failure.last_failed_at > failure.first_failed_at
    # A processed event is not processed again by a second retry.
    assert services.event_failures_retry(event_ids=[first.id]) == {"processed": 0, "failed": 0}
    assert fragile["seen"] == [["x"]]


def test_staff_see_failed_events_and_retry_them_from_the_admin(admin_client, fragile):
    key = WriteKey.objects.create(name="shop")
    event = _event(key, "bad")
    fragile["bad"] = {"bad"}
    services.events_process(event_ids=[event.id])

    listing = admin_client.get("/admin/commerce/event/", {"processing": "failed"})
    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == [event]
    failures = admin_client.get("/admin/commerce/eventfailure/")
    assert b"boom" in failures.content

    fragile["bad"] = set()
    response = admin_client.post(
        "/admin/commerce/eventfailure/",
        {"action": "retry", "_selected_action": [event.id]},
        follow=True,
    )

    assert response.status_code == 200
    assert "1 processed, 0 failed again." in response.content.decode()
    event.refresh_from_db()
    assert event.processed_at is not None
    assert EventFailure.objects.count() == 0
    assert fragile["seen"] == [["bad"]]
