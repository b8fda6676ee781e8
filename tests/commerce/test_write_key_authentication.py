"""One write-key authentication for every entry a store's key opens: the tracking API, the
widget APIs and the coupon API refuse a missing, malformed, unknown or inactive key alike, and
store nothing."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest

from commerce.models import Event, Product, Shopper, WriteKey
from engagement.models import ProductWatch
from tests.commerce.tracking_support import track

pytestmark = pytest.mark.django_db

ENTRIES = {
    "tracking": ("/v1/track", track("m-1", anonymousId="anon-1")),
    "widget": (
        "/api/engagement/notify-requests",
        {"anonymous_id": "anon-1", "sku": "LAMP", "kind": "back_in_stock"},
    ),
}
REFUSING = {**ENTRIES, "coupons": ("/v1/coupons/redeem", {"code": "X", "orderId": "1"})}


def _basic(username: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:".encode()).decode()


@pytest.fixture
def lamp() -> Product:
    return Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)


@pytest.mark.parametrize("entry", sorted(REFUSING))
@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_write_key"),
        (_basic(""), "missing_write_key"),
        ("Basic !!!not-base64", "invalid_write_key"),
        (_basic("no-such-key"), "invalid_write_key"),
        ("inactive", "invalid_write_key"),
    ],
)
def test_every_key_entry_refuses_a_bad_key_alike_and_stores_nothing(
    client, lamp, entry, authorization, code
):
    path, body = REFUSING[entry]
    if authorization == "inactive":
        authorization = _basic(WriteKey.objects.create(name="old", active=False).key)
    headers = {"Authorization": authorization} if authorization else {}

    response = client.post(
        path, data=json.dumps(body), content_type="application/json", headers=headers
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response["WWW-Authenticate"] == 'Basic realm="patron"'
    assert (Event.objects.count(), ProductWatch.objects.count(), Shopper.objects.count()) == (
        0,
        0,
        0,
    )


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_key_entry_takes_the_key_as_the_basic_username(
    client, lamp, entry, django_capture_on_commit_callbacks
):
    path, body = ENTRIES[entry]
    key = WriteKey.objects.create(name="shop", server_side=True).key

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            path,
            data=json.dumps(body),
            content_type="application/json",
            headers={
                "Authorization": "Basic " + base64.b64encode(f"{key}:ignored".encode()).decode()
            },
        )

    assert response.status_code in (200, 201)
    assert Event.objects.count() + ProductWatch.objects.count() == 1


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_a_cors_preflight_needs_no_key(client, entry):
    path, _ = ENTRIES[entry]

    response = client.options(
        path,
        headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 204
