"""The orders API (record, import, read, refund) and the shoppers API, staff only."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from commerce import services
from commerce.models import Order, OrderLine, Product, Refund, Shopper
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db

TEA_GLASS = "Çay bardağı ☕"


@pytest.fixture
def api() -> APIClient:
    staff = grant(
        get_user_model().objects.create_user(username="merchant", is_staff=True),
        "commerce.view_order",
        "commerce.add_order",
        "commerce.add_refund",
        "commerce.view_shopper",
        "commerce.view_shopper_personal_data",
    )
    client = APIClient()
    client.force_authenticate(user=staff)
    return client


def _order_body(number: str = "1001", **overrides) -> dict:
    body = {
        "number": number,
        "customer_id": "c-17850",
        "email": "Ada@Example.com",
        "placed_at": "2024-03-01T10:30:00+01:00",
        "currency": "gbp",
        "country": "United Kingdom",
        "lines": [
            {"sku": "MUG", "quantity": 2, "unit_price": "4.50"},
            {"sku": "ÇAY-BARDAĞI", "title": TEA_GLASS, "quantity": 6, "unit_price": 1.25},
        ],
    }
    body.update(overrides)
    return body


def test_recording_an_order_computes_totals_and_a_retry_returns_it_unchanged(api):
    Product.objects.create(sku="MUG", title="Polka dot mug", price=Decimal("4.50"))

    first = api.post("/api/orders/", _order_body(), format="json")
    retry = api.post(
        "/api/orders/",
        _order_body(lines=[{"sku": "MUG", "quantity": 99, "unit_price": "1.00"}]),
        format="json",
    )

    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json() == first.json()
    body = first.json()
    assert body["number"] == "1001"
    assert body["status"] == "paid"
    assert body["source"] == "api"
    assert body["currency"] == "GBP"
    assert body["email"] == "ada@example.com"
    assert body["subtotal"] == body["total"] == "16.50"
    assert body["placed_at"] == "2024-03-01T09:30:00Z"
    assert [
        (line["sku"], line["title"], line["quantity"], line["total"]) for line in body["lines"]
    ] == [
        ("MUG", "Polka dot mug", 2, "9.00"),
        ("ÇAY-BARDAĞI", TEA_GLASS, 6, "7.50"),
    ]
    shopper = Shopper.objects.get()
    assert body["shopper"] == {
        "id": shopper.pk,
        "customer_id": "c-17850",
        "email": "ada@example.com",
    }
    assert Order.objects.count() == 1
    assert OrderLine.objects.count() == 2


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [{"sku": "X", "quantity": -1, "unit_price": "1.00"}],
            "lines: 0: quantity: Ensure this value is greater than or equal to 1.",
        ),
        (
            [{"sku": "X", "quantity": 10**30, "unit_price": "1.00"}],
            "lines: 0: quantity: Ensure this value is less than or equal to 1000000.",
        ),
        (
            [{"sku": "X", "quantity": 1_000_000, "unit_price": "9999999999.99"}],
            "order 1001: the order total 9999999999990000.00 exceeds 9999999999.99",
        ),
        ([], "lines: Ensure this field has at least 1 elements."),
    ],
)
def test_bad_orders_get_a_400_and_nothing_is_stored(api, lines, message):
    response = api.post("/api/orders/", _order_body(lines=lines), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == message
    assert not Order.objects.exists()
    assert not Shopper.objects.exists()


def test_order_list_filters_and_keeps_to_four_queries(api, django_assert_num_queries):
    for number in range(3):
        api.post("/api/orders/", _order_body(number=f"A{number}"), format="json")
    api.post(
        "/api/orders/",
        _order_body(number="B1", customer_id="other", placed_at="2024-04-01T00:00:00Z"),
        format="json",
    )

    with django_assert_num_queries(4):  # count, orders with shoppers, lines, refunds
        everything = api.get("/api/orders/")
    mine = api.get("/api/orders/?customer_id=c-17850")
    april = api.get("/api/orders/?placed_after=2024-03-15T00:00:00Z")
    bad = api.get("/api/orders/?status=lost")

    assert [order["number"] for order in everything.json()["results"]] == ["B1", "A2", "A1", "A0"]
    assert mine.json()["count"] == 3
    assert [order["number"] for order in april.json()["results"]] == ["B1"]
    assert bad.status_code == 400


def test_one_order_and_unknown_numbers(api):
    api.post("/api/orders/", _order_body(number="2024/0001"), format="json")

    found = api.get("/api/orders/2024/0001/")
    missing = api.get("/api/orders/NOPE/")

    assert found.status_code == 200
    assert found.json()["number"] == "2024/0001"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_refund_by_lines_is_idempotent_by_number_and_never_exceeds_the_order(api):
    api.post("/api/orders/", _order_body(), format="json")

    refund = api.post(
        "/api/orders/1001/refunds/",
        {"number": "CN-1", "lines": [{"sku": "MUG", "quantity": 1}], "reason": "broken"},
        format="json",
    )
    retry = api.post(
        "/api/orders/1001/refunds/",
        {"number": "CN-1", "lines": [{"sku": "MUG", "quantity": 1}]},
        format="json",
    )
    too_much = api.post(
        "/api/orders/1001/refunds/",
        {"number": "CN-2", "lines": [{"sku": "MUG", "quantity": 2}]},
        format="json",
    )
    on_missing_order = api.post("/api/orders/NOPE/refunds/", {"number": "CN-3"}, format="json")

    assert refund.status_code == 201
    assert refund.json()["amount"] == "4.50"
    assert refund.json()["order"] == "1001"
    assert refund.json()["lines"] == [{"sku": "MUG", "quantity": 1, "amount": "4.50"}]
    assert retry.status_code == 200
    assert retry.json() == refund.json()
    assert too_much.status_code == 400
    assert too_much.json()["error"]["message"] == (
        "refund line MUG: more than the order has left to refund"
    )
    assert on_missing_order.status_code == 404
    order = Order.objects.get(number="1001")
    assert order.refunded_total == Decimal("4.50")
    assert order.status == Order.Status.PARTIALLY_REFUNDED
    assert list(Refund.objects.values_list("number", flat=True)) == ["CN-1"]


def test_refund_of_everything_left_then_nothing_more(api):
    api.post("/api/orders/", _order_body(), format="json")

    whole = api.post("/api/orders/1001/refunds/", {"number": "CN-1"}, format="json")
    again = api.post("/api/orders/1001/refunds/", {"number": "CN-2", "amount": 0.01}, format="json")

    assert whole.status_code == 201
    assert whole.json()["amount"] == "16.50"
    assert again.status_code == 400
    order = Order.objects.get(number="1001")
    assert (order.status, order.refunded_total) == (Order.Status.REFUNDED, Decimal("16.50"))


def test_orders_import_all_or_nothing(api):
    api.post("/api/orders/", _order_body(number="OLD"), format="json")

    good = api.post(
        "/api/orders/import/",
        [_order_body(number="OLD"), _order_body(number="N1"), _order_body(number="N2")],
        format="json",
    )
    bad = api.post(
        "/api/orders/import/",
        [_order_body(number="N3"), _order_body(number="N4", email="not-an-email")],
        format="json",
    )

    assert good.status_code == 200
    assert good.json() == {
        "orders_created": 2,
        "orders_existing": 1,
        "lines_created": 4,
        "shoppers_created": 0,
    }
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "row 2: email: Enter a valid email address."
    assert bad.json()["error"]["detail"]["row"] == 2
    assert sorted(Order.objects.values_list("number", flat=True)) == ["N1", "N2", "OLD"]


def test_shoppers_list_and_detail_with_order_count_and_net_spend(api, django_assert_num_queries):
    api.post("/api/orders/", _order_body(number="S1"), format="json")
    api.post("/api/orders/", _order_body(number="S2"), format="json")
    api.post("/api/orders/S2/refunds/", {"number": "CN-9", "amount": "6.50"}, format="json")
    Shopper.objects.create(customer_id="nobody")
    gone = Shopper.objects.create(customer_id="merged")
    survivor = Shopper.objects.get(customer_id="c-17850")
    services.shopper_merge(source=gone, target=survivor)

    with django_assert_num_queries(2):
        listing = api.get("/api/shoppers/")
    detail = api.get(f"/api/shoppers/{survivor.pk}/")
    merged = api.get(f"/api/shoppers/{gone.pk}/")
    by_email = api.get("/api/shoppers/?email=ADA@example.com")
    huge = api.get("/api/shoppers/99999999999999999999999/")

    assert [
        (s["customer_id"], s["order_count"], s["total_spent"]) for s in listing.json()["results"]
    ] == [
        ("c-17850", 2, "26.50"),
        ("nobody", 0, "0.00"),
    ]
    assert detail.json()["email"] == "ada@example.com"
    assert detail.json()["order_count"] == 2
    assert merged.json()["merged_into"] == survivor.pk
    assert [s["customer_id"] for s in by_email.json()["results"]] == ["c-17850"]
    assert huge.status_code == 404
