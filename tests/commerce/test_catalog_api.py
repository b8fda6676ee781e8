"""The catalog API: products (list, upsert, patch, bulk import) and categories, staff only."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from commerce.models import Category, Product
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    """A merchant who manages the catalog."""
    user = get_user_model().objects.create_user(
        username="merchant", password="s3cret-pass", is_staff=True
    )
    return grant(
        user,
        "commerce.view_product",
        "commerce.add_product",
        "commerce.change_product",
        "commerce.view_category",
    )


@pytest.fixture
def api(staff) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=staff)
    return client


def _product(sku: str, *, category: Category | None = None, **fields) -> Product:
    values = {"title": f"Item {sku}", "price": Decimal("2.50"), "stock": 5, **fields}
    return Product.objects.create(sku=sku, category=category, **values)


def test_anonymous_and_non_staff_callers_are_refused_and_nothing_is_created():
    anonymous = APIClient()
    shopper_user = get_user_model().objects.create_user(username="bob", password="pw-12345678")
    non_staff = APIClient()
    non_staff.force_authenticate(user=shopper_user)
    body = {"sku": "A1", "title": "Mug", "price": "3.00"}

    unauthenticated = anonymous.post("/api/products/", body, format="json")
    forbidden = non_staff.post("/api/products/", body, format="json")

    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "not_authenticated"
    assert unauthenticated["WWW-Authenticate"] == 'Basic realm="api"'
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "permission_denied"
    assert not Product.objects.exists()


def test_staff_may_use_http_basic_and_a_wrong_password_is_refused(staff):
    good = base64.b64encode(b"merchant:s3cret-pass").decode()
    bad = base64.b64encode(b"merchant:nope").decode()

    ok = APIClient().get("/api/products/", HTTP_AUTHORIZATION=f"Basic {good}")
    refused = APIClient().get("/api/products/", HTTP_AUTHORIZATION=f"Basic {bad}")

    assert ok.status_code == 200
    assert ok.json() == {"count": 0, "next": None, "previous": None, "results": []}
    assert refused.status_code == 401


def test_post_creates_a_product_then_updates_it_by_sku(api):
    created = api.post(
        "/api/products/",
        {
            "sku": "85123A",
            "title": "White hanging heart T-light holder",
            "price": 2.55,
            "stock": 30,
            "category": "Home/Candles & Lights",
            "image_url": "/static/patron/img/placeholder.svg",
        },
        format="json",
    )
    updated = api.post("/api/products/", {"sku": "85123A", "price": "2.95"}, format="json")

    assert created.status_code == 201
    body = created.json()
    assert body["sku"] == "85123A"
    assert body["price"] == "2.55"
    assert body["category"] == {"slug": "home-candles-lights", "name": "Candles & Lights"}
    assert body["currency"] == "GBP"
    assert body["active"] is True
    rounded = api.post("/api/products/", {"sku": "85123A", "price": 2.955}, format="json")
    assert updated.status_code == 200
    assert updated.json()["price"] == "2.95"
    assert rounded.json()["price"] == "2.96"
    assert updated.json()["title"] == "White hanging heart T-light holder"
    assert updated.json()["stock"] == 30
    assert Product.objects.count() == 1
    assert list(Category.objects.order_by("slug").values_list("slug", "parent__slug")) == [
        ("home", None),
        ("home-candles-lights", "home"),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"sku": "N1", "price": "1.00"}, "row 1: title: is required for a new product (N1)"),
        (
            {"sku": "N1", "title": "Mug", "price": "-1"},
            "price: Ensure this value is greater than or equal to 0.",
        ),
        (
            {"sku": "N1", "title": "Mug", "price": "1e30"},
            "price: Ensure that there are no more than 10 digits before the decimal point.",
        ),
        (
            {"sku": "N1", "title": "Mug", "price": 1, "currency": "pounds"},
            "currency: This value does not match the required pattern.",
        ),
        (
            {"sku": "N1", "title": "Mug", "price": 1, "image_url": "javascript:alert(1)"},
            "image_url: This value does not match the required pattern.",
        ),
        (
            {"sku": "N1", "title": "Mug", "price": 1, "category": "Home//Mugs"},
            "row 1: category: 'Home//Mugs' has an empty level",
        ),
        ({"sku": "N\x00", "title": "Mug", "price": 1}, "sku: Null characters are not allowed."),
    ],
)
def test_bad_product_input_gets_a_400_that_says_why_and_stores_nothing(api, body, message):
    response = api.post("/api/products/", body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == message
    assert not Product.objects.exists()
    assert not Category.objects.exists()


def test_list_filters_by_category_with_children_stock_activity_and_text(api):
    home = Category.objects.create(name="Home", slug="home")
    kitchen = Category.objects.create(name="Kitchen", slug="home-kitchen", parent=home)
    toys = Category.objects.create(name="Toys", slug="toys")
    _product("A1", category=home, title="Heart sign")
    _product("A2", category=kitchen, title="Polka dot mug", stock=0)
    _product("A3", category=toys, title="Tin robot", active=False)
    _product("A4", category=None, title="Heart garland")

    def skus(query: str) -> list[str]:
        response = api.get(f"/api/products/{query}")
        assert response.status_code == 200
        return [item["sku"] for item in response.json()["results"]]

    assert skus("") == ["A1", "A2", "A3", "A4"]
    assert skus("?category=home") == ["A1", "A2"]
    assert skus("?category=home-kitchen") == ["A2"]
    assert skus("?in_stock=true") == ["A1", "A3", "A4"]
    assert skus("?in_stock=false") == ["A2"]
    assert skus("?active=false") == ["A3"]
    assert skus("?q=heart") == ["A1", "A4"]
    assert skus("?q=a3") == ["A3"]
    assert skus("?limit=2&offset=1") == ["A2", "A3"]
    assert skus("?offset=100000000000000000000000") == []
    bad = api.get("/api/products/?in_stock=maybe")
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == "in_stock: Must be a valid boolean."


def test_product_list_queries_do_not_grow_with_the_page(api, django_assert_num_queries):
    home = Category.objects.create(name="Home", slug="home")
    _product("B0", category=home)
    # The user's and their groups' permissions (then cached on this user), count, page.
    with django_assert_num_queries(4):
        assert api.get("/api/products/").json()["count"] == 1
    for number in range(1, 40):
        _product(f"B{number}", category=home)
    with django_assert_num_queries(2):
        assert len(api.get("/api/products/").json()["results"]) == 40


def test_patch_changes_only_the_given_fields(api):
    product = _product("P1", title="Mug", description="Blue", price=Decimal("4.00"))

    response = api.patch(
        "/api/products/P1/",
        {"price": "3.50", "description": "", "category": "Kitchen/Mugs", "active": False},
        format="json",
    )

    assert response.status_code == 200
    product.refresh_from_db()
    assert product.price == Decimal("3.50")
    assert product.description == ""
    assert product.category is not None
    assert product.category.slug == "kitchen-mugs"
    assert product.active is False
    assert product.title == "Mug"
    assert product.stock == 5
    assert response.json()["category"] == {"slug": "kitchen-mugs", "name": "Mugs"}


def test_patch_rejects_bad_values_and_unknown_skus_without_changes(api):
    product = _product("P1", price=Decimal("4.00"))

    bad = api.patch("/api/products/P1/", {"price": "-2", "title": "New"}, format="json")
    missing = api.patch("/api/products/NOPE/", {"price": "1"}, format="json")
    nul = api.get("/api/products/A%00B/")

    assert bad.status_code == 400
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert nul.status_code == 404
    product.refresh_from_db()
    assert (product.price, product.title) == (Decimal("4.00"), "Item P1")


def test_get_one_product_by_a_sku_with_a_slash(api):
    _product("GIFT/10", title="Gift voucher")

    response = api.get("/api/products/GIFT/10/")

    assert response.status_code == 200
    assert response.json()["title"] == "Gift voucher"


def test_bulk_import_creates_and_updates_in_one_go(api):
    _product("K1", title="Old title", price=Decimal("1.00"))

    response = api.post(
        "/api/products/import/",
        [
            {"sku": "K1", "title": "New title"},
            {"sku": "K2", "title": "Teapot", "price": "12.00", "category": "Kitchen"},
            {"sku": "K3", "title": "Cup", "price": 3, "category": "Kitchen", "stock": 7},
        ],
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == {
        "products_created": 2,
        "products_updated": 1,
        "products_unchanged": 0,
        "categories_created": 1,
    }
    assert dict(Product.objects.values_list("sku", "title")) == {
        "K1": "New title",
        "K2": "Teapot",
        "K3": "Cup",
    }
    assert Product.objects.get(sku="K1").price == Decimal("1.00")


def test_bulk_import_with_one_bad_row_names_it_and_stores_nothing(api):
    _product("K1", title="Old title")

    response = api.post(
        "/api/products/import/",
        [
            {"sku": "K1", "title": "New title"},
            {"sku": "K2", "title": "Teapot", "price": "12.00", "category": "Kitchen"},
            {"sku": "K3", "title": "Cup", "price": "abc"},
        ],
        format="json",
    )
    duplicate = api.post(
        "/api/products/import/",
        [{"sku": "K9", "title": "A", "price": 1}, {"sku": "K9", "title": "B", "price": 2}],
        format="json",
    )
    not_a_list = api.post("/api/products/import/", {"sku": "K4"}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == "row 3: price: A valid number is required."
    assert error["detail"]["row"] == 3
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["message"] == "row 2: sku: 'K9' already appears in row 1"
    assert not_a_list.status_code == 400
    assert list(Product.objects.values_list("sku", "title")) == [("K1", "Old title")]
    assert not Category.objects.exists()


def test_categories_list_with_parents_and_product_counts(api, django_assert_num_queries):
    home = Category.objects.create(name="Home", slug="home")
    kitchen = Category.objects.create(name="Kitchen", slug="home-kitchen", parent=home)
    _product("C1", category=kitchen)
    _product("C2", category=kitchen)

    with django_assert_num_queries(4):  # permissions (user, groups), count, page
        response = api.get("/api/categories/")

    assert response.status_code == 200
    assert [
        (c["slug"], c["name"], c["parent_slug"], c["product_count"])
        for c in response.json()["results"]
    ] == [("home", "Home", None, 0), ("home-kitchen", "Kitchen", "home", 2)]
