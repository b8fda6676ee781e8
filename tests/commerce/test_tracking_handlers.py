"""Standard e-commerce events sent to the tracking API become commerce records, once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from commerce.models import Coupon, Event, Order, Product, Refund, Review, Shopper
from tests.commerce.tracking_support import batch_sender, track
from tests.support.identity import user_hash

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser_send(client, django_capture_on_commit_callbacks):
    """Send with a browser (public) write key."""
    return batch_sender(client, django_capture_on_commit_callbacks, server_side=False)


@pytest.fixture
def send(client, django_capture_on_commit_callbacks):
    """POST a batch with a server-side key and run the processing task it queues (Celery is eager in unit tests)."""
    return batch_sender(client, django_capture_on_commit_callbacks, server_side=True)


def _order_completed(message_id: str, order_id: str = "1001", **extra: Any) -> dict[str, Any]:
    return track(
        message_id,
        event="Order Completed",
        userId="c-1",
        properties={
            "order_id": order_id,
            "currency": "eur",
            "shipping": 3.5,
            "tax": "1.20",
            "discount": 2,
            "coupon": "spring",
            "products": [
                {"product_id": "MUG", "name": "Blue mug", "price": 8, "quantity": 2},
                {"sku": "TEA", "name": "Tea", "price": "4.25"},
            ],
            **extra,
        },
    )


def test_order_completed_records_the_order_with_its_lines(send):
    Product.objects.create(sku="MUG", title="Mug (catalog)", price=Decimal("9.00"))

    send(_order_completed("m-1"))

    order = Order.objects.get()
    assert order.number == "1001"
    assert order.shopper == Shopper.objects.get(customer_id="c-1")
    assert order.source == Order.Source.TRACKING
    assert order.currency == "EUR"
    assert order.coupon_code == "SPRING"
    assert (order.subtotal, order.shipping_total, order.tax_total, order.discount_total) == (
        Decimal("20.25"),
        Decimal("3.50"),
        Decimal("1.20"),
        Decimal("2.00"),
    )
    assert order.total == Decimal("22.95")
    lines = sorted(order.lines.values_list("sku", "quantity", "unit_price", "product__sku"))
    assert lines == [("MUG", 2, Decimal("8.00"), "MUG"), ("TEA", 1, Decimal("4.25"), None)]
    assert Event.objects.get().processed_at is not None


def test_an_order_naming_a_used_up_coupon_with_spaces_around_it_is_flagged_not_let_through(
    send,
):
    coupon = Coupon.objects.create(code="SPRING", kind="fixed", value=2, usage_limit=1)
    send(_order_completed("m-1", coupon="spring"))

    send(_order_completed("m-2", order_id="1002", coupon=" spring "))

    coupon.refresh_from_db()
    assert coupon.times_used == 1
    second = Order.objects.get(number="1002")
    assert second.coupon_code == "SPRING"
    assert second.coupon_problem.startswith("coupon_used_up")


def test_order_completed_replayed_under_another_message_id_creates_the_order_once(send):
    send(_order_completed("m-1"))

    send(_order_completed("m-2"))

    assert Order.objects.count() == 1
    assert Order.objects.get().lines.count() == 2
    assert Event.objects.filter(processed_at__isnull=False).count() == 2


def test_a_bad_order_event_is_skipped_without_blocking_its_batch(send):
    bad = track("m-1", event="Order Completed", userId="c-1", properties={"products": []})

    send(bad, _order_completed("m-2", order_id="1002"))

    assert list(Order.objects.values_list("number", flat=True)) == ["1002"]
    # The bad one is not lost as "processed": it is recorded as failed, with its reason.
    unprocessed = Event.objects.filter(processed_at__isnull=True)
    assert list(unprocessed.values_list("message_id", "failure__reason")) == [
        ("m-1", "order_id is required")
    ]


def test_order_refunded_by_products_refunds_those_lines(send):
    send(_order_completed("m-1"))

    send(
        track(
            "m-2",
            event="Order Refunded",
            userId="c-1",
            properties={"order_id": "1001", "products": [{"product_id": "MUG", "quantity": 1}]},
        )
    )

    order = Order.objects.get()
    refund = Refund.objects.get()
    assert refund.amount == Decimal("8.00")
    assert order.refunded_total == Decimal("8.00")
    assert order.status == Order.Status.PARTIALLY_REFUNDED
    assert order.lines.get(sku="MUG").refunded_quantity == 1


def test_order_refunded_without_details_refunds_everything_once(send):
    send(_order_completed("m-1"))
    full = {"order_id": "1001", "refund_id": "R-1"}

    send(track("m-2", event="Order Refunded", userId="c-1", properties=full))
    send(track("m-3", event="Order Refunded", userId="c-1", properties=full))

    order = Order.objects.get()
    assert list(Refund.objects.values_list("number", "amount")) == [("R-1", Decimal("22.95"))]
    assert order.status == Order.Status.REFUNDED


def test_product_reviewed_records_the_review_and_updates_the_average_rating(send):
    Product.objects.create(sku="MUG", title="Mug", price=Decimal("9.00"))
    review = {"product_id": "MUG", "review_id": "r-1", "review_body": "Lovely", "rating": 5}

    send(track("m-1", event="Product Reviewed", userId="c-1", properties=review))
    send(
        track(
            "m-2",
            event="Product Reviewed",
            userId="c-2",
            properties={**review, "review_id": "r-2", "rating": 2},
        )
    )
    send(track("m-3", event="Product Reviewed", userId="c-1", properties=review))  # replay

    product = Product.objects.get()
    assert product.rating_count == 2
    assert product.average_rating == Decimal("3.50")
    assert Review.objects.get(external_id="r-1").shopper == Shopper.objects.get(customer_id="c-1")
    assert Review.objects.get(external_id="r-1").body == "Lovely"


def test_product_events_add_unknown_products_and_never_overwrite_the_catalog(send):
    Product.objects.create(sku="MUG", title="Mug (merchant)", price=Decimal("9.00"))

    send(
        track("m-1", properties={"product_id": "MUG", "name": "Cheap mug", "price": 1}),
        track(
            "m-2",
            event="Product Added",
            properties={
                "sku": "LAMP",
                "name": "Desk lamp",
                "price": "30.5",
                "url": "https://shop.example/lamp",
                "image_url": "javascript:alert(1)",
            },
        ),
    )

    mug, lamp = Product.objects.get(sku="MUG"), Product.objects.get(sku="LAMP")
    assert (mug.title, mug.price) == ("Mug (merchant)", Decimal("9.00"))
    assert (lamp.title, lamp.price, lamp.url, lamp.image_url) == (
        "Desk lamp",
        Decimal("30.50"),
        "https://shop.example/lamp",
        "",
    )


def test_identify_traits_and_consent_land_on_the_shopper(send):
    send(
        {
            "type": "identify",
            "messageId": "m-1",
            "userId": "c-1",
            "timestamp": "2024-05-01T10:00:00Z",
            "traits": {
                "email": "Ana@Example.com",
                "firstName": "Ana",
                "emailConsent": True,
                "plan": "gold",
            },
        },
        {
            "type": "identify",
            "messageId": "m-2",
            "userId": "c-1",
            "timestamp": "2024-05-01T11:00:00Z",
            "traits": {"sms_consent": True, "plan": "platinum"},
        },
    )

    shopper = Shopper.objects.get()
    assert (shopper.email, shopper.first_name) == ("ana@example.com", "Ana")
    assert (shopper.email_consent, shopper.sms_consent, shopper.push_consent) == (True, True, False)
    assert shopper.traits == {"plan": "platinum"}


def test_withdrawn_consent_is_applied(send):
    send(
        {"type": "identify", "messageId": "m-1", "userId": "c-1", "traits": {"email_consent": True}}
    )

    send(
        {
            "type": "identify",
            "messageId": "m-2",
            "userId": "c-1",
            "traits": {"email_consent": False},
        }
    )

    assert Shopper.objects.get().email_consent is False


def test_a_browser_key_cannot_record_orders_refunds_or_consent(browser_send, send, identity_secret):
    # Even a browser that proves it is customer c-1 (context.userHash) is only trusted with
    # what a shopper may say about themselves: no orders, refunds or consent.
    proven = {"userHash": user_hash("c-1")}
    send(
        {"type": "identify", "messageId": "s-1", "userId": "c-1", "traits": {"email_consent": True}}
    )
    send(
        {
            "type": "track",
            "messageId": "s-2",
            "userId": "c-1",
            "event": "Order Completed",
            "properties": {
                "order_id": "real-1",
                "products": [{"sku": "A", "price": 5, "quantity": 1}],
            },
        }
    )

    browser_send(
        {
            "type": "track",
            "messageId": "b-1",
            "userId": "c-1",
            "context": proven,
            "event": "Order Completed",
            "properties": {
                "order_id": "forged-1",
                "products": [{"sku": "A", "price": 1, "quantity": 9}],
            },
        },
        {
            "type": "track",
            "messageId": "b-2",
            "userId": "c-1",
            "context": proven,
            "event": "Order Refunded",
            "properties": {"order_id": "real-1"},
        },
        {
            "type": "identify",
            "messageId": "b-3",
            "userId": "c-1",
            "context": proven,
            "traits": {"email_consent": False, "plan": "gold"},
        },
    )

    assert list(Order.objects.values_list("number", "refunded_total")) == [
        ("real-1", Decimal("0.00"))
    ]
    assert not Refund.objects.exists()
    shopper = Shopper.objects.get(customer_id="c-1")
    assert shopper.email_consent is True
    assert shopper.traits["plan"] == "gold"


def test_a_browser_key_cannot_create_products_or_ratings(browser_send):
    """#8 §3: a public Product Reviewed used to create a product with a rating and an external
    image that the shop then showed first."""
    Product.objects.create(sku="MUG", title="Mug", price=Decimal("9.00"))

    browser_send(
        track(
            "b-1",
            event="Product Reviewed",
            userId="c-1",
            properties={
                "product_id": "FAKE",
                "name": "Miracle pill",
                "price": 0,
                "image_url": "https://evil.example/pill.png",
                "rating": 5,
                "review_id": "r-1",
            },
        ),
        track("b-2", event="Product Reviewed", properties={"product_id": "MUG", "rating": 1}),
        track("b-3", event="Product Viewed", properties={"sku": "NEW", "name": "New", "price": 1}),
        track("b-4", event="Cart Viewed", properties={"products": [{"sku": "CART", "price": 2}]}),
    )

    assert list(Product.objects.values_list("sku", flat=True)) == ["MUG"]
    mug = Product.objects.get()
    assert (mug.rating_count, mug.average_rating, mug.image_url) == (0, None, "")
    assert not Review.objects.exists()
    # The events themselves are kept, as the visitor's activity.
    assert sorted(Event.objects.values_list("message_id", flat=True)) == [
        "b-1",
        "b-2",
        "b-3",
        "b-4",
    ]
