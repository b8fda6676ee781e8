"""The authorization matrix (#8, "Done when"): who may call which endpoint.

Every HTTP route the resolver knows must have rows in ``ROWS`` (``test_every_route_is_in_the
_matrix`` fails for a new endpoint until it joins), the admin's routes are generated per
registered model, and both WebSocket paths have their rows at the end, against a real server.

Each (row, actor) cell asserts one of two verdicts:

- *allowed*: the answer is not a refusal (not 401/403/404, no redirect to the login page) and,
  when the row names a secret of shopper A, the secret is in the answer;
- *denied*: 401, 403 or 404 (or, for HTML pages, the redirect to the login page), never 2xx
  (except a list filtered by the caller's own identity, which leaves A's secret out), the
  secret absent, and no row of any table added or removed (one ``count(*)`` per table).

To add an endpoint: add a ``Row`` (its resolver route, method, concrete path, the actors
allowed). Shopper identity proof is computed in one place, ``identity_proof``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from chat.models import Conversation
from chat.selectors import AGENT_GROUP_PERMISSIONS
from commerce.models import Coupon, Order, Product, Shopper, WriteKey
from engagement import services as engagement_services
from engagement.models import Message as OutboxMessage
from tests.chat.conftest import agent_permission, consoles_disconnected  # noqa: F401
from tests.engagement.conftest import make_campaign
from tests.support.identity import user_hash
from tests.support.permissions import permissions

ACTORS = (
    "anonymous",
    "shopper_a",
    "shopper_b",
    "browser_key",
    "server_key",
    "staff",
    "marketer",
    "agent",
    "deactivated_agent",
    "superuser",
)
KEYS = frozenset({"shopper_a", "shopper_b", "browser_key", "server_key"})
STAFF = frozenset({"staff", "marketer", "agent", "deactivated_agent", "superuser"})
EVERYONE = frozenset(ACTORS)
AGENTS = frozenset({"agent", "superuser"})
NOBODY: frozenset[str] = frozenset()


SECRET = "secret-of-shopper-a"
ORIGIN = "https://shop.example.com"


# --- The world every cell runs in ---------------------------------------------------------


def identity_proof(customer_id: str) -> str:
    """``hex(HMAC-SHA256(identity secret, customer id))`` (DESIGN.md, Trust; docs/identity.md),
    under the store's identity secret, which the ``world`` fixture sets to the tests' known
    value (``tests.support.identity``). The one place the matrix computes a proof."""
    return user_hash(customer_id)


def identity_params(customer_id: str, *, proof: bool) -> dict[str, str]:
    """What a widget sends for a known customer (field names: see the identity helper)."""
    params = {"user_id": customer_id}
    if proof:
        params["user_hash"] = params["customer_hash"] = identity_proof(customer_id)
    return params


@dataclass
class World:
    browser_key: WriteKey
    server_key: WriteKey
    shopper_a: Shopper
    shopper_b: Shopper
    onsite_a: OutboxMessage
    conversation_a: Conversation
    order_a: Order
    product: Product
    users: dict[str, Any] = field(default_factory=dict)

    def identity(self, actor: str) -> dict[str, str]:
        """The shopper identity an actor sends to widget APIs: shoppers their own (with proof);
        every other actor *claims* shopper A without proof."""
        if actor == "shopper_a":
            return identity_params("cust-a", proof=True)
        if actor == "shopper_b":
            return identity_params("cust-b", proof=True)
        return identity_params("cust-a", proof=False)


def _user(username: str, *, perms: list[Permission] | None = None, **extra: Any) -> Any:
    user = get_user_model().objects.create_user(username=username, **extra)
    if perms:
        user.user_permissions.add(*perms)
    return user


@pytest.fixture
def world(db: None, identity_secret: str) -> World:
    # A known secret, the same in every test: a server process caches the store's secret for
    # two seconds, so a secret generated anew per test (after a flush) could still be the
    # previous test's inside that server.
    shopper_a = Shopper.objects.create(
        customer_id="cust-a", email=f"{SECRET}@example.com", first_name=SECRET
    )
    shopper_b = Shopper.objects.create(customer_id="cust-b", email="b@example.com")
    make_campaign(steps=[{"channel": "onsite", "subject": SECRET, "body": "For A only"}])
    engagement_services.trigger_fire(trigger="welcome", shopper=shopper_a, occurrence_key="w1")
    engagement_services.outbox_deliver_batch()
    onsite_a = OutboxMessage.objects.get(shopper=shopper_a, channel="onsite")
    product = Product.objects.create(sku="MUG", title="Mug", price=9, stock=0, active=True)
    order_a = Order.objects.create(number="A-1", shopper=shopper_a, email="a@example.com")
    Coupon.objects.create(code="MATRIX15", kind="percent", value=15, owner=shopper_a, usage_limit=1)
    conversation_a = Conversation.objects.create(shopper=shopper_a)
    engagement_perms = list(Permission.objects.filter(content_type__app_label="engagement"))
    catalog_view = list(
        Permission.objects.filter(
            content_type__app_label="commerce", codename__in=["view_product", "view_category"]
        )
    )
    agent_perms = [agent_permission(), *permissions(*AGENT_GROUP_PERMISSIONS[1:])]
    users = {
        "staff": _user("staff", is_staff=True),
        "marketer": _user("marketer", is_staff=True, perms=engagement_perms + catalog_view),
        # Agents hold what the "Agents" group holds (chat migration 0011).
        "agent": _user("agent", is_staff=True, perms=agent_perms),
        "deactivated_agent": _user("gone", is_staff=True, is_active=False, perms=agent_perms),
        "superuser": _user("root", is_staff=True, is_superuser=True),
    }
    # The agent answers A's conversation: agents see a shopper's personal data only in the
    # conversations they handle (without chat's personal-data permission).
    Conversation.objects.filter(pk=conversation_a.pk).update(
        assigned_agent=users["agent"], state=Conversation.State.ASSIGNED
    )
    conversation_a.refresh_from_db()
    return World(
        browser_key=WriteKey.objects.create(name="browser", allowed_origins=[ORIGIN]),
        server_key=WriteKey.objects.create(name="server", server_side=True),
        shopper_a=shopper_a,
        shopper_b=shopper_b,
        onsite_a=onsite_a,
        conversation_a=conversation_a,
        order_a=order_a,
        product=product,
        users=users,
    )


def _client(world: World, actor: str) -> tuple[Client, dict[str, str]]:
    """A client for ``actor`` and the headers it sends (a key as HTTP Basic, a session)."""
    client = Client(REMOTE_ADDR="203.0.113.50")
    headers: dict[str, str] = {}
    key = world.server_key if actor == "server_key" else world.browser_key
    if actor in KEYS:
        token = base64.b64encode(f"{key.key}:".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        if actor != "server_key":
            headers["Origin"] = ORIGIN
    if actor in STAFF:
        # A deactivated user's session no longer authenticates (ModelBackend.get_user).
        client.force_login(world.users[actor], backend="django.contrib.auth.backends.ModelBackend")
    return client, headers


# --- The table ----------------------------------------------------------------------------


Body = Callable[[World, str], Any]


@dataclass(frozen=True)
class Row:
    route: str  # the resolver's route, e.g. "api/products/<path:sku>/"
    method: str
    path: Callable[[World, str], str]
    allowed: frozenset[str]
    body: Body | None = None
    secret: bool = False  # the answer must carry shopper A's secret exactly when allowed
    html: bool = False  # a page: a redirect to the login page counts as a refusal

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}"


def fixed(path: str) -> Callable[[World, str], str]:
    return lambda world, actor: path


# A tracking call of each type, as an actor sends it: shoppers their own userId with its proof
# (context.userHash); the browser key claims customer A without proof (refused: no anonymous
# visitor to record it on); the server key is trusted.
_CALL_FIELDS: dict[str, dict[str, Any]] = {
    "identify": {"traits": {"plan": "gold"}},
    "track": {"event": "Product Viewed"},
    "page": {"name": "Home"},
    "screen": {"name": "Home"},
    "group": {"groupId": "g-1"},
    "alias": {"previousId": "anon-matrix"},
}
_SHORT_PATHS = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group"}
_SHORT_PATHS |= {"a": "alias", "b": "batch"}


def _tracking_call(call: str, actor: str) -> dict[str, Any]:
    user = "cust-b" if actor == "shopper_b" else "cust-a"
    body: dict[str, Any] = {"userId": user, **_CALL_FIELDS[call]}
    if actor in ("shopper_a", "shopper_b"):
        body["context"] = {"userHash": identity_proof(user)}
    return body


def tracking(call: str, path: str | None = None) -> list[Row]:
    def body(world: World, actor: str) -> dict[str, Any]:
        if call in ("batch", "import"):
            return {"batch": [{"type": "track", **_tracking_call("track", actor)}]}
        return _tracking_call(call, actor)

    allowed = frozenset({"shopper_a", "shopper_b", "server_key"})
    return [
        Row(
            f"{prefix}{path or call}", "POST", fixed(f"/{prefix}{path or call}"), allowed, body=body
        )
        for prefix in ("v1/", "api/v1/")
    ]


def _query(world: World, actor: str, **extra: str) -> str:
    from urllib.parse import urlencode

    return urlencode({**world.identity(actor), **extra})


# Staff APIs under /api/: superusers; marketers may read the catalog; other staff nothing.
STAFF_API = frozenset({"superuser"})
CATALOG_READ = frozenset({"superuser", "marketer"})

ROWS: list[Row] = [
    Row("healthz", "GET", fixed("/healthz"), EVERYONE),
    Row("api/schema/", "GET", fixed("/api/schema/"), EVERYONE),
    Row("api/docs/", "GET", fixed("/api/docs/"), EVERYONE, html=True),
    Row("api/redoc/", "GET", fixed("/api/redoc/"), EVERYONE, html=True),
    # Django's i18n views: the console's catalog and language switch (a cookie, nothing stored).
    Row("jsi18n/", "GET", fixed("/jsi18n/"), EVERYONE),
    Row("i18n/setlang/", "POST", fixed("/i18n/setlang/"), EVERYONE),
    *[
        row
        for call in ("identify", "track", "page", "screen", "group", "alias", "batch", "import")
        for row in tracking(call)
    ],
    # Segment's browser library's short paths (the first letter of the call type; /b batches).
    *[row for short, call in _SHORT_PATHS.items() for row in tracking(call, short)],
    # The library's own usage metrics: accepted from anyone, stored nowhere.
    *[Row(f"{p}m", "POST", fixed(f"/{p}m"), EVERYONE, body=None) for p in ("v1/", "api/v1/")],
    # A store's checkout checks and redeems Patron's coupons: with its server-side key only.
    *[
        Row(
            f"{p}coupons/{op}",
            "POST",
            fixed(f"/{p}coupons/{op}"),
            frozenset({"server_key"}),
            body=lambda w, a: {
                "code": "MATRIX15",
                "userId": "cust-a",
                "orderId": "A-1",
                "subtotal": 20,
            },
        )
        for p in ("v1/", "api/v1/")
        for op in ("validate", "redeem")
    ],
    # The catalog and order APIs (staff, HTTP Basic or session).
    Row("api/products/", "GET", fixed("/api/products/"), CATALOG_READ),
    Row(
        "api/products/",
        "POST",
        fixed("/api/products/"),
        STAFF_API,
        body=lambda w, a: {"sku": "NEW", "title": "New", "price": "1.00"},
    ),
    Row(
        "api/products/import/",
        "POST",
        fixed("/api/products/import/"),
        STAFF_API,
        body=lambda w, a: {"products": [{"sku": "NEW", "title": "New", "price": "1.00"}]},
    ),
    Row(
        "api/products/<path:sku>/",
        "GET",
        fixed("/api/products/MUG/"),
        CATALOG_READ,
    ),
    Row(
        "api/products/<path:sku>/",
        "PATCH",
        fixed("/api/products/MUG/"),
        STAFF_API,
        body=lambda w, a: {"price": "0.01"},
    ),
    Row("api/categories/", "GET", fixed("/api/categories/"), CATALOG_READ),
    Row(
        "api/orders/",
        "GET",
        fixed("/api/orders/"),
        STAFF_API,
    ),
    Row(
        "api/orders/import/",
        "POST",
        fixed("/api/orders/import/"),
        STAFF_API,
        body=lambda w, a: {"orders": []},
    ),
    Row(
        "api/orders/<path:number>/refunds/",
        "POST",
        fixed("/api/orders/A-1/refunds/"),
        STAFF_API,
        body=lambda w, a: {"number": "R-1"},
    ),
    Row(
        "api/orders/<path:number>/",
        "GET",
        fixed("/api/orders/A-1/"),
        STAFF_API,
    ),
    Row(
        "api/shoppers/",
        "GET",
        fixed("/api/shoppers/"),
        STAFF_API,
        secret=True,
    ),
    Row(
        "api/shoppers/<str:pk>/",
        "GET",
        lambda w, a: f"/api/shoppers/{w.shopper_a.pk}/",
        STAFF_API,
        secret=True,
    ),
    # E-mail landing pages: the signed token is the only authority; a forged one opens nothing.
    *[
        Row(route, "GET", fixed(path), NOBODY)
        for route, path in (
            ("e/o/<str:token>.gif", "/e/o/forged.gif"),
            ("e/c/<str:token>", "/e/c/forged"),
            ("e/unsubscribe/<str:token>", "/e/unsubscribe/forged"),
            ("e/preferences/<str:token>", "/e/preferences/forged"),
            ("e/nps/<str:token>", "/e/nps/forged"),
        )
    ],
    Row("e/unsubscribe/<str:token>", "POST", fixed("/e/unsubscribe/forged"), NOBODY),
    # The widget's engagement API: a write key; a known customer only with their proof, whatever
    # the key (a widget entry is a browser entry; docs/identity.md).
    Row(
        "api/engagement/notify-requests",
        "POST",
        fixed("/api/engagement/notify-requests"),
        frozenset({"shopper_a", "shopper_b"}),
        body=lambda w, a: {"sku": "MUG", "kind": "back_in_stock", **w.identity(a)},
    ),
    Row(
        "api/engagement/onsite-messages",
        "GET",
        lambda w, a: f"/api/engagement/onsite-messages?{_query(w, a)}",
        frozenset({"shopper_a"}),
        secret=True,
    ),
    Row(
        "api/engagement/onsite-messages/<int:message_id>/seen",
        "POST",
        lambda w, a: f"/api/engagement/onsite-messages/{w.onsite_a.pk}/seen",
        frozenset({"shopper_a"}),
        body=lambda w, a: w.identity(a),
    ),
    Row(
        "api/engagement/push-subscriptions",
        "POST",
        fixed("/api/engagement/push-subscriptions"),
        frozenset({"shopper_a", "shopper_b"}),
        body=lambda w, a: {
            "endpoint": "https://push.example.net/sub/1",
            "keys": {"p256dh": "k" * 20, "auth": "a" * 10},
            **w.identity(a),
        },
    ),
    Row("api/engagement/push-key", "GET", fixed("/api/engagement/push-key"), EVERYONE),
    # Chat: the console and its APIs are for agents; help pages and widget config are public.
    Row("console/", "GET", fixed("/console/"), AGENTS, html=True),
    Row("help/", "GET", fixed("/help/"), EVERYONE, html=True),
    Row("help/<slug:slug>/", "GET", fixed("/help/none-such/"), NOBODY, html=True),
    Row(
        "api/chat/conversations/",
        "GET",
        fixed("/api/chat/conversations/?view=all"),
        AGENTS,
        secret=True,
    ),
    Row(
        "api/chat/conversations/<int:conversation_id>/messages/",
        "GET",
        lambda w, a: f"/api/chat/conversations/{w.conversation_a.pk}/messages/",
        AGENTS,
    ),
    Row(
        "api/chat/conversations/<int:conversation_id>/context/",
        "GET",
        lambda w, a: f"/api/chat/conversations/{w.conversation_a.pk}/context/",
        AGENTS,
        secret=True,
    ),
    Row(
        "api/chat/conversations/<int:conversation_id>/transcript/",
        "POST",
        lambda w, a: f"/api/chat/conversations/{w.conversation_a.pk}/transcript/",
        AGENTS,
        body=lambda w, a: {},
    ),
    Row("api/chat/canned-responses/", "GET", fixed("/api/chat/canned-responses/"), AGENTS),
    Row("api/chat/agents/", "GET", fixed("/api/chat/agents/"), AGENTS),
    # Chat metrics need chat.view_chat_metrics, which the Agents group does not hold.
    Row("api/chat/metrics/", "GET", fixed("/api/chat/metrics/"), frozenset({"superuser"})),
    Row(
        "api/chat/widget-config/",
        "GET",
        lambda w, a: f"/api/chat/widget-config/?write_key={w.browser_key.key}",
        EVERYONE,
    ),
    # The demo shop.
    Row("", "GET", fixed("/"), EVERYONE, html=True),
    Row("products/<str:sku>/", "GET", fixed("/products/MUG/"), EVERYONE, html=True),
]

# The admin: its own pages, then every registered model's list, add and change pages.
ADMIN_SITE_ROUTES = {
    "admin/": "index",
    "admin/login/": "login",
    "admin/logout/": "logout",
    "admin/password_change/": "password_change",
    "admin/password_change/done/": "password_change_done",
    "admin/autocomplete/": "autocomplete",
    "admin/jsi18n/": "jsi18n",
    "admin/r/<int:content_type_id>/<path:object_id>/": "view_on_site",
    "admin/<app_label>/": "app_list",
    "admin/(?P<app_label>": "app_list",
}
ADMIN_ROWS: list[Row] = [
    Row("admin/", "GET", fixed("/admin/"), STAFF - {"deactivated_agent"}, html=True),
    Row("admin/login/", "GET", fixed("/admin/login/"), EVERYONE, html=True),
]
# The admin's own pages that change state through services: campaign status (engagement's
# change permission) and conversation assignment (chat's change permission and personal data).
_CAMPAIGN_STATUS = "admin/engagement/campaign/<int:campaign_id>/status/<str:status>/"
_CONVERSATION_ASSIGN = "admin/chat/conversation/<int:conversation_id>/assign/"
ADMIN_ROWS += [
    Row(
        _CAMPAIGN_STATUS,
        method,
        lambda w, a: f"/admin/engagement/campaign/{w.onsite_a.campaign_id}/status/paused/",
        frozenset({"superuser", "marketer"}),
        html=True,
    )
    for method in ("GET", "POST")
] + [
    Row(
        _CONVERSATION_ASSIGN,
        method,
        lambda w, a: f"/admin/chat/conversation/{w.conversation_a.pk}/assign/",
        frozenset({"superuser"}),
        html=True,
    )
    for method in ("GET", "POST")
]


def _admin_model_rows() -> list[Row]:
    rows = []
    for model in admin.site._registry:
        meta = model._meta
        allowed = {"superuser"}
        if meta.app_label == "engagement":
            allowed.add("marketer")
        if meta.label_lower in {"commerce.product", "commerce.category"}:
            allowed.add("marketer")
        # What the console shows an agent anyway (their view permissions); conversations'
        # admin lists every shopper and also needs the personal-data permission.
        if meta.label_lower in {"chat.agentstatus", "chat.cannedresponse"}:
            allowed.add("agent")
        base = f"/admin/{meta.app_label}/{meta.model_name}/"
        rows.append(
            Row(
                f"admin/{meta.app_label}/{meta.model_name}/",
                "GET",
                fixed(base),
                frozenset(allowed),
                html=True,
            )
        )
    return rows


def _all_rows() -> list[Row]:
    return ROWS + ADMIN_ROWS + _admin_model_rows()


# --- Coverage: every route is in the table ------------------------------------------------


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


def test_every_route_is_in_the_matrix() -> None:
    covered = {row.route for row in ROWS}
    missing = []
    for route in _routes(get_resolver().url_patterns):
        if route.startswith("admin/"):
            continue  # generated per registered model below; site pages listed in ADMIN_ROWS
        if route not in covered:
            missing.append(route)
    assert missing == [], f"add these endpoints to ROWS in {__name__}: {missing}"


# --- The HTTP cells -----------------------------------------------------------------------


def _table_counts() -> dict[str, int]:
    tables = sorted(
        model._meta.db_table
        for model in apps.get_models()
        if model._meta.managed and not model._meta.proxy
    )
    # Table names come from the models, not from input.
    sql = " UNION ALL ".join(
        f"SELECT '{t}', count(*) FROM \"{t}\""  # noqa: S608 -- table names from the models
        for t in tables
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return dict(cursor.fetchall())


def _call(world: World, row: Row, actor: str, client: Client, headers: dict[str, str]) -> Any:
    path = row.path(world, actor)
    if row.method == "GET":
        return client.get(path, headers=headers)
    body = row.body(world, actor) if row.body else {}
    send = getattr(client, row.method.lower())
    return send(path, json.dumps(body), content_type="application/json", headers=headers)


def _refused(response: Any, row: Row) -> bool:
    if response.status_code in (401, 403, 404):
        return True
    if row.html and response.status_code == 302:
        return "/admin/login/" in response["Location"]
    return False


def _check(world: World, row: Row, actor: str) -> None:
    allowed = actor in row.allowed
    client, headers = _client(world, actor)
    before = None if allowed else _table_counts()

    response = _call(world, row, actor, client, headers)

    content = response.content.decode(errors="replace") if hasattr(response, "content") else ""
    where = f"{row.name} as {actor}: {response.status_code} {content[:300]}"
    if allowed:
        assert not _refused(response, row), where
        assert response.status_code != 429, where
        if row.secret:
            assert SECRET in content, where
    else:
        # A list filtered by the caller's own identity refuses by leaving A's data out.
        assert _refused(response, row) or (row.secret and response.status_code < 300), where
        assert SECRET not in content, where
        assert _table_counts() == before, where


def _rows() -> list[Any]:
    return [pytest.param(row, id=row.name) for row in _all_rows()]


@pytest.mark.django_db
@pytest.mark.parametrize("row", _rows())
def test_http(world: World, row: Row) -> None:
    """Every actor, against one world (calls that are refused change nothing, so one world
    serves them all; allowed calls run after the refusals)."""
    for actor in sorted(ACTORS, key=lambda a: a in row.allowed):
        _check(world, row, actor)


# --- The sockets --------------------------------------------------------------------------

SOCKET_ROWS = {
    # /ws/chat/: who may open shopper A's identity / conversation; /ws/console/: agents only.
    "ws/chat/ hello as customer A": frozenset({"shopper_a"}),
    "ws/chat/ resume A's conversation": frozenset({"shopper_a"}),
    "ws/console/": AGENTS,
}


def test_the_socket_routes_are_in_the_matrix() -> None:
    from config.routing import websocket_urlpatterns

    routes = {str(p.pattern) for p in websocket_urlpatterns}
    assert routes == {"ws/chat/", "ws/console/"}, "add the new socket to SOCKET_ROWS"
    assert {name.split()[0] for name in SOCKET_ROWS} == routes


@pytest.fixture(scope="module")
def socket_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    from tests.support.processes import asgi_server

    with asgi_server() as url:
        yield url


def _hello(world: World, actor: str, *, resume: bool) -> dict[str, Any]:
    """The hello an actor sends: everyone claims customer A; only A has A's proof."""
    key = world.server_key if actor == "server_key" else world.browser_key
    hello: dict[str, Any] = {
        "type": "hello",
        "write_key": "no-such-key" if actor == "anonymous" else key.key,
        "customer_id": "cust-a",
    }
    if actor == "shopper_a":
        hello["customer_hash"] = identity_proof("cust-a")
    elif actor == "shopper_b":
        hello["customer_hash"] = identity_proof("cust-b")
    if resume:
        hello["conversation_id"] = world.conversation_a.pk
    return hello


async def _shopper_socket(
    url: str, hello: dict[str, Any]
) -> tuple[list[dict[str, Any]], int | None]:
    from tests.chat.wsclient import ChatClient

    client = await ChatClient(url, "/ws/chat/", origin=ORIGIN).connect()
    await client.send(hello)
    frames, code = await _drain(client, 5.0)
    await client.close()
    return frames, code


async def _drain(client: Any, seconds: float) -> tuple[list[dict[str, Any]], int | None]:
    """Frames within ``seconds``, and the close code if the server closed meanwhile."""
    from websockets.exceptions import ConnectionClosed

    try:
        return await client.drain(seconds), None
    except ConnectionClosed as exc:
        return list(client.backlog), exc.rcvd.code if exc.rcvd else None


def _shopper_socket_verdict(frames: list[dict[str, Any]], *, resume: bool) -> bool:
    """Did the socket get shopper A (identified) or A's conversation?"""
    welcome = next((f for f in frames if f["type"] == "welcome"), None)
    if welcome is None:
        return False
    if resume:
        conversation = welcome.get("conversation") or {}
        return bool(conversation.get("id"))
    return bool(welcome["shopper"]["identified"])


SOCKET_ACTORS = (*(a for a in ACTORS if a not in STAFF), "agent", "superuser")


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("resume", [False, True], ids=["identify", "resume"])
def test_shopper_socket(socket_server: str, world: World, resume: bool) -> None:
    """Only shopper A (with A's proof) is identified as A or gets A's conversation back."""
    for actor in SOCKET_ACTORS:
        hello = _hello(world, actor, resume=resume)
        frames, _ = asyncio.run(_shopper_socket(socket_server, hello))
        got_a = _shopper_socket_verdict(frames, resume=resume)
        assert got_a is (actor == "shopper_a"), (actor, frames)
        assert Conversation.objects.count() == 1  # nobody started or took one by saying hello


@pytest.mark.system
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("consoles_disconnected")
def test_console_socket(socket_server: str, world: World) -> None:
    """Only agents (and superusers) open the console socket and see the inbox."""
    for actor in ACTORS:
        _console_socket(socket_server, world, actor)


def _console_socket(socket_server: str, world: World, actor: str) -> None:
    from websockets.exceptions import InvalidStatus

    from tests.chat.wsclient import ChatClient

    cookie = None
    if actor in STAFF:
        client = Client()
        client.force_login(world.users[actor], backend="django.contrib.auth.backends.ModelBackend")
        cookie = f"sessionid={client.cookies['sessionid'].value}"

    async def scenario() -> tuple[bool, list[dict[str, Any]]]:
        socket = ChatClient(socket_server, "/ws/console/", cookie=cookie)
        try:
            await socket.connect()
        except InvalidStatus:
            return False, []
        frames, _ = await _drain(socket, 1.5)
        await socket.close()
        return any(f["type"] == "inbox.snapshot" for f in frames), frames

    opened, frames = asyncio.run(scenario())

    assert opened is (actor in AGENTS), (actor, frames)
    if actor not in AGENTS:
        assert SECRET not in json.dumps(frames)


def test_reverse_names_still_resolve() -> None:
    """The matrix uses literal paths; the named routes it relies on must still exist."""
    assert reverse("api-schema") == "/api/schema/"
