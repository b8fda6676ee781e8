"""#8 §3 Abuse limits over HTTP: 429 with Retry-After and the one error format, nothing stored.

The counters live in the test Redis; the autouse ``_clear_cache`` fixture flushes it after each
test, so every test starts with empty windows.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.test import Client, override_settings

from commerce.models import Event, Product, WriteKey
from config.env import ConfigurationError, env_rate
from core.ratelimit import TokenBucket, client_address
from engagement.models import ProductWatch
from tests.commerce.tracking_support import post, track

pytestmark = pytest.mark.django_db


def _limits(**overrides: tuple[int, int] | None) -> Any:
    from django.conf import settings

    return override_settings(PATRON_RATE_LIMITS={**settings.PATRON_RATE_LIMITS, **overrides})


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


# --- Tracking API ------------------------------------------------------------------------


def test_tracking_is_limited_per_write_key_and_address_with_429_and_retry_after(
    django_capture_on_commit_callbacks: Any,
) -> None:
    key = WriteKey.objects.create(name="shop").key
    other_key = WriteKey.objects.create(name="app").key
    client = Client(REMOTE_ADDR="203.0.113.7")
    neighbour = Client(REMOTE_ADDR="203.0.113.8")

    with _limits(tracking=(2, 60)), django_capture_on_commit_callbacks(execute=True):
        first = post(client, "/v1/track", track("m-1"), key=key)
        second = post(client, "/v1/batch", {"batch": [track("m-2"), track("m-3")]}, key=key)
        refused = post(client, "/v1/track", track("m-4"), key=key)
        other_key_ok = post(client, "/v1/track", track("o-1"), key=other_key)
        other_address_ok = post(neighbour, "/v1/track", track("n-1"), key=key)

    assert [first.status_code, second.status_code] == [200, 200]  # a batch counts once
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    body = refused.json()
    assert body["success"] is False
    assert body["code"] == "rate_limited"
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["detail"]["retry_after"] == int(refused["Retry-After"])
    assert (other_key_ok.status_code, other_address_ok.status_code) == (200, 200)
    assert sorted(Event.objects.values_list("message_id", flat=True)) == [
        "m-1",
        "m-2",
        "m-3",
        "n-1",
        "o-1",
    ]


def test_a_forged_x_forwarded_for_does_not_escape_the_limit() -> None:
    key = WriteKey.objects.create(name="shop").key
    with _limits(tracking=(1, 60)):
        ok = post(Client(REMOTE_ADDR="203.0.113.7"), "/v1/track", track("m-1"), key=key)
        forged = Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="198.51.100.1")
        refused = post(forged, "/v1/track", track("m-2"), key=key)
    assert (ok.status_code, refused.status_code) == (200, 429)


def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_apart() -> None:
    key = WriteKey.objects.create(name="shop").key
    with _limits(tracking=(1, 60)), override_settings(PATRON_TRUSTED_PROXIES=["10.0.0.0/8"]):
        one = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.1")
        two = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.2")
        statuses = [
            post(one, "/v1/track", track("a-1"), key=key).status_code,
            post(two, "/v1/track", track("b-1"), key=key).status_code,
            post(one, "/v1/track", track("a-2"), key=key).status_code,
        ]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.7", None, [], "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", [], "203.0.113.7"),  # untrusted peer: header ignored
        ("10.0.0.2", "198.51.100.1", ["10.0.0.0/8"], "198.51.100.1"),
        # The client may prepend anything: read from the right, skip trusted proxies.
        ("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.9", ["10.0.0.0/8"], "198.51.100.1"),
        ("10.0.0.2", "garbage", ["10.0.0.0/8"], "10.0.0.2"),
        ("", None, [], "unknown"),
    ],
)
def test_client_address_believes_x_forwarded_for_only_from_trusted_proxies(
    remote: str, forwarded: str | None, trusted: list[str], expected: str
) -> None:
    with override_settings(PATRON_TRUSTED_PROXIES=trusted):
        assert client_address(remote_addr=remote, forwarded_for=forwarded) == expected


def test_rate_settings_are_parsed_and_bad_values_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_RATE", "600/m")
    assert env_rate("X_RATE", "1/1") == (600, 60)
    monkeypatch.setenv("X_RATE", "off")
    assert env_rate("X_RATE", "1/1") is None
    monkeypatch.delenv("X_RATE")
    assert env_rate("X_RATE", "20/3600") == (20, 3600)
    for bad in ("lots", "5/fortnight", "0/60", "-1/60"):
        monkeypatch.setenv("X_RATE", bad)
        with pytest.raises(ConfigurationError):
            env_rate("X_RATE", "1/1")


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=1000.0, burst=3)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take()
    assert 0 < wait <= 0.001


# --- Widget API (engagement) -------------------------------------------------------------


def test_widget_api_is_limited_per_write_key_and_address() -> None:
    key = WriteKey.objects.create(name="shop").key
    client = Client(REMOTE_ADDR="203.0.113.7")
    path = "/api/engagement/onsite-messages?anonymous_id=a-1"
    with _limits(widget=(2, 60)):
        statuses = [client.get(path, headers=_basic(key)).status_code for _ in range(3)]
        refused = client.get(path, headers=_basic(key))
    assert statuses == [200, 200, 429]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert int(refused["Retry-After"]) >= 1


def test_notify_me_emails_to_one_recipient_are_limited_whoever_asks() -> None:
    key = WriteKey.objects.create(name="shop").key
    Product.objects.create(sku="LAMP", title="Lamp", price=10, stock=0)

    def ask(address: str, anonymous_id: str) -> int:
        body = {"sku": "LAMP", "kind": "back_in_stock", "anonymous_id": anonymous_id}
        body["email"] = "victim@example.com"
        return (
            Client(REMOTE_ADDR=address)
            .post(
                "/api/engagement/notify-requests",
                json.dumps(body),
                content_type="application/json",
                headers=_basic(key),
            )
            .status_code
        )

    with _limits(email_recipient=(2, 3600)):
        statuses = [ask("203.0.113.1", "a-1"), ask("203.0.113.2", "a-2"), ask("203.0.113.3", "a-3")]

    assert statuses == [201, 201, 429]
    assert ProductWatch.objects.count() == 2
