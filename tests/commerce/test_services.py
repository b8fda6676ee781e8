from decimal import Decimal

import pytest

from commerce import services
from commerce.models import Event, Order, Product, Refund, Shopper, ShopperAlias, WriteKey
from core.exceptions import Conflict, ValidationError

pytestmark = pytest.mark.django_db


def test_anonymous_browsing_follows_the_shopper_who_logs_in():
    visitor = services.shopper_resolve(anonymous_id="anon-1")
    key = WriteKey.objects.create(name="shop")
    Event.objects.create(
        source=key,
        message_id="m1",
        type="track",
        name="Product Viewed",
        shopper=visitor,
        anonymous_id="anon-1",
        timestamp="2024-01-01T00:00:00Z",
    )
    customer = services.shopper_resolve(customer_id="c-1")

    merged = services.shopper_resolve(customer_id="c-1", anonymous_id="anon-1")

    assert merged.pk == customer.pk
    assert Event.objects.get(message_id="m1").shopper_id == customer.pk
    assert ShopperAlias.objects.get(anonymous_id="anon-1").shopper_id == customer.pk
    visitor.refresh_from_db()
    assert visitor.merged_into_id == customer.pk
    assert services.shopper_resolve(anonymous_id="anon-1").pk == customer.pk


def test_two_known_customers_are_never_merged_by_a_shared_device():
    first = services.shopper_resolve(customer_id="c-1", anonymous_id="shared")
    second = services.shopper_resolve(customer_id="c-2", anonymous_id="shared")

    assert first.pk != second.pk
    assert Shopper.objects.filter(merged_into__isnull=False).count() == 0
    assert ShopperAlias.objects.get(anonymous_id="shared").shopper_id == second.pk


def test_order_create_is_idempotent_by_number():
    Product.objects.create(sku="A1", title="Mug", price=Decimal("4.00"))
    lines = [services.LineInput(sku="A1", quantity=3, unit_price=Decimal("4.00"))]

    order, created = services.order_create(
        number="1001", lines=lines, shipping_total=Decimal("2.50")
    )
    again, created_again = services.order_create(number="1001", lines=lines)

    assert created
    assert not created_again
    assert again.pk == order.pk
    assert order.total == Decimal("14.50")
    assert Order.objects.count() == 1
    assert order.lines.get().product == Product.objects.get(sku="A1")


def test_refund_by_lines_never_exceeds_what_was_bought():
    order, _ = services.order_create(
        number="1002", lines=[services.LineInput(sku="B", quantity=2, unit_price=Decimal("10"))]
    )
    services.refund_create(
        order=order, number="C1", lines=[services.RefundLineInput(sku="B", quantity=1)]
    )

    with pytest.raises(ValidationError):
        services.refund_create(
            order=order, number="C2", lines=[services.RefundLineInput(sku="B", quantity=2)]
        )

    order.refresh_from_db()
    assert order.refunded_total == Decimal("10.00")
    assert order.status == Order.Status.PARTIALLY_REFUNDED
    assert list(Refund.objects.values_list("number", flat=True)) == ["C1"]


def test_a_refund_number_used_on_another_order_is_a_conflict():
    first, _ = services.order_create(
        number="2001", lines=[services.LineInput(sku="A", quantity=1, unit_price=Decimal("5"))]
    )
    second, _ = services.order_create(
        number="2002", lines=[services.LineInput(sku="A", quantity=1, unit_price=Decimal("5"))]
    )
    services.refund_create(order=first, number="R-1")

    with pytest.raises(Conflict):
        services.refund_create(order=second, number="R-1")

    second.refresh_from_db()
    assert second.refunded_total == Decimal("0.00")


def test_an_order_too_large_to_store_is_refused_not_a_crash():
    lines = [services.LineInput(sku="A", quantity=1_000_000, unit_price=Decimal("99999.99"))]

    with pytest.raises(ValidationError, match="larger than an order can be"):
        services.order_create(number="huge", lines=lines)

    assert not Order.objects.filter(number="huge").exists()


# --- Order lines and products that arrive later ------------------------------------------


def test_order_lines_join_their_product_when_it_is_upserted_later():
    order, _ = services.order_create(
        number="L-1",
        lines=[
            services.LineInput(sku="LATE", quantity=2, unit_price=Decimal("3.00")),
            services.LineInput(sku="OTHER", quantity=1, unit_price=Decimal("1.00")),
        ],
    )
    before: list[tuple[str, int | None]] = list(order.lines.values_list("sku", "product"))
    assert before == [("LATE", None), ("OTHER", None)]

    product, created = services.product_upsert(sku="LATE", defaults={"price": "3.00"})

    assert created is True
    assert list(order.lines.order_by("sku").values_list("sku", "product")) == [
        ("LATE", product.pk),
        ("OTHER", None),
    ]


def test_order_lines_join_products_created_by_a_catalog_import():
    from commerce import importers

    order, _ = services.order_create(
        number="L-2", lines=[services.LineInput(sku="IMP", quantity=1, unit_price=Decimal("5"))]
    )

    importers.catalog_import(
        rows=importers.catalog_rows_parse(rows=[{"sku": "IMP", "title": "Imp", "price": "5"}])
    )

    assert order.lines.get().product == Product.objects.get(sku="IMP")
    assert services.order_lines_link(skus=["IMP"]) == 0  # nothing left to link
