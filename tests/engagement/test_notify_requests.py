"""``notify_request_create``: the "notify me" request as one service (#10 point 3); the HTTP
behaviour is in test_api.py and test_api_identity.py."""

from __future__ import annotations

from decimal import Decimal

import pytest

from commerce.models import Product, Shopper, ShopperAlias
from core.exceptions import NotFound, PermissionDenied, ValidationError
from engagement import services
from engagement.models import ProductWatch
from tests.support.identity import user_hash

pytestmark = pytest.mark.django_db


@pytest.fixture
def lamp() -> Product:
    return Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)


def test_a_new_visitor_gets_a_watch_and_the_typed_address(lamp):
    first = services.notify_request_create(
        sku=" LAMP ", kind="back_in_stock", anonymous_id="anon-1", email=" Guest@Example.com "
    )
    again = services.notify_request_create(sku="LAMP", kind="back_in_stock", anonymous_id="anon-1")

    shopper = ShopperAlias.objects.get(anonymous_id="anon-1").shopper
    assert (first.created, first.sku, again.created) == (True, "LAMP", False)
    assert first.watch.pk == again.watch.pk
    assert (first.watch.shopper_id, first.watch.product_id) == (shopper.pk, lamp.pk)
    assert shopper.email == "guest@example.com"


def test_a_known_address_is_never_replaced_from_the_browser(lamp, identity_secret):
    ana = Shopper.objects.create(customer_id="ana", email="ana@example.com")

    services.notify_request_create(
        sku="LAMP",
        kind="price_drop",
        customer_id="ana",
        proof=user_hash("ana"),
        email="someone@else.example",
    )

    assert Shopper.objects.get(pk=ana.pk).email == "ana@example.com"
    assert ProductWatch.objects.get().shopper_id == ana.pk


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"sku": "NOPE", "kind": "back_in_stock"}, NotFound),
        ({"sku": "LAMP", "kind": "sometime"}, ValidationError),
        ({"sku": "LAMP", "kind": "back_in_stock", "email": "not an address"}, ValidationError),
    ],
)
def test_a_refused_request_stores_no_shopper_address_or_watch(lamp, fields, error):
    with pytest.raises(error):
        services.notify_request_create(anonymous_id="anon-2", **fields)

    assert not Shopper.objects.exists()
    assert not ShopperAlias.objects.exists()
    assert not ProductWatch.objects.exists()


def test_an_unproven_customer_id_alone_is_refused(lamp, identity_secret):
    with pytest.raises(PermissionDenied):
        services.notify_request_create(sku="LAMP", kind="back_in_stock", customer_id="ana")

    assert not ProductWatch.objects.exists()
