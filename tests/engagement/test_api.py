"""The widget's engagement API: write-key auth, "notify me", on-site messages, push."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from commerce.models import Product, Shopper, ShopperAlias, WriteKey
from engagement import services
from engagement.models import Message, ProductWatch, PushSubscription
from tests.engagement.conftest import make_campaign, make_shopper
from tests.support.identity import user_hash

pytestmark = pytest.mark.django_db


def _auth(key: WriteKey) -> dict[str, str]:
    token = base64.b64encode(f"{key.key}:".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.fixture
def lamp() -> Product:
    return Product.objects.create(sku="LAMP", title="Lamp", price=Decimal("40.00"), stock=0)


def test_notify_me_creates_one_watch_and_takes_the_email(client, write_key, lamp):
    body = {
        "anonymous_id": "anon-9",
        "sku": "LAMP",
        "kind": "back_in_stock",
        "email": "Guest@Example.com",
    }

    first = client.post(
        "/api/engagement/notify-requests", body, content_type="application/json", **_auth(write_key)
    )
    again = client.post(
        "/api/engagement/notify-requests", body, content_type="application/json", **_auth(write_key)
    )

    assert first.status_code == 201
    assert again.status_code == 200
    assert first.json() == {
        "id": ProductWatch.objects.get().pk,
        "sku": "LAMP",
        "kind": "back_in_stock",
        "created": True,
    }
    assert again.json()["created"] is False
    shopper = ShopperAlias.objects.get(anonymous_id="anon-9").shopper
    assert shopper.email == "guest@example.com"
    assert ProductWatch.objects.filter(shopper=shopper, product=lamp).count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"sku": "LAMP", "kind": "back_in_stock"}, 400, "invalid"),
        ({"anonymous_id": "a", "sku": "NOPE", "kind": "back_in_stock"}, 404, "product_not_found"),
        ({"anonymous_id": "a", "sku": "LAMP", "kind": "sometime"}, 400, "invalid"),
    ],
)
def test_bad_notify_requests_are_refused_and_change_nothing(
    client, write_key, lamp, body, status, code
):
    response = client.post(
        "/api/engagement/notify-requests", body, content_type="application/json", **_auth(write_key)
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert ProductWatch.objects.count() == 0


def test_the_api_needs_an_active_write_key(client, write_key, lamp):
    body = {"anonymous_id": "a", "sku": "LAMP", "kind": "price_drop"}
    missing = client.post("/api/engagement/notify-requests", body, content_type="application/json")
    WriteKey.objects.filter(pk=write_key.pk).update(active=False)
    inactive = client.post(
        "/api/engagement/notify-requests", body, content_type="application/json", **_auth(write_key)
    )

    assert missing.status_code == 401
    assert inactive.status_code == 401
    assert missing.json()["error"]["code"] == "missing_write_key"
    assert inactive.json()["error"]["code"] == "invalid_write_key"
    assert ProductWatch.objects.count() == 0
    assert Shopper.objects.count() == 0


def _onsite(shopper: Shopper, count: int) -> list[Message]:
    make_campaign(
        steps=[{"channel": "onsite", "subject": "Hi {{ first_name }}", "body": "Free shipping"}]
    )
    for n in range(count):
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key=f"w{n}")
    services.outbox_deliver_batch()
    return list(Message.objects.filter(shopper=shopper).order_by("pk"))


def test_widget_lists_pending_onsite_messages_in_constant_queries(
    client, write_key, identity_secret
):
    shopper = make_shopper(customer_id="c-77", first_name="Eva")
    stranger = make_shopper()
    messages = _onsite(shopper, 3)
    _onsite(stranger, 1)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(
            "/api/engagement/onsite-messages",
            {"user_id": "c-77", "user_hash": user_hash("c-77")},
            **_auth(write_key),
        )

    assert response.status_code == 200
    results = response.json()["results"]
    assert sorted(r["id"] for r in results) == [m.pk for m in messages]
    assert results[0]["title"] == "Hi Eva"
    assert results[0]["body"] == "Free shipping"
    assert len(queries) <= 4


def test_marking_seen_hides_it_and_only_for_its_owner(client, write_key, identity_secret):
    shopper = make_shopper(customer_id="c-1")
    make_shopper(customer_id="c-2")
    message = _onsite(shopper, 1)[0]

    other = client.post(
        f"/api/engagement/onsite-messages/{message.pk}/seen",
        {"user_id": "c-2", "user_hash": user_hash("c-2")},
        content_type="application/json",
        **_auth(write_key),
    )
    own = client.post(
        f"/api/engagement/onsite-messages/{message.pk}/seen",
        {"user_id": "c-1", "user_hash": user_hash("c-1")},
        content_type="application/json",
        **_auth(write_key),
    )
    listed = client.get(
        "/api/engagement/onsite-messages",
        {"user_id": "c-1", "user_hash": user_hash("c-1")},
        **_auth(write_key),
    )

    assert other.status_code == 404
    assert own.status_code == 200
    assert own.json() == {"seen": True}
    assert listed.json() == {"results": []}
    message.refresh_from_db()
    assert message.seen_at is not None
    assert message.seen_at <= timezone.now()


def test_unknown_shopper_has_no_onsite_messages_and_is_not_created(client, write_key):
    response = client.get(
        "/api/engagement/onsite-messages", {"anonymous_id": "never-seen"}, **_auth(write_key)
    )
    assert response.json() == {"results": []}
    assert Shopper.objects.count() == 0


def test_push_subscription_is_saved_for_the_shopper(client, write_key, settings, identity_secret):
    settings.PATRON_VAPID_PUBLIC_KEY = "BPublicKey"
    body = {
        "user_id": "c-5",
        "user_hash": user_hash("c-5"),
        "endpoint": "https://push.example/abc",
        "keys": {"p256dh": "BKey", "auth": "secret"},
    }

    response = client.post(
        "/api/engagement/push-subscriptions",
        body,
        content_type="application/json",
        **_auth(write_key),
    )
    key = client.get("/api/engagement/push-key")

    assert response.status_code == 201
    subscription = PushSubscription.objects.get()
    assert (subscription.shopper.customer_id, subscription.p256dh, subscription.auth) == (
        "c-5",
        "BKey",
        "secret",
    )
    assert key.json() == {"public_key": "BPublicKey"}


def test_a_refused_push_subscription_stores_no_shopper(client, write_key):
    body = {
        "anonymous_id": "anon-push",
        "endpoint": "http://push.example/abc",
        "keys": {"p256dh": "BKey", "auth": "secret"},
    }

    response = client.post(
        "/api/engagement/push-subscriptions",
        body,
        content_type="application/json",
        **_auth(write_key),
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "a push endpoint must be an https URL"
    assert PushSubscription.objects.count() == 0
    assert Shopper.objects.count() == 0
    assert ShopperAlias.objects.count() == 0


def test_schema_documents_the_engagement_api(client, admin_client):
    schema = admin_client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    assert "/api/engagement/notify-requests" in paths
    assert "/api/engagement/onsite-messages/{message_id}/seen" in paths
    assert "writeKey" in schema["components"]["securitySchemes"]
