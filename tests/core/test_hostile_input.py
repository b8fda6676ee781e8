"""Inputs found by fuzzing the public entries: each gets a clear 4xx JSON error, never a 500.

The fix is of the kind (one JSON parser with depth, number and size limits in ``core.parsers``,
one guard against NUL characters in URLs in ``core.middleware``), so each case here stands for
every endpoint that reads JSON or a URL.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from commerce.models import Event, Order, Product, Shopper, WriteKey
from core.exceptions import ValidationError
from core.parsers import json_depth_exceeds, json_loads
from engagement.models import ProductWatch

pytestmark = pytest.mark.django_db


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def key() -> WriteKey:
    return WriteKey.objects.create(name="shop")


@pytest.fixture
def staff_api() -> APIClient:
    staff = get_user_model().objects.create_user(
        username="merchant", password="s3cret-pass", is_staff=True, is_superuser=True
    )
    api = APIClient()
    api.force_authenticate(user=staff)
    return api


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# --- The parser --------------------------------------------------------------------------


def test_depth_is_counted_in_levels_of_arrays_and_objects():
    assert json_depth_exceeds({"a": [1, {"b": 2}]}, 3) is False
    assert json_depth_exceeds({"a": [1, {"b": 2}]}, 2) is True
    assert json_depth_exceeds("text", 0) is False


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[" * 10_000 + b"]" * 10_000, "malformed_json"),  # orjson's own limit: 1024
        (b"[" * 65 + b"]" * 65, "json_too_deep"),
        (b'{"price": 1e9999999}', "malformed_json"),
        (b'{"price": NaN}', "malformed_json"),
        (b'{"a": "\xff"}', "malformed_json"),
    ],
    ids=["10k-brackets", "65-levels", "1e9999999", "NaN", "bad-utf8"],
)
def test_hostile_json_is_a_validation_error(raw, code):
    with pytest.raises(ValidationError) as refused:
        json_loads(raw)

    assert refused.value.code == code


def test_integers_beyond_64_bits_stay_exact_only_when_asked():
    raw = b'{"q": 1000000000000000000000000000000}'

    assert json_loads(raw, exact_integers=True) == {"q": 10**30}
    assert json_loads(raw) == {"q": 1e30}  # what orjson can store again


def test_a_tracked_integer_beyond_64_bits_is_stored_not_a_500(client: Client, key):
    raw = '{"anonymousId": "a-1", "event": "Big", "properties": {"n": ' + "9" * 30 + "}}"

    response = client.post(
        "/v1/track", data=raw, content_type="application/json", headers=_basic(key.key)
    )

    assert response.status_code == 200, response.content[:300]
    assert Event.objects.get().properties == {"n": 10**30}  # 1e30 as jsonb gives it back


def test_json_at_the_depth_limit_is_accepted():
    value = json_loads(b'{"a": ' * 63 + b"1" + b"}" * 63 + b"")

    assert json_depth_exceeds(value, 63) is False
    assert json_depth_exceeds(value, 62) is True


# --- The endpoints -----------------------------------------------------------------------


def test_track_with_properties_nested_256_deep_is_400_and_stores_nothing(client: Client, key):
    # 257 levels: deeper than orjson.dumps takes (254), which the old code reached with a 500.
    body = {"anonymousId": "a-1", "event": "Deep", "properties": _nested(256)}
    raw = json.dumps(body)

    response = client.post(
        "/v1/track", data=raw, content_type="application/json", headers=_basic(key.key)
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "json_too_deep"
    assert Event.objects.count() == 0
    assert Shopper.objects.count() == 0


def test_notify_requests_with_10000_nested_brackets_is_400(client: Client, key):
    Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("10.00"), stock=0)
    raw = '{"sku": "LAMP", "kind": "back_in_stock", "anonymous_id": ' + "[" * 10_000
    raw += "]" * 10_000 + "}"

    response = client.post(
        "/api/engagement/notify-requests",
        data=raw,
        content_type="application/json",
        headers=_basic(key.key),
    )

    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["code"] == "parse_error"
    assert ProductWatch.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/products/%00/", 404, "not_found"),
        ("/api/products/%00/", 404, "not_found"),
        ("/products/?q=%00", 400, "invalid_character"),
        ("/api/products/?search=a%00b", 400, "invalid_character"),
    ],
)
def test_a_nul_character_in_the_url_is_a_4xx_json(client: Client, staff_api, path, status, code):
    response = (staff_api if path.startswith("/api/") else client).get(path)

    assert response.status_code == status, response.content[:300]
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize("price", ["1e9999999", "-1e9999999"])
@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("post", "/api/products/", '{{"sku": "NEW", "title": "New", "price": {price}}}'),
        ("patch", "/api/products/MUG/", '{{"price": {price}}}'),
        ("post", "/api/products/import/", '{{"products": [{{"sku": "N2", "price": {price}}}]}}'),
        (
            "post",
            "/api/orders/",
            '{{"number": "9", "customer_id": "c-1", "lines": '
            '[{{"sku": "MUG", "quantity": 1, "unit_price": {price}}}]}}',
        ),
    ],
    ids=["create", "patch", "import", "order"],
)
def test_staff_api_numbers_beyond_a_double_are_refused_by_the_parser(
    staff_api, method, path, template, price
):
    Product.objects.create(sku="MUG", title="Mug", price=Decimal("4.00"), stock=1)

    response = getattr(staff_api, method)(
        path, data=template.format(price=price), content_type="application/json"
    )

    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["code"] == "parse_error"
    assert list(Product.objects.values_list("sku", "price")) == [("MUG", Decimal("4.00"))]
    assert not Order.objects.exists()


def test_a_body_over_the_upload_limit_is_413_json(staff_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = staff_api.post(
        "/api/products/",
        data='{"sku": "BIG", "title": "' + "x" * 2000 + '", "price": 1}',
        content_type="application/json",
    )

    assert response.status_code == 413, response.content[:300]
    assert response.json()["error"]["code"] == "payload_too_large"
    assert Product.objects.count() == 0
