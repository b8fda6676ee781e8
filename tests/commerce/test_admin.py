"""The commerce admin changes state only through the services (#10 point 3): products through
``product_upsert``, orders read-only (they are the store's record), reviews deleted through
``reviews_delete``; and the staff API's product PATCH is one service, ``product_update``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from commerce import importers, services
from commerce.models import Category, Order, OrderLine, Product, Review, Shopper, ShopperAlias
from core.exceptions import NotFound, ValidationError
from tests.support.admin_forms import change_form_data

pytestmark = pytest.mark.django_db


def _order_naming(sku: str) -> Order:
    order, _ = services.order_create(
        number="1001",
        lines=[services.LineInput(sku=sku, quantity=2, unit_price=Decimal("5.00"))],
    )
    return order


def test_a_product_added_in_the_admin_takes_the_order_lines_that_named_it(admin_client):
    order = _order_naming("NEW-1")
    assert OrderLine.objects.get(order=order).product_id is None

    response = admin_client.post(
        "/admin/commerce/product/add/",
        {"sku": "NEW-1", "title": "New", "price": "5.00", "currency": "GBP", "stock": "3"},
    )

    assert response.status_code == 302
    product = Product.objects.get(sku="NEW-1")
    assert (product.title, product.price, product.stock) == ("New", Decimal("5.00"), 3)
    assert OrderLine.objects.get(order=order).product_id == product.pk


def test_a_products_sku_and_rating_are_read_only_in_the_admin(admin_client):
    product = Product.objects.create(sku="MUG", title="Mug", price=Decimal("4.00"))
    page = admin_client.get(f"/admin/commerce/product/{product.pk}/change/")
    data = change_form_data(page)
    assert "sku" not in data
    assert "average_rating" not in data

    admin_client.post(
        f"/admin/commerce/product/{product.pk}/change/",
        {**data, "sku": "CUP", "average_rating": "5", "price": "3.00"},
    )

    product.refresh_from_db()
    assert (product.sku, product.average_rating, product.price) == ("MUG", None, Decimal("3.00"))


def test_orders_are_read_only_in_the_admin(admin_client):
    order = _order_naming("MUG")
    page = admin_client.get(f"/admin/commerce/order/{order.pk}/change/")
    assert "status" not in change_form_data(page)

    admin_client.post(
        f"/admin/commerce/order/{order.pk}/change/",
        {**change_form_data(page), "status": "refunded", "total": "0"},
    )
    add = admin_client.get("/admin/commerce/order/add/")

    order.refresh_from_db()
    assert (order.status, order.total) == (Order.Status.PAID, Decimal("10.00"))
    assert add.status_code == 403


def test_deleting_reviews_in_the_admin_refreshes_the_rating(admin_client):
    product = Product.objects.create(sku="MUG", title="Mug", price=Decimal("4.00"))
    low, _ = services.review_record(product=product, external_id="r1", rating=1)
    services.review_record(product=product, external_id="r2", rating=5)
    assert Product.objects.get(pk=product.pk).average_rating == Decimal("3.00")

    admin_client.post(
        "/admin/commerce/review/", {"action": "delete_reviews", "_selected_action": [low.pk]}
    )

    product.refresh_from_db()
    assert (product.average_rating, product.rating_count) == (Decimal("5.00"), 1)
    assert list(Review.objects.values_list("external_id", flat=True)) == ["r2"]


def test_deleting_the_last_review_clears_the_rating():
    product = Product.objects.create(sku="MUG", title="Mug", price=Decimal("4.00"))
    review, _ = services.review_record(product=product, external_id="r1", rating=4)

    assert services.reviews_delete(review_ids=[review.pk]) == 1

    product.refresh_from_db()
    assert (product.average_rating, product.rating_count) == (None, 0)


def test_consent_and_aliases_are_read_only_on_the_shopper_page(admin_client):
    shopper = services.shopper_resolve(customer_id="c-1", anonymous_id="anon-1")
    page = admin_client.get(f"/admin/commerce/shopper/{shopper.pk}/change/")
    data = change_form_data(page)
    assert "email_consent" not in data
    assert data["aliases-MAX_NUM_FORMS"] == 0

    admin_client.post(
        f"/admin/commerce/shopper/{shopper.pk}/change/",
        {
            **data,
            "email_consent": "on",
            "aliases-TOTAL_FORMS": "2",
            "aliases-1-anonymous_id": "someone-else",
        },
    )

    assert Shopper.objects.get(pk=shopper.pk).email_consent is False
    assert list(ShopperAlias.objects.values_list("anonymous_id", flat=True)) == ["anon-1"]


# --- product_update: the PATCH's one service ------------------------------------------------


def test_product_update_sets_the_category_by_path_and_upper_cases_the_currency():
    Product.objects.create(sku="MUG", title="Mug", price=Decimal("4.00"))

    product = importers.product_update(
        sku="MUG", values={"category": "Kitchen/Mugs", "currency": "eur", "stock": 7}
    )

    assert product.category is not None
    assert (product.category.slug, product.currency, product.stock) == ("kitchen-mugs", "EUR", 7)
    assert Product.objects.get(sku="MUG").category_id == product.category.pk


def test_product_update_stores_nothing_when_a_value_is_refused():
    Product.objects.create(sku="MUG", title="Mug", price=Decimal("4.00"))

    with pytest.raises(ValidationError):
        importers.product_update(
            sku="MUG", values={"category": "Kitchen/Mugs", "price": Decimal("-1")}
        )
    with pytest.raises(NotFound):
        importers.product_update(sku="NOPE", values={"category": "Garden"})

    assert not Category.objects.exists()
    assert Product.objects.get(sku="MUG").price == Decimal("4.00")
