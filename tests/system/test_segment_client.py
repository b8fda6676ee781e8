"""Segment's own Python library, pointed at a real Patron server, is understood end to end."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
from segment.analytics import Client
from segment.analytics.request import APIError, post

from commerce.models import Event, Order, Shopper, ShopperAlias, WriteKey
from tests.support.processes import asgi_server, celery_worker

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_segment_analytics_python_sends_to_patron(tmp_path):
    key = WriteKey.objects.create(name="python backend", server_side=True).key
    errors: list[Exception] = []

    with asgi_server() as base_url, celery_worker(concurrency=1):
        analytics = Client(
            key,
            host=base_url,
            gzip=True,
            sync_mode=True,
            max_retries=0,
            on_error=lambda error, _batch: errors.append(error),
        )
        analytics.page(anonymous_id="browser-1", name="Home", properties={"path": "/"})
        analytics.track(
            anonymous_id="browser-1", event="Product Viewed", properties={"product_id": "MUG"}
        )
        analytics.identify(
            "cust-1",
            {"email": "ana@example.com", "firstName": "Ana", "emailConsent": True},
            anonymous_id="browser-1",
        )
        analytics.track(
            "cust-1",
            "Order Completed",
            {"order_id": "5001", "products": [{"product_id": "MUG", "price": 9, "quantity": 2}]},
            message_id="order-5001",
        )
        analytics.flush()
        # The same message again, as a retrying client would send it.
        analytics.track(
            "cust-1",
            "Order Completed",
            {"order_id": "5001", "products": [{"product_id": "MUG", "price": 9, "quantity": 2}]},
            message_id="order-5001",
        )
        analytics.flush()

        # A wrong write key is refused with Segment's error fields.
        with pytest.raises(APIError) as refused:
            post("not-a-key", host=base_url, batch=[{"type": "track", "event": "x", "userId": "u"}])

        _wait_for(lambda: Order.objects.filter(number="5001").exists())
        _wait_for(lambda: not Event.objects.filter(processed_at__isnull=True).exists())

    assert errors == []
    assert (refused.value.status, refused.value.code) == (401, "invalid_write_key")
    customer = Shopper.objects.get(customer_id="cust-1")
    assert list(Event.objects.order_by("timestamp").values_list("type", "name")) == [
        ("page", "Home"),
        ("track", "Product Viewed"),
        ("identify", ""),
        ("track", "Order Completed"),
    ]
    assert set(Event.objects.values_list("shopper_id", flat=True)) == {customer.pk}
    assert ShopperAlias.objects.get(anonymous_id="browser-1").shopper_id == customer.pk
    assert (customer.email, customer.first_name, customer.email_consent) == (
        "ana@example.com",
        "Ana",
        True,
    )
    order = Order.objects.get()
    assert (order.shopper_id, order.total) == (customer.pk, Decimal("18.00"))
    event = Event.objects.get(message_id="order-5001")
    assert event.context["library"]["name"] == "analytics-python"
    assert abs(event.timestamp - event.received_at) < dt.timedelta(seconds=30)
