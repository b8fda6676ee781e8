"""Every public entry is rate limited (DESIGN.md, Trust: "Limits"): 429 with Retry-After, and a
refused call changes nothing.

``test_every_route_is_limited`` walks every URL pattern the resolver knows and calls it as an
anonymous visitor with every limit at one call: the second call must be refused with 429 and
``Retry-After`` and change no table. A route that is not limited must be in ``EXEMPT`` with the
reason. The concrete path and body of each route come from the authorization matrix's table
(tests/security/test_authorization_matrix.py), which has a row for every route.

The tests after it take each entry in turn with a real caller: the limit bites at the configured
count (set low with ``override_settings``), the refused call records nothing, and the answer is
JSON for APIs and a short page in the visitor's language for pages.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client, override_settings
from django.urls import get_resolver
from django.utils import timezone

from chat.models import Conversation, KnowledgeArticle
from commerce.models import Product, Shopper, WriteKey
from engagement import services as engagement_services
from engagement import tokens
from engagement.models import Message as OutboxMessage
from engagement.models import NpsResponse, Unsubscribe
from tests.chat.conftest import make_agent
from tests.engagement.conftest import make_campaign
from tests.security.test_authorization_matrix import (
    ADMIN_ROWS,
    ROWS,
    World,
    _call,
    _routes,
    _table_counts,
    world,  # noqa: F401  (a fixture, used by the walk)
)

# Routes that are not limited, and why.
EXEMPT: dict[str, str] = {
    "healthz": (
        "Load balancers and orchestrators probe it often from a few addresses; a 429 would take "
        "a healthy instance out of rotation. It costs one SELECT 1 and one Redis PING, about what "
        "counting the call would cost (one Redis round trip)."
    ),
}
# The admin's own routes (every page but the login): they need a staff session, and answer an
# anonymous caller with a redirect to admin/login/ (limited) before reading anything. Logins
# are also locked out per username and address by django-axes (test_login_lockout.py).
ADMIN_PREFIX = "admin/"
ADMIN_LIMITED = {"admin/login/"}

ADDRESS = "203.0.113.77"
BROWSER = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537"
)


def _limits(**overrides: tuple[int, int] | None) -> Any:
    return override_settings(PATRON_RATE_LIMITS={**settings.PATRON_RATE_LIMITS, **overrides})


def _every_limit(count: int) -> Any:
    return override_settings(
        PATRON_RATE_LIMITS={scope: (count, 3600) for scope in settings.PATRON_RATE_LIMITS}
    )


def _basic(user: str, password: str = "") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _assert_refused(response: Any, *, html: bool | None = None) -> None:
    assert response.status_code == 429, response.content[:300]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 3600
    content_type = response["Content-Type"]
    if html is None:
        html = content_type.startswith("text/html")
    if html:
        assert content_type.startswith("text/html")
        assert "Too many requests" in response.content.decode()
    else:
        body = response.json()
        assert body["error"]["code"] == "rate_limited"
        assert body["error"]["detail"]["retry_after"] == retry_after


# --- The walk: every route ---------------------------------------------------------------


def _all_routes() -> list[str]:
    return sorted(set(_routes(get_resolver().url_patterns)))


def _limited_routes() -> list[str]:
    return [
        route
        for route in _all_routes()
        if route not in EXEMPT and (not route.startswith(ADMIN_PREFIX) or route in ADMIN_LIMITED)
    ]


def test_every_exemption_names_a_route_and_a_reason() -> None:
    routes = set(_all_routes())
    assert set(EXEMPT) <= routes
    assert all(len(reason) > 40 for reason in EXEMPT.values())
    assert routes >= ADMIN_LIMITED


@pytest.mark.django_db
@pytest.mark.parametrize("route", _limited_routes())
def test_every_route_is_limited(world: World, route: str) -> None:  # noqa: F811 -- the fixture imported above
    rows = [row for row in ROWS + ADMIN_ROWS if row.route == route]
    assert rows, f"{route}: add a row to the authorization matrix (its path and body)"
    row = rows[0]
    client = Client(REMOTE_ADDR=ADDRESS)

    with _every_limit(1):
        first = _call(world, row, "anonymous", client, {})
        before = _table_counts()
        second = _call(world, row, "anonymous", client, {})

    assert first.status_code != 429, f"{row.name}: {first.status_code}"
    _assert_refused(second)
    assert _table_counts() == before, row.name


# --- The demo shop and the help centre: pages, per address -------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/products/MUG/", "/help/", "/help/gift-cards/"])
def test_pages_are_limited_per_address_with_a_translated_page(path: str) -> None:
    Product.objects.create(sku="MUG", title="Mug", price=9, stock=3, active=True)
    KnowledgeArticle.objects.create(
        slug="gift-cards", title="Gift cards", body="They never expire.", published=True
    )
    visitor = Client(REMOTE_ADDR=ADDRESS)
    neighbour = Client(REMOTE_ADDR="198.51.100.9")

    with _limits(pages=(2, 60)):
        served = [visitor.get(path).status_code for _ in range(2)]
        refused = visitor.get(path)
        other = neighbour.get(path)

    assert served == [200, 200]
    _assert_refused(refused, html=True)
    assert 'lang="en"' in refused.content.decode()
    assert other.status_code == 200


# --- Links in messages: per address and per token ----------------------------------------


def _sent_message() -> tuple[Shopper, OutboxMessage]:
    shopper = Shopper.objects.create(email="ada@example.com", email_consent=True)
    make_campaign(steps=[{"subject": "Hi", "body": '<p><a href="https://shop.example/">Shop</a>'}])
    engagement_services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")
    engagement_services.outbox_deliver_batch()
    message = OutboxMessage.objects.get(shopper=shopper)
    # Handed over a minute ago: past the window in which gateways scan links on delivery.
    minute_ago = timezone.now() - dt.timedelta(minutes=1)
    OutboxMessage.objects.filter(pk=message.pk).update(handed_at=minute_ago, sent_at=minute_ago)
    return shopper, message


def _path(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


@pytest.mark.django_db
def test_a_refused_open_or_click_records_nothing() -> None:
    _, message = _sent_message()
    browser = Client(REMOTE_ADDR=ADDRESS, headers={"User-Agent": BROWSER})
    pixel = _path(tokens.open_url(message.pk))
    link = _path(tokens.click_url(message.pk, "https://shop.example/"))

    with _limits(email_links=(1, 60)):
        browser.get("/e/o/forged.gif")  # a forged token counts like a real one
        refused_open = browser.get(pixel)
        refused_click = browser.get(link)

    _assert_refused(refused_open, html=True)
    _assert_refused(refused_click, html=True)
    assert "Location" not in refused_click
    message.refresh_from_db()
    assert (message.opened_at, message.clicked_at) == (None, None)


@pytest.mark.django_db
def test_one_links_token_is_limited_whatever_the_address() -> None:
    shopper, message = _sent_message()
    url = _path(tokens.unsubscribe_url(message.pk, shopper.pk, "email"))

    with _limits(email_link_token=(2, 600)):
        shown = [Client(REMOTE_ADDR=f"198.51.100.{n}").get(url).status_code for n in (1, 2)]
        refused = Client(REMOTE_ADDR="198.51.100.3").post(
            url,
            data="List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
        )

    assert shown == [200, 200]
    _assert_refused(refused, html=True)
    shopper.refresh_from_db()
    assert shopper.email_consent is True
    assert not Unsubscribe.objects.exists()


@pytest.mark.django_db
def test_a_refused_preferences_or_nps_answer_changes_nothing() -> None:
    shopper, message = _sent_message()
    preferences = _path(tokens.preferences_url(shopper.pk))
    nps = _path(tokens.nps_url(message.pk, 9))
    browser = Client(REMOTE_ADDR=ADDRESS, headers={"User-Agent": BROWSER})

    with _limits(email_links=(1, 60)):
        assert browser.get(preferences).status_code == 200
        refused_save = browser.post(preferences, {"pause_days": "30"})
        refused_nps = browser.post(nps, {"score": "9", "comment": "great"})

    _assert_refused(refused_save, html=True)
    _assert_refused(refused_nps, html=True)
    shopper.refresh_from_db()
    assert shopper.email_consent is True
    assert not NpsResponse.objects.exists()
    assert not Unsubscribe.objects.exists()


# --- Widget: widget-config, push-key, calls without a write key ---------------------------


@pytest.mark.django_db
def test_widget_config_is_limited_per_address_whatever_the_key() -> None:
    key = WriteKey.objects.create(name="shop").key
    visitor = Client(REMOTE_ADDR=ADDRESS)

    with _limits(widget_public=(2, 60)):
        served = visitor.get(f"/api/chat/widget-config/?write_key={key}")
        guessed = visitor.get("/api/chat/widget-config/?write_key=guess")
        refused = visitor.get(f"/api/chat/widget-config/?write_key={key}")
        push_key = visitor.get("/api/engagement/push-key")
        other = Client(REMOTE_ADDR="198.51.100.9").get(f"/api/chat/widget-config/?write_key={key}")

    assert (served.status_code, guessed.status_code) == (200, 404)
    _assert_refused(refused, html=False)
    _assert_refused(push_key, html=False)
    assert other.status_code == 200


@pytest.mark.django_db
def test_calls_without_a_valid_write_key_are_limited_per_address() -> None:
    visitor = Client(REMOTE_ADDR=ADDRESS)
    track = json.dumps({"userId": "u1", "event": "Product Viewed", "messageId": "m-1"})

    with _limits(tracking=(2, 60), widget=(1, 60)):
        tracking = [
            visitor.post("/v1/track", track, content_type="application/json", headers=_basic(k))
            for k in ("guess-1", "guess-2", "guess-3")
        ]
        metrics = visitor.post("/v1/m", "{}", content_type="application/json")
        widget = [
            visitor.get("/api/engagement/onsite-messages?anonymous_id=a", headers=_basic(k))
            for k in ("guess-1", "guess-2")
        ]

    assert [r.status_code for r in tracking[:2]] == [401, 401]
    assert tracking[2].status_code == 429
    assert tracking[2].json()["error"]["code"] == "rate_limited"
    assert int(tracking[2]["Retry-After"]) >= 1
    assert metrics.status_code == 429
    assert widget[0].status_code == 401
    _assert_refused(widget[1], html=False)
    assert not Shopper.objects.exists()


@pytest.mark.django_db
def test_the_library_metrics_path_is_limited_per_address() -> None:
    with _limits(tracking=(1, 60)):
        statuses = [
            Client(REMOTE_ADDR=ADDRESS)
            .post("/v1/m", "{}", content_type="application/json")
            .status_code
            for _ in range(2)
        ]
    assert statuses == [200, 429]


# --- The API schema and docs --------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_schema_is_limited_per_address() -> None:
    visitor = Client(REMOTE_ADDR=ADDRESS)
    with _limits(api_schema=(1, 60)):
        served = visitor.get("/api/schema/")
        refused = visitor.get("/api/schema/")
    assert served.status_code == 200
    _assert_refused(refused, html=False)


# --- The staff APIs: what anyone can do there without a staff login ------------------------

PASSWORD = "correct horse battery staple"


@pytest.mark.django_db
def test_staff_apis_limit_callers_without_a_staff_login_before_checking_credentials() -> None:
    get_user_model().objects.create_user(
        username="ops", password=PASSWORD, is_staff=True, is_superuser=True
    )
    attacker = Client(REMOTE_ADDR=ADDRESS)
    product = json.dumps({"sku": "NEW", "title": "New", "price": "1.00"})

    with _limits(staff_login_free=(3, 60)):
        refusals = [
            attacker.get("/api/products/").status_code,
            attacker.get("/api/chat/conversations/").status_code,
            attacker.get("/api/orders/", headers=_basic("nobody", "guess")).status_code,
        ]
        over = attacker.post(
            "/api/products/",
            product,
            content_type="application/json",
            headers=_basic("ops", PASSWORD),
        )
        elsewhere = Client(REMOTE_ADDR="198.51.100.9").get(
            "/api/products/", headers=_basic("ops", PASSWORD)
        )

    assert refusals == [401, 403, 401]
    # Over the limit even the right password is not checked from that address.
    _assert_refused(over, html=False)
    assert not Product.objects.exists()
    assert elsewhere.status_code == 200


@pytest.mark.django_db
def test_signed_in_staff_are_not_counted() -> None:
    staff = get_user_model().objects.create_user(
        username="ops", password=PASSWORD, is_staff=True, is_superuser=True
    )
    client = Client(REMOTE_ADDR=ADDRESS)
    client.force_login(staff)
    with _limits(staff_login_free=(1, 60)):
        statuses = {client.get("/api/products/").status_code for _ in range(3)}
    assert statuses == {200}


# --- The transcript an agent emails -------------------------------------------------------


@pytest.mark.django_db
def test_transcripts_are_limited_per_agent_and_per_typed_address(
    django_capture_on_commit_callbacks: Any,
) -> None:
    shopper = Shopper.objects.create(email="ada@example.com")
    conversations = [Conversation.objects.create(shopper=shopper) for _ in range(3)]
    agent = Client(REMOTE_ADDR=ADDRESS)
    agent.force_login(make_agent("ann"))

    def send(conversation: Conversation, email: str) -> Any:
        return agent.post(
            f"/api/chat/conversations/{conversation.pk}/transcript/",
            json.dumps({"email": email}),
            content_type="application/json",
        )

    with (
        _limits(transcript=(3, 3600), email_recipient=(1, 3600)),
        django_capture_on_commit_callbacks(execute=True),
    ):
        sent = send(conversations[0], "first@example.com")
        same_address = send(conversations[1], "first@example.com")
        second = send(conversations[1], "second@example.com")
        over_agent = send(conversations[2], "third@example.com")

    assert (sent.status_code, second.status_code) == (202, 202)
    _assert_refused(same_address, html=False)
    _assert_refused(over_agent, html=False)
    assert [m.to for m in mail.outbox] == [["first@example.com"], ["second@example.com"]]


@pytest.mark.django_db
def test_coupon_calls_refused_for_their_key_are_limited_per_address() -> None:
    browser_key = WriteKey.objects.create(name="browser").key
    server_key = WriteKey.objects.create(name="server", server_side=True).key
    prober = Client(REMOTE_ADDR=ADDRESS)
    body = json.dumps({"code": "WELCOME10", "subtotal": "50.00"})

    def validate(key: str) -> Any:
        return prober.post(
            "/v1/coupons/validate", body, content_type="application/json", headers=_basic(key)
        )

    with _limits(coupons=(2, 60)):
        statuses = [validate("guess").status_code, validate(browser_key).status_code]
        refused = validate("guess-again")
        by_the_store = validate(server_key)

    assert statuses == [401, 403]
    _assert_refused(refused, html=False)
    assert by_the_store.status_code != 429  # the store's own key is counted apart
