"""Verified identity on the widget's engagement API (issue #8, section 1).

``user_id`` counts only with ``user_hash`` = hex(HMAC-SHA256(identity secret, user_id)).
Without it (or with a wrong one) every endpoint acts on the anonymous shopper only: it lists
none of the customer's on-site messages, marks none seen, and attaches no watch or push
subscription to the customer. An anonymous id that belongs to a known customer grants nothing.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import pytest

from commerce.models import Product, Shopper, ShopperAlias, WriteKey
from engagement.models import Message, ProductWatch, PushSubscription
from tests.engagement.conftest import make_shopper
from tests.engagement.test_api import _onsite
from tests.support.identity import user_hash

pytestmark = pytest.mark.django_db

WRONG = [None, "", "0" * 64, user_hash("c-ana", "another-secret"), user_hash("c-bob")]
WRONG_IDS = ["none", "empty", "zeros", "other-secret", "other-customer"]


def _auth(key: WriteKey) -> dict[str, str]:
    token = base64.b64encode(f"{key.key}:".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.fixture
def ana(identity_secret: str) -> Shopper:
    shopper = make_shopper(customer_id="c-ana", email="ana@example.com", first_name="Ana")
    ShopperAlias.objects.create(anonymous_id="anon-ana", shopper=shopper)
    return shopper


@pytest.fixture
def lamp() -> Product:
    return Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)


def _claim(proof: str | None, **fields: Any) -> dict[str, Any]:
    body = {"user_id": "c-ana", **fields}
    if proof is not None:
        body["user_hash"] = proof
    return body


@pytest.mark.parametrize("proof", WRONG, ids=WRONG_IDS)
def test_onsite_messages_of_a_customer_need_her_proof(client, write_key, ana, proof):
    messages = _onsite(ana, 2)

    claimed = client.get("/api/engagement/onsite-messages", _claim(proof), **_auth(write_key))
    by_device = client.get(
        "/api/engagement/onsite-messages", {"anonymous_id": "anon-ana"}, **_auth(write_key)
    )
    proven = client.get(
        "/api/engagement/onsite-messages", _claim(user_hash("c-ana")), **_auth(write_key)
    )

    assert (claimed.status_code, claimed.json()) == (200, {"results": []})
    assert (by_device.status_code, by_device.json()) == (200, {"results": []})
    assert sorted(r["id"] for r in proven.json()["results"]) == [m.pk for m in messages]


@pytest.mark.parametrize("proof", WRONG, ids=WRONG_IDS)
def test_marking_a_customers_message_seen_needs_her_proof(client, write_key, ana, proof):
    message = _onsite(ana, 1)[0]
    url = f"/api/engagement/onsite-messages/{message.pk}/seen"

    claimed = client.post(url, _claim(proof), content_type="application/json", **_auth(write_key))
    by_device = client.post(
        url, {"anonymous_id": "anon-ana"}, content_type="application/json", **_auth(write_key)
    )

    assert claimed.status_code == 404
    assert by_device.status_code == 404
    message.refresh_from_db()
    assert message.seen_at is None
    assert Message.objects.filter(seen_at__isnull=False).count() == 0


@pytest.mark.parametrize("proof", WRONG, ids=WRONG_IDS)
def test_notify_me_without_proof_acts_on_the_anonymous_shopper_only(
    client, write_key, ana, lamp, proof
):
    body = _claim(proof, anonymous_id="anon-evil", sku="LAMP", kind="back_in_stock")
    body["email"] = "evil@example.net"

    response = client.post(
        "/api/engagement/notify-requests", body, content_type="application/json", **_auth(write_key)
    )

    assert response.status_code == 201
    evil = ShopperAlias.objects.get(anonymous_id="anon-evil").shopper
    assert (evil.customer_id, evil.email) == (None, "evil@example.net")
    assert list(ProductWatch.objects.values_list("shopper_id", flat=True)) == [evil.pk]
    ana.refresh_from_db()
    assert (ana.email, ana.merged_into_id, ana.aliases.count()) == ("ana@example.com", None, 1)


def test_a_claimed_user_id_without_proof_or_anonymous_id_is_refused(
    client, write_key, ana, lamp, settings
):
    settings.PATRON_VAPID_PUBLIC_KEY = "BPublicKey"
    notify = client.post(
        "/api/engagement/notify-requests",
        _claim(None, sku="LAMP", kind="price_drop"),
        content_type="application/json",
        **_auth(write_key),
    )
    push = client.post(
        "/api/engagement/push-subscriptions",
        _claim("0" * 64, endpoint="https://push.example/x", keys={"p256dh": "B", "auth": "a"}),
        content_type="application/json",
        **_auth(write_key),
    )

    assert (notify.status_code, notify.json()["error"]["code"]) == (403, "identity_unverified")
    assert (push.status_code, push.json()["error"]["code"]) == (403, "identity_unverified")
    assert ProductWatch.objects.count() == 0
    assert PushSubscription.objects.count() == 0
    assert Shopper.objects.count() == 1


@pytest.mark.parametrize("proof", WRONG, ids=WRONG_IDS)
def test_a_push_subscription_without_proof_is_not_the_customers(client, write_key, ana, proof):
    body = _claim(
        proof,
        anonymous_id="anon-evil",
        endpoint="https://push.example/evil",
        keys={"p256dh": "BKey", "auth": "secret"},
    )

    response = client.post(
        "/api/engagement/push-subscriptions",
        body,
        content_type="application/json",
        **_auth(write_key),
    )

    assert response.status_code == 201
    subscription = PushSubscription.objects.get()
    assert subscription.shopper_id == ShopperAlias.objects.get(anonymous_id="anon-evil").shopper_id
    assert subscription.shopper_id != ana.pk
    assert not PushSubscription.objects.filter(shopper=ana).exists()


def test_a_customers_anonymous_id_alone_starts_a_new_anonymous_shopper(
    client, write_key, ana, lamp
):
    # The next person on Ana's computer after she logged out asks to be notified.
    response = client.post(
        "/api/engagement/notify-requests",
        {"anonymous_id": "anon-ana", "sku": "LAMP", "kind": "back_in_stock", "email": "n@x.org"},
        content_type="application/json",
        **_auth(write_key),
    )

    assert response.status_code == 201
    newcomer = ShopperAlias.objects.get(anonymous_id="anon-ana").shopper
    assert newcomer.pk != ana.pk
    assert newcomer.customer_id is None
    assert newcomer.email == "n@x.org"
    assert list(ProductWatch.objects.values_list("shopper_id", flat=True)) == [newcomer.pk]
    ana.refresh_from_db()
    assert ana.email == "ana@example.com"


def test_with_her_proof_notify_me_is_the_customers(client, write_key, ana, lamp):
    response = client.post(
        "/api/engagement/notify-requests",
        _claim(user_hash("c-ana"), anonymous_id="anon-phone", sku="LAMP", kind="back_in_stock"),
        content_type="application/json",
        **_auth(write_key),
    )

    assert response.status_code == 201
    assert list(ProductWatch.objects.values_list("shopper_id", flat=True)) == [ana.pk]
    assert ShopperAlias.objects.get(anonymous_id="anon-phone").shopper_id == ana.pk
