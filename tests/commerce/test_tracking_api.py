"""The Segment-compatible tracking endpoints: what they store, and what they refuse."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from typing import Any

import pytest

from commerce.models import Event, Shopper, ShopperAlias, WriteKey
from tests.commerce.tracking_support import SENT_AT, basic_auth, post, track

pytestmark = pytest.mark.django_db

UTC = dt.UTC


@pytest.fixture
def key() -> str:
    """A server-side key: these tests are about the Segment semantics a store's servers get
    (browser keys and verified identity: test_tracking_identity.py)."""
    return WriteKey.objects.create(name="web shop", server_side=True).key


def _assert_nothing_stored() -> None:
    assert Event.objects.count() == 0
    assert Shopper.objects.count() == 0
    assert ShopperAlias.objects.count() == 0


# --- Every endpoint ----------------------------------------------------------------------

SINGLE_CALLS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "identify",
        {"userId": "c-1", "traits": {"email": "ana@example.com"}},
        {"type": "identify", "name": "", "properties": {"email": "ana@example.com"}},
    ),
    (
        "track",
        {"anonymousId": "a-1", "event": "Product Viewed", "properties": {"sku": "M1"}},
        {"type": "track", "name": "Product Viewed", "properties": {"sku": "M1"}},
    ),
    (
        "page",
        {"anonymousId": "a-1", "name": "Home", "properties": {"path": "/"}},
        {"type": "page", "name": "Home", "properties": {"path": "/"}},
    ),
    (
        "screen",
        {"anonymousId": "a-1", "name": "Cart", "properties": {"items": 2}},
        {"type": "screen", "name": "Cart", "properties": {"items": 2}},
    ),
    (
        "group",
        {"userId": "c-1", "groupId": "acme", "traits": {"plan": "pro"}},
        {"type": "group", "name": "acme", "properties": {"plan": "pro"}},
    ),
    (
        "alias",
        {"previousId": "a-1", "userId": "c-1"},
        {"type": "alias", "name": "", "properties": {"previousId": "a-1"}},
    ),
]


@pytest.mark.parametrize("prefix", ["/v1/", "/api/v1/"])
@pytest.mark.parametrize(("endpoint", "body", "expected"), SINGLE_CALLS, ids=lambda v: str(v)[:12])
def test_each_endpoint_stores_its_call_once(client, key, prefix, endpoint, body, expected):
    body = {**body, "messageId": "m-1", "timestamp": "2024-05-01T10:00:00Z"}

    response = post(client, prefix + endpoint, body, key=key)

    assert response.status_code == 200, response.content
    assert response.json() == {"success": True}
    event = Event.objects.get()
    assert {
        "type": event.type,
        "name": event.name,
        "properties": event.properties,
    } == expected
    assert event.message_id == "m-1"
    assert event.source.key == key
    assert event.timestamp == dt.datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert event.processed_at is None
    assert event.shopper is not None


def test_batch_stores_every_call_with_the_batch_context_merged(client, key):
    body = {
        "batch": [
            track("m-1", context={"page": {"path": "/p/1"}}),
            {"type": "page", "messageId": "m-2", "anonymousId": "anon-1", "name": "Home"},
            {"type": "identify", "messageId": "m-3", "userId": "c-9", "traits": {"plan": "x"}},
        ],
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    }

    response = post(client, "/v1/batch", body, key=key)

    assert response.status_code == 200, response.content
    events = {e.message_id: e for e in Event.objects.all()}
    assert sorted(events) == ["m-1", "m-2", "m-3"]
    assert events["m-1"].context == {
        "library": {"name": "analytics-python", "version": "2.4.0"},
        "page": {"path": "/p/1"},
    }
    assert events["m-1"].shopper_id == events["m-2"].shopper_id
    assert events["m-3"].shopper == Shopper.objects.get(customer_id="c-9")
    assert events["m-3"].user_id == "c-9"
    assert Shopper.objects.count() == 2


def test_write_key_may_come_in_the_body_like_analytics_js_sends_it(client, key):
    body = {"batch": [track("m-1")], "writeKey": key}

    response = post(client, "/v1/batch", body, key=None, content_type="text/plain")

    assert response.status_code == 200, response.content
    assert Event.objects.count() == 1


def test_gzip_bodies_from_segment_libraries_are_inflated(client, key):
    response = post(client, "/v1/batch", {"batch": [track("m-1")]}, key=key, compress=True)

    assert response.status_code == 200, response.content
    assert Event.objects.get().properties == {"product_id": "SKU-1", "price": 12.5}


def test_a_missing_message_id_gets_one_so_the_call_is_still_stored(client, key):
    call = track("unused")
    del call["messageId"]

    response = post(client, "/v1/batch", {"batch": [call, call]}, key=key)

    assert response.status_code == 200
    ids = list(Event.objects.values_list("message_id", flat=True))
    assert len(ids) == 2
    assert len(set(ids)) == 2


def test_the_clients_clock_is_corrected_by_sent_at_like_segment_does(client, key):
    # The client's clock runs 10 minutes fast: it says it sent at 12:10 what happened at 12:09.
    call = track("m-1", timestamp="2024-05-01T12:09:00Z")
    before = dt.datetime.now(UTC)

    post(client, "/v1/batch", {"batch": [call], "sentAt": "2024-05-01T12:10:00Z"}, key=key)

    event = Event.objects.get()
    assert event.timestamp == event.received_at - dt.timedelta(minutes=1)
    assert event.received_at >= before


def test_offsets_postgresql_cannot_store_are_converted_to_utc(client, key):
    call = track("m-1", timestamp="2024-05-01T12:00:00-22:03")

    assert post(client, "/v1/batch", {"batch": [call]}, key=key).status_code == 200

    assert Event.objects.get().timestamp == dt.datetime(2024, 5, 2, 10, 3, tzinfo=UTC)


def test_a_future_timestamp_is_stored_as_the_time_received(client, key):
    # A phone whose clock runs a year ahead, with or without sentAt to correct it.
    before = dt.datetime.now(UTC)
    calls = [
        track("m-1", timestamp="2090-01-01T00:00:00Z"),
        track("m-2", originalTimestamp="2090-01-01T00:00:00Z", sentAt="2024-05-01T12:00:00Z"),
    ]

    response = post(client, "/v1/batch", {"batch": calls}, key=key)

    assert response.status_code == 200
    after = dt.datetime.now(UTC)
    events = list(Event.objects.order_by("message_id"))
    assert [e.timestamp == e.received_at for e in events] == [True, True]
    assert all(before <= e.timestamp <= after for e in events)


def test_a_past_timestamp_is_kept_as_the_client_said(client, key):
    post(client, "/v1/batch", {"batch": [track("m-1", timestamp="2020-01-01T00:00:00Z")]}, key=key)

    assert Event.objects.get().timestamp == dt.datetime(2020, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("user_id", [17850, 17850.0, "17850"], ids=["int", "float", "text"])
def test_a_whole_number_user_id_is_one_customer_whatever_its_json_type(client, key, user_id):
    Shopper.objects.create(customer_id="17850")

    post(client, "/v1/identify", {"userId": user_id, "messageId": "m-1"}, key=key)

    assert Event.objects.get().user_id == "17850"
    assert list(Shopper.objects.values_list("customer_id", flat=True)) == ["17850"]


def test_a_fractional_user_id_keeps_its_fraction(client, key):
    post(client, "/v1/identify", {"userId": 17850.5, "messageId": "m-1"}, key=key)

    assert Event.objects.get().user_id == "17850.5"


# --- CORS and origins --------------------------------------------------------------------

SEGMENT_PATHS = ["t", "i", "p", "s", "g", "a", "b", "m"]


@pytest.mark.parametrize("prefix", ["/v1/", "/api/v1/"])
@pytest.mark.parametrize("path", [*SEGMENT_PATHS, "batch", "track"])
def test_preflights_allow_what_segments_browser_library_sends(client, prefix, path):
    response = client.options(
        prefix + path,
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
    )

    assert response.status_code == 204
    # Echoed with credentials: analytics-next may send credentials: "include".
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response["Vary"]
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]
    _assert_nothing_stored()


def test_a_call_without_origin_gets_the_wildcard_and_no_credentials(client, key):
    response = post(client, "/v1/track", track("m-1"), key=key)

    assert response["Access-Control-Allow-Origin"] == "*"
    assert not response.has_header("Access-Control-Allow-Credentials")


SHORT_CALLS: list[tuple[str, dict[str, Any], str, str]] = [
    ("t", {"anonymousId": "a-1", "event": "Product Viewed"}, "track", "Product Viewed"),
    ("i", {"userId": "c-1", "traits": {"plan": "pro"}}, "identify", ""),
    ("p", {"anonymousId": "a-1", "name": "Home"}, "page", "Home"),
    ("s", {"anonymousId": "a-1", "name": "Cart"}, "screen", "Cart"),
    ("g", {"userId": "c-1", "groupId": "acme"}, "group", "acme"),
    ("a", {"previousId": "a-1", "userId": "c-1"}, "alias", ""),
]


@pytest.mark.parametrize(("path", "body", "kind", "name"), SHORT_CALLS, ids=lambda v: str(v)[:8])
def test_segment_browser_paths_store_their_call_from_text_plain(
    client, key, path, body, kind, name
):
    # analytics-next sends text/plain (a "simple" content type) with the write key in the body
    # as well as in Basic auth.
    body = {**body, "messageId": "m-1", "writeKey": key}

    response = post(client, "/v1/" + path, body, key=key, content_type="text/plain")

    assert response.status_code == 200, response.content
    assert response["Access-Control-Allow-Origin"] == "*"
    assert list(Event.objects.values_list("type", "name", "message_id")) == [(kind, name, "m-1")]


def test_the_libraries_usage_metrics_are_accepted_and_not_stored(client):
    response = client.post(
        "/v1/m",
        data='{"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1}]}',
        content_type="text/plain",
        headers={"Origin": "https://shop.example"},
    )

    assert response.status_code == 200
    assert response.json() == {"success": True}
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    _assert_nothing_stored()


@pytest.mark.parametrize("path", ["/v1/b", "/v1/batch", "/api/v1/t", "/v1/track"])
def test_a_key_that_lists_origins_refuses_calls_from_other_origins(client, path):
    key = WriteKey.objects.create(name="shop", allowed_origins=["https://shop.example/"])
    call = track("m-1")
    body = {"batch": [call]} if path.endswith(("/b", "batch")) else call

    def send(origin: str) -> Any:
        return client.post(
            path,
            data=json.dumps(body),
            content_type="text/plain",
            headers={"Authorization": basic_auth(key.key), "Origin": origin},
        )

    refused = send("https://evil.example")
    nothing_after_refusal = Event.objects.count()
    allowed = send("https://SHOP.example")

    assert refused.status_code == 403
    assert refused.json()["code"] == "origin_not_allowed"
    assert nothing_after_refusal == 0
    assert allowed.status_code == 200, allowed.content
    assert Event.objects.count() == 1


@pytest.mark.parametrize("allowed_hosts", [["*"], ["testserver"]])
@pytest.mark.parametrize(
    "origin", ["https://any.example", "null", "http://testserver.evil.example"]
)
def test_a_key_without_origins_refuses_every_other_page_in_every_mode(
    client, key, settings, allowed_hosts, origin
):
    # ALLOWED_HOSTS = ["*"] is the development default: it must not open the key to every page.
    settings.ALLOWED_HOSTS = allowed_hosts

    response = client.post(
        "/v1/t",
        data=json.dumps(track("m-1")),
        content_type="text/plain",
        headers={"Authorization": basic_auth(key), "Origin": origin},
    )

    assert response.status_code == 403
    assert response.json()["code"] == "origin_not_allowed"
    assert Event.objects.count() == 0


@pytest.mark.parametrize("allowed_hosts", [["*"], ["testserver"]])
def test_a_key_without_origins_takes_calls_from_patrons_own_pages(
    client, key, settings, allowed_hosts
):
    settings.ALLOWED_HOSTS = allowed_hosts

    response = client.post(
        "/v1/t",
        data=json.dumps(track("m-1")),
        content_type="text/plain",
        headers={"Authorization": basic_auth(key), "Origin": "http://testserver"},
    )

    assert response.status_code == 200, response.content
    assert Event.objects.count() == 1


def test_a_transient_database_failure_is_503_with_retry_after(client, key, monkeypatch):
    from django.db import OperationalError

    from commerce import tracking

    def unavailable(**kwargs: Any) -> None:
        raise OperationalError("canceling statement due to lock timeout")

    monkeypatch.setattr(tracking, "events_ingest", unavailable)

    response = post(client, "/v1/batch", {"batch": [track("m-1")]}, key=key)

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["code"] == "service_unavailable"
    assert "Retry-After" in response["Access-Control-Expose-Headers"]
    assert Event.objects.count() == 0


# --- Deduplication -----------------------------------------------------------------------


def test_a_replayed_batch_is_accepted_and_stored_once(
    client, key, django_capture_on_commit_callbacks
):
    body = {"batch": [track("m-1"), track("m-2", event="Product Added")], "sentAt": SENT_AT}

    with django_capture_on_commit_callbacks() as first_callbacks:
        first = post(client, "/v1/batch", body, key=key)
    with django_capture_on_commit_callbacks() as replay_callbacks:
        replay = post(client, "/v1/batch", body, key=key)

    assert first.status_code == replay.status_code == 200
    assert replay.json() == {"success": True}
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["m-1", "m-2"]
    assert len(first_callbacks) == 1  # one processing task for the new events
    assert replay_callbacks == []  # nothing new, nothing queued


def test_a_partly_replayed_batch_stores_only_the_new_calls(
    client, key, django_capture_on_commit_callbacks
):
    post(client, "/v1/batch", {"batch": [track("m-1")]}, key=key)
    first_id = Event.objects.get().pk

    with django_capture_on_commit_callbacks() as callbacks:
        response = post(client, "/v1/batch", {"batch": [track("m-1"), track("m-2")]}, key=key)

    assert response.status_code == 200
    assert Event.objects.get(message_id="m-1").pk == first_id
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["m-1", "m-2"]
    assert len(callbacks) == 1


def test_duplicates_inside_one_batch_are_stored_once(client, key):
    response = post(client, "/v1/batch", {"batch": [track("m-1"), track("m-1")]}, key=key)

    assert response.status_code == 200
    assert Event.objects.count() == 1


def test_the_same_message_id_from_two_sources_is_two_events(client, key):
    other = WriteKey.objects.create(name="app").key

    post(client, "/v1/track", track("m-1"), key=key)
    post(client, "/v1/track", track("m-1"), key=other)

    assert Event.objects.count() == 2


# --- Identity ----------------------------------------------------------------------------


def test_identify_merges_the_anonymous_visitor_into_the_customer(client, key):
    post(client, "/v1/page", {"anonymousId": "anon-7", "name": "Home", "messageId": "m-1"}, key=key)
    visitor = Shopper.objects.get()
    post(client, "/v1/identify", {"userId": "c-7", "messageId": "m-0"}, key=key)
    customer = Shopper.objects.get(customer_id="c-7")

    response = post(
        client,
        "/v1/identify",
        {"userId": "c-7", "anonymousId": "anon-7", "messageId": "m-2"},
        key=key,
    )

    assert response.status_code == 200
    visitor.refresh_from_db()
    assert visitor.merged_into_id == customer.pk
    assert set(Event.objects.values_list("shopper_id", flat=True)) == {customer.pk}
    assert ShopperAlias.objects.get(anonymous_id="anon-7").shopper_id == customer.pk
    # Later anonymous calls from that browser land on the customer.
    post(client, "/v1/track", track("m-3", anonymousId="anon-7"), key=key)
    assert Event.objects.get(message_id="m-3").shopper_id == customer.pk


def test_a_login_inside_one_batch_attributes_the_whole_visit_to_the_customer(client, key):
    body = {
        "batch": [
            {"type": "page", "messageId": "m-1", "anonymousId": "anon-8"},
            {"type": "identify", "messageId": "m-2", "anonymousId": "anon-8", "userId": "c-8"},
            track("m-3", userId="c-8", anonymousId="anon-8"),
        ]
    }

    post(client, "/v1/batch", body, key=key)

    customer = Shopper.objects.get()
    assert customer.customer_id == "c-8"
    assert set(Event.objects.values_list("shopper_id", flat=True)) == {customer.pk}
    assert ShopperAlias.objects.get().shopper_id == customer.pk


def test_alias_merges_the_previous_id_into_the_user(client, key):
    post(client, "/v1/track", track("m-1", anonymousId="anon-9"), key=key)
    visitor = Shopper.objects.get()

    response = post(
        client, "/v1/alias", {"previousId": "anon-9", "userId": "c-9", "messageId": "m-2"}, key=key
    )

    assert response.status_code == 200
    customer = Shopper.objects.get(customer_id="c-9")
    visitor.refresh_from_db()
    assert visitor.merged_into_id == customer.pk
    assert Event.objects.get(message_id="m-1").shopper_id == customer.pk
    assert Event.objects.get(message_id="m-2").shopper_id == customer.pk


def test_alias_of_an_earlier_user_id_merges_the_two_customers(client, key):
    post(client, "/v1/identify", {"userId": "old-id", "messageId": "m-1"}, key=key)
    post(client, "/v1/identify", {"userId": "new-id", "messageId": "m-2"}, key=key)

    post(
        client,
        "/v1/alias",
        {"previousId": "old-id", "userId": "new-id", "messageId": "m-3"},
        key=key,
    )

    old, new = Shopper.objects.get(customer_id="old-id"), Shopper.objects.get(customer_id="new-id")
    assert old.merged_into_id == new.pk
    assert set(Event.objects.values_list("shopper_id", flat=True)) == {new.pk}
    # A later call under the old id resolves to the surviving shopper.
    post(client, "/v1/track", track("m-4", userId="old-id"), key=key)
    assert Event.objects.get(message_id="m-4").shopper_id == new.pk


def test_a_shared_device_never_merges_two_customers(client, key):
    post(
        client,
        "/v1/identify",
        {"userId": "c-1", "anonymousId": "kiosk", "messageId": "m-1"},
        key=key,
    )

    post(
        client,
        "/v1/identify",
        {"userId": "c-2", "anonymousId": "kiosk", "messageId": "m-2"},
        key=key,
    )

    assert Shopper.objects.filter(merged_into__isnull=False).count() == 0
    assert ShopperAlias.objects.get(anonymous_id="kiosk").shopper.customer_id == "c-2"
    assert (
        Event.objects.get(message_id="m-1").shopper_id == Shopper.objects.get(customer_id="c-1").pk
    )


# --- Rejections: a clear 4xx, and nothing stored -----------------------------------------

BIG = "x" * (33 * 1024)


def _rejected(client, path, body=None, *, key, **kwargs):
    response = post(client, path, body, key=key, **kwargs)
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    assert payload["success"] is False
    assert payload["error"]["code"] == payload["code"]
    assert payload["error"]["message"] == payload["message"]
    _assert_nothing_stored()
    return response.status_code, payload["code"], payload["message"]


@pytest.mark.parametrize(
    ("path", "body", "raw", "status", "code"),
    [
        ("/v1/batch", None, b'{"batch": [', 400, "malformed_json"),
        ("/v1/track", None, b"\xff\xfe", 400, "malformed_json"),
        ("/v1/batch", ["not", "an", "object"], None, 400, "invalid_body"),
        ("/v1/batch", {"batch": {"type": "track"}}, None, 400, "invalid_batch"),
        ("/v1/batch", {"batch": []}, None, 400, "invalid_batch"),
        (
            "/v1/batch",
            {"batch": [track("m", timestamp="yesterday")]},
            None,
            400,
            "invalid_timestamp",
        ),
        (
            "/v1/batch",
            {"batch": [track("m", timestamp=1714560000)]},
            None,
            400,
            "invalid_timestamp",
        ),
        (
            "/v1/batch",
            {"batch": [track("m")], "sentAt": "2024-13-45"},
            None,
            400,
            "invalid_timestamp",
        ),
        ("/v1/track", track("m", originalTimestamp="soon"), None, 400, "invalid_timestamp"),
        (
            "/v1/track",
            track("m", timestamp="0001-01-01T00:00:00+05:00"),
            None,
            400,
            "invalid_timestamp",
        ),
        ("/v1/batch", {"batch": [track("m", anonymousId=None)]}, None, 400, "missing_identity"),
        ("/v1/track", track("m", anonymousId="  "), None, 400, "missing_identity"),
        (
            "/v1/batch",
            {"batch": [track("m", anonymousId="a" * 256)]},
            None,
            400,
            "invalid_identity",
        ),
        ("/v1/batch", {"batch": [track("m", userId={"id": 1})]}, None, 400, "invalid_identity"),
        ("/v1/batch", {"batch": [track("m", type="purchase")]}, None, 400, "invalid_type"),
        ("/v1/batch", {"batch": [track("m", type=None)]}, None, 400, "invalid_type"),
        ("/v1/batch", {"batch": [track("m", properties=["a"])]}, None, 400, "invalid_field"),
        ("/v1/track", track("m", properties="sku=1"), None, 400, "invalid_field"),
        ("/v1/track", track("m", context=[1]), None, 400, "invalid_field"),
        ("/v1/identify", {"userId": "c", "traits": "vip"}, None, 400, "invalid_field"),
        ("/v1/track", track("m", event=""), None, 400, "missing_event"),
        ("/v1/track", track("m", event="e" * 256), None, 400, "invalid_field"),
        ("/v1/alias", {"userId": "c-1"}, None, 400, "missing_identity"),
        ("/v1/group", {"userId": "c-1"}, None, 400, "missing_group"),
        (
            "/v1/batch",
            {"batch": [track("m", properties={"note": "a\u0000b"})]},
            None,
            400,
            "invalid_character",
        ),
        ("/v1/track", track("m", properties={"blob": BIG}), None, 413, "event_too_large"),
        (
            "/v1/batch",
            {"batch": [track("m", properties={"blob": BIG})]},
            None,
            413,
            "event_too_large",
        ),
        (
            "/v1/batch",
            {"batch": [track(f"m-{i}", properties={"blob": "y" * 30_000}) for i in range(18)]},
            None,
            413,
            "body_too_large",
        ),
    ],
    ids=lambda v: str(v)[:40],
)
def test_invalid_requests_are_refused_and_store_nothing(client, key, path, body, raw, status, code):
    assert _rejected(client, path, body, key=key, raw=raw)[:2] == (status, code)


def test_a_batch_stores_its_valid_calls_and_reports_the_invalid_ones_by_index(client, key):
    body = {
        "batch": [
            track("m-1"),
            track("m-2", timestamp="31/12/2024"),
            track("m-3"),
            track("m-4", anonymousId=None),
            track("m-5", properties={"blob": BIG}),
        ]
    }

    response = post(client, "/v1/batch", body, key=key)

    assert response.status_code == 200, response.content
    payload = response.json()
    assert payload["success"] is True
    assert [(e["index"], e["code"]) for e in payload["errors"]] == [
        (1, "invalid_timestamp"),
        (3, "missing_identity"),
        (4, "event_too_large"),
    ]
    assert payload["errors"][0]["message"].startswith("batch[1]: timestamp is not an ISO-8601")
    assert sorted(Event.objects.values_list("message_id", flat=True)) == ["m-1", "m-3"]


def test_a_batch_with_no_valid_call_is_refused_listing_every_error(client, key):
    body = {"batch": [track("m-1", timestamp="soon"), track("m-2", type="purchase")]}

    response = post(client, "/v1/batch", body, key=key)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_timestamp"
    assert error["message"].startswith("batch[0]: ")
    assert [(e["index"], e["code"]) for e in error["detail"]["errors"]] == [
        (0, "invalid_timestamp"),
        (1, "invalid_type"),
    ]
    _assert_nothing_stored()


@pytest.mark.parametrize(
    ("write_key", "code"),
    [("wrong-key", "invalid_write_key"), (None, "missing_write_key"), ("", "missing_write_key")],
)
def test_a_wrong_or_missing_write_key_is_refused(client, key, write_key, code):
    status, error_code, _ = _rejected(client, "/v1/batch", {"batch": [track("m-1")]}, key=write_key)

    assert (status, error_code) == (401, code)


def test_an_inactive_write_key_is_refused(client, key):
    WriteKey.objects.filter(key=key).update(active=False)

    status, code, _ = _rejected(client, "/v1/track", track("m-1"), key=key)

    assert (status, code) == (401, "invalid_write_key")


def test_malformed_basic_credentials_are_refused(client, key):
    response = client.post(
        "/v1/track",
        data=json.dumps(track("m-1")),
        content_type="application/json",
        headers={"Authorization": "Basic !!!not-base64"},
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_write_key"
    _assert_nothing_stored()


def test_a_gzip_bomb_is_refused_before_it_is_inflated(client, key):
    # 50 MB of JSON whitespace compresses to about 50 KB.
    bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}")
    assert len(bomb) < 100 * 1024

    response = client.post(
        "/v1/batch",
        data=bomb,
        content_type="application/json",
        headers={"Authorization": basic_auth(key), "Content-Encoding": "gzip"},
    )

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    _assert_nothing_stored()


def test_a_corrupt_gzip_body_is_refused(client, key):
    response = client.post(
        "/v1/batch",
        data=b"\x1f\x8b\x08\x00not really gzip",
        content_type="application/json",
        headers={"Authorization": basic_auth(key), "Content-Encoding": "gzip"},
    )

    assert response.status_code == 400
    assert response.json()["code"] == "malformed_body"
    _assert_nothing_stored()


# --- The bulk path -----------------------------------------------------------------------


def _batch(size: int, offset: int) -> dict[str, Any]:
    """Known customers on their known devices, known anonymous visitors, and newcomers."""
    calls: list[dict[str, Any]] = []
    for i in range(size):
        n = offset + i
        user = i % 7
        kind = i % 4
        if kind == 0:
            calls.append(track(f"t-{n}", anonymousId=f"anon-{user}", userId=f"c-{user}"))
        elif kind == 1:
            calls.append(track(f"u-{n}", anonymousId=f"anon-{user}"))
        elif kind == 2:
            calls.append({"type": "page", "messageId": f"p-{n}", "anonymousId": f"new-{n}"})
        else:
            calls.append({"type": "identify", "messageId": f"i-{n}", "userId": f"new-c-{n}"})
    return {"batch": calls, "sentAt": SENT_AT}


def test_a_batch_costs_the_same_number_of_queries_whatever_its_size(
    client, key, django_assert_max_num_queries
):
    # Given seven customers already known with their devices,
    known = [
        {"type": "identify", "messageId": f"k-{u}", "userId": f"c-{u}", "anonymousId": f"anon-{u}"}
        for u in range(7)
    ]
    post(client, "/v1/batch", {"batch": known}, key=key)

    # when a batch of 12 and then a batch of 400 calls arrive, each with newcomers too,
    with django_assert_max_num_queries(14) as small:
        assert post(client, "/v1/batch", _batch(12, 1000), key=key).status_code == 200
    with django_assert_max_num_queries(14) as large:
        assert post(client, "/v1/batch", _batch(400, 2000), key=key).status_code == 200

    # then the large batch needs no more queries than the small one,
    assert len(large.captured_queries) == len(small.captured_queries)
    # and everything was stored, with the known shoppers reused and no merge.
    assert Event.objects.count() == 7 + 12 + 400
    assert Shopper.objects.filter(customer_id__startswith="c-").count() == 7
    assert Shopper.objects.filter(merged_into__isnull=False).count() == 0
    assert Shopper.objects.count() == 7 + 2 * (3 + 100)


def test_an_alias_created_concurrently_wins_and_leaves_no_orphan_shopper():
    # Given another request created the alias for "a-1" between our lookup and our insert,
    from commerce.tracking import identity

    winner = Shopper.objects.create()
    ShopperAlias.objects.create(anonymous_id="a-1", shopper=winner)

    # when this request creates the aliases it believed were new,
    owners = identity._aliases_create({"a-1": None, "a-2": None})

    # then the existing owner wins, the new visitor gets a shopper, and nothing is left over.
    assert owners["a-1"] == winner.pk
    assert owners["a-2"] == ShopperAlias.objects.get(anonymous_id="a-2").shopper_id
    assert Shopper.objects.count() == 2
