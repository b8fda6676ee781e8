"""One pagination for every list endpoint (core.pagination): the same parameters, the same
envelope, and a 400 naming the parameter for a bad ``limit`` or ``offset``."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from chat import services as chat_services
from commerce import services as commerce_services
from commerce.models import Category, Product, Shopper

pytestmark = pytest.mark.django_db

# Each list endpoint and the most items one page may hold.
LISTS = {
    "/api/products/": 500,
    "/api/categories/": 500,
    "/api/orders/": 500,
    "/api/shoppers/": 500,
    "/api/chat/conversations/": 200,
}


@pytest.fixture
def two_of_each(db):
    for n in (1, 2):
        Product.objects.create(sku=f"P{n}", title=f"Product {n}", price="1.00")
        Category.objects.create(name=f"Category {n}", slug=f"c-{n}")
        shopper = Shopper.objects.create(customer_id=f"c{n}")
        chat_services.conversation_start(shopper=shopper)
    for n in (1, 2):
        commerce_services.order_create(
            number=f"O{n}",
            shopper=Shopper.objects.get(customer_id=f"c{n}"),
            lines=[commerce_services.LineInput(sku="P1", quantity=1, unit_price=Decimal("1.00"))],
        )


@pytest.mark.parametrize("path", sorted(LISTS))
@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=MAX+1", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
    ],
)
def test_every_list_refuses_a_bad_limit_or_offset_naming_it(admin_client, path, query, parameter):
    query = query.replace("MAX+1", str(LISTS[path] + 1))

    response = admin_client.get(f"{path}?{query}")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"].startswith(f"{parameter}: ")
    assert list(error["detail"]) == [parameter]


@pytest.mark.parametrize("path", sorted(LISTS))
def test_every_list_pages_in_the_same_envelope(admin_client, two_of_each, path):
    first = admin_client.get(f"{path}?limit=1").json()
    second = admin_client.get(first["next"]).json()
    far = admin_client.get(f"{path}?limit={LISTS[path]}&offset=100000000000000000000000")

    assert set(first) == {"count", "next", "previous", "results"}
    assert (first["count"], len(first["results"]), first["previous"]) == (2, 1, None)
    assert parse_qs(urlsplit(first["next"]).query) == {"limit": ["1"], "offset": ["1"]}
    assert (len(second["results"]), second["next"]) == (1, None)
    assert second["results"] != first["results"]
    assert (far.status_code, far.json()["results"]) == (200, [])
