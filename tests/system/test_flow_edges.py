"""Flow edges (#15 section 1) against real processes, as the original run drove them: the
store's calls to a real ASGI server, a real Celery worker on Redis delivering to a real SMTP
server, and the merchant's changes through the staff API."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from commerce import services as commerce_services
from commerce.models import Coupon, Order, Product, Shopper, WriteKey
from engagement import tasks
from engagement.models import Message, ProductChange, ProductSnapshot, ProductView, Run
from tests.engagement.conftest import make_campaign
from tests.support.processes import sending_worker_fixture
from tests.support.waiting import outbox_settled, wait_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


worker = sending_worker_fixture(concurrency=1, PATRON_OUTBOX_BATCH_SIZE="10")


class Store:
    """The store's backend and its merchant, talking HTTP to the server."""

    def __init__(self, server: str) -> None:
        self.http = httpx.Client(base_url=server, timeout=10)
        self.server_key = WriteKey.objects.create(name="store server", server_side=True).key
        self.browser_key = WriteKey.objects.create(name="store pages").key
        get_user_model().objects.create_superuser("merchant", "m@shop.example", "pw-merchant-1")

    def batch(self, *calls: dict[str, Any]) -> None:
        response = self.http.post(
            "/v1/batch", json={"batch": list(calls)}, auth=(self.server_key, "")
        )
        assert response.status_code == 200, response.text

    def product(self, sku: str, **fields: Any) -> None:
        """The merchant edits the product, then beat's scan looks for changes."""
        response = self.http.patch(
            f"/api/products/{sku}/", json=fields, auth=("merchant", "pw-merchant-1")
        )
        assert response.status_code == 200, response.text
        tasks.product_changes_detect.delay()


def _track(message_id: str, user_id: str, name: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": user_id,
        "event": name,
        "properties": properties,
    }


def test_a_restock_reaches_the_guest_who_asked_and_a_viewer_once_and_follow_ups_stop(
    server, worker, sink
):
    store = Store(server)
    Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)
    make_campaign(
        "back_in_stock",
        steps=[
            {"subject": "{{ product.title }} is back"},
            {"subject": "Going fast", "delay": dt.timedelta(days=1)},
        ],
    )
    store.batch(
        {
            "type": "identify",
            "messageId": "i-1",
            "userId": "c-1",
            "traits": {"email": "viewer@example.com", "email_consent": True},
        },
        _track("v-1", "c-1", "Product Viewed", sku="LAMP"),
    )
    guest = store.http.post(
        "/api/engagement/notify-requests",
        json={"anonymous_id": "g-1", "sku": "LAMP", "kind": "back_in_stock", "email": "g@ex.com"},
        auth=(store.browser_key, ""),
    )
    assert guest.status_code == 201, guest.text
    wait_until(lambda: ProductView.objects.exists(), what="the view to be recorded")
    tasks.product_changes_detect.delay()
    wait_until(lambda: ProductSnapshot.objects.exists(), what="the first snapshot")

    store.product("LAMP", stock=3)
    first = sink.wait_for(2)
    store.product("LAMP", stock=0)
    wait_until(lambda: ProductSnapshot.objects.get().stock == 0, what="the sell-out to be seen")
    store.product("LAMP", stock=5)
    wait_until(lambda: ProductChange.objects.count() == 2, what="the second restock")
    Message.objects.filter(state=Message.State.SCHEDULED).update(due_at=timezone.now())
    tasks.outbox_deliver.delay()
    wait_until(outbox_settled, what="the follow-ups to be decided")

    assert sorted((r.rcpt_tos[0], str(r.message["Subject"])) for r in first) == [
        ("g@ex.com", "Lamp is back"),
        ("viewer@example.com", "Lamp is back"),
    ]
    assert len(sink.messages()) == 2
    assert Run.objects.count() == 2  # the second restock, within the period, told nobody
    follow_ups = Message.objects.filter(step__position=2)
    assert set(follow_ups.values_list("state", "reason")) == {
        (Message.State.CANCELLED, "sequence ended: end condition of Back in stock")
    }
    guest_first = Message.objects.get(shopper__email="g@ex.com", step__position=1)
    assert guest_first.state == Message.State.SENT
    assert "asked for it (notify me)" in guest_first.reason


def test_a_single_use_coupon_redeemed_at_checkout_counts_once_whatever_the_orders_say(
    server, worker
):
    store = Store(server)
    store.batch(
        {"type": "identify", "messageId": "i-1", "userId": "c-1", "traits": {"email": "1@ex.com"}},
        {"type": "identify", "messageId": "i-2", "userId": "c-2", "traits": {"email": "2@ex.com"}},
    )
    wait_until(lambda: Shopper.objects.filter(customer_id="c-2").exists(), what="the shoppers")
    (coupon,) = commerce_services.coupons_issue(
        kind=Coupon.Kind.PERCENT,
        value=Decimal("15"),
        source=Coupon.Source.CAMPAIGN,
        owners=[Shopper.objects.get(customer_id="c-1")],
    )
    redeem = {"code": coupon.code, "userId": "c-1", "orderId": "A-1", "subtotal": 20}

    redeemed = store.http.post("/v1/coupons/redeem", json=redeem, auth=(store.server_key, ""))
    refused = store.http.post(
        "/v1/coupons/redeem", json={**redeem, "orderId": "A-2"}, auth=(store.server_key, "")
    )
    products = [{"sku": "MUG", "price": 20, "quantity": 1}]
    order = {"order_id": "A-1", "coupon": coupon.code, "products": products}
    store.batch(
        _track("o-1", "c-1", "Order Completed", **order),
        _track("o-1", "c-1", "Order Completed", **order),  # the same message, resent
        _track("o-1-retry", "c-1", "Order Completed", **order),  # the order, sent again
        _track("o-2", "c-2", "Order Completed", **{**order, "order_id": "B-1"}),
    )
    wait_until(lambda: Order.objects.count() == 2, what="both orders")

    assert redeemed.status_code == 201, redeemed.text
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "coupon_used_up")
    coupon.refresh_from_db()
    assert coupon.times_used == 1
    assert list(coupon.redemptions.values_list("order__number", flat=True)) == ["A-1"]
    problems = dict(Order.objects.values_list("number", "coupon_problem"))
    assert problems["A-1"] == ""
    assert problems["B-1"].startswith("coupon_not_yours")
