"""The chat REST API (docs/chat-protocol.md §4): who may call it, what each endpoint answers,
scoping, and how many queries the lists cost."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from chat import registry, services
from chat.models import AgentStatus, CannedResponse, Conversation, Message
from commerce.models import Shopper, WriteKey
from tests.chat.conftest import agent_permission, make_agent
from tests.support.chat_protocol import SUMMARY_KEYS
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db

State = Conversation.State

AGENT_ENDPOINTS = [
    ("get", "/api/chat/conversations/"),
    ("get", "/api/chat/conversations/{cid}/messages/"),
    ("get", "/api/chat/conversations/{cid}/context/"),
    ("post", "/api/chat/conversations/{cid}/transcript/"),
    ("get", "/api/chat/canned-responses/"),
    ("get", "/api/chat/agents/"),
    ("get", "/api/chat/metrics/"),
]


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def call(client: Client, method: str, path: str) -> Any:
    if method == "post":
        return client.post(path, {"email": "ada@example.com"}, content_type="application/json")
    return client.get(path)


@pytest.fixture
def conversation(shopper: Shopper) -> Conversation:
    cid = services.shopper_message_post(
        shopper=shopper, body="How long does shipping take?", client_id="s1"
    ).conversation_id
    return Conversation.objects.get(pk=cid)


def staff_without_permission() -> Any:
    return get_user_model().objects.create_user(username="clerk", is_staff=True)


def permission_without_staff() -> Any:
    user = get_user_model().objects.create_user(username="helper")
    user.user_permissions.add(agent_permission())
    return user


# --- Who may call it --------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), AGENT_ENDPOINTS)
def test_anonymous_callers_are_refused_with_the_error_format(conversation, method, path):
    response = call(Client(), method, path.format(cid=conversation.pk))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "not_authenticated"
    assert mail.outbox == []


@pytest.mark.parametrize(("method", "path"), AGENT_ENDPOINTS)
@pytest.mark.parametrize("who", [staff_without_permission, permission_without_staff])
def test_staff_without_the_agent_permission_and_non_staff_are_refused(
    conversation, method, path, who, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = call(logged_in(who()), method, path.format(cid=conversation.pk))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert callbacks == []  # no transcript queued, nothing sent
    assert mail.outbox == []


def test_http_basic_credentials_of_an_agent_work_too(conversation):
    anna = make_agent("anna")
    anna.set_password("pw")
    anna.save(update_fields=["password"])
    token = base64.b64encode(b"anna:pw").decode()
    response = Client().get("/api/chat/agents/", HTTP_AUTHORIZATION=f"Basic {token}")

    assert response.status_code == 200
    assert [row["name"] for row in response.json()] == ["Anna"]


# --- What each endpoint answers ---------------------------------------------------------


def test_conversation_list_views_are_scoped_to_the_calling_agent(shopper):
    anna = make_agent("anna")
    bob = make_agent("bob")
    mine = services.shopper_hand_off_request(shopper=shopper, conversation_id=None)
    other_shopper = Shopper.objects.create(first_name="Grace", email="grace@example.com")
    theirs = services.conversation_start(shopper=other_shopper)
    services.conversation_assign(conversation_id=theirs.pk, agent=bob, by=bob)
    queued = services.conversation_start(shopper=Shopper.objects.create(first_name="Lin"))
    AgentStatus.objects.update(status=AgentStatus.Status.AWAY)
    services.conversation_hand_off(conversation_id=queued.pk)
    assert Conversation.objects.get(pk=mine.conversation.pk).assigned_agent_id == anna.pk

    client = logged_in(anna)
    ids = {
        view: [
            row["id"]
            for row in client.get(f"/api/chat/conversations/?view={view}").json()["results"]
        ]
        for view in ("mine", "unassigned", "all")
    }

    assert ids["mine"] == [mine.conversation.pk]
    assert ids["unassigned"] == [queued.pk]
    assert sorted(ids["all"]) == sorted([mine.conversation.pk, theirs.pk, queued.pk])
    bob_mine = logged_in(bob).get("/api/chat/conversations/?view=mine").json()["results"]
    assert [row["id"] for row in bob_mine] == [theirs.pk]


def _link(url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", "testserver")
    return parts.path, parse_qs(parts.query)


def test_conversation_list_pages_and_summaries(shopper):
    # A supervisor: searching every shopper by name needs the personal-data permission.
    anna = grant(make_agent("anna"), "commerce.view_shopper_personal_data")
    for index in range(3):
        services.conversation_start(shopper=Shopper.objects.create(first_name=f"S{index}"))

    response = logged_in(anna).get("/api/chat/conversations/?view=all&limit=2&offset=0&q=S")

    body = response.json()
    assert response.status_code == 200
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["previous"] is None
    assert _link(body["next"]) == (
        "/api/chat/conversations/",
        {"view": ["all"], "limit": ["2"], "offset": ["2"], "q": ["S"]},
    )
    second = logged_in(anna).get(body["next"]).json()
    assert len(second["results"]) == 1
    assert _link(second["previous"]) == (
        "/api/chat/conversations/",
        {"view": ["all"], "limit": ["2"], "q": ["S"]},
    )
    summary = second["results"][0]
    assert set(summary) == SUMMARY_KEYS
    assert (summary["state"], summary["last_message"], summary["assigned_agent"]) == (
        "bot",
        None,
        None,
    )


@pytest.mark.parametrize(
    "query", ["view=nope", "limit=0", "limit=201", "offset=-1", "state=closed", "limit=x"]
)
def test_conversation_list_refuses_bad_parameters(query):
    response = logged_in(make_agent("anna")).get(f"/api/chat/conversations/?{query}")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def test_conversation_list_costs_the_same_queries_for_many_conversations(
    django_assert_max_num_queries,
):
    anna = make_agent("anna")
    for index in range(25):
        shopper = Shopper.objects.create(first_name=f"S{index}")
        services.shopper_message_post(shopper=shopper, body="returns?", client_id=f"c{index}")
    client = logged_in(anna)

    # session, user, two for permissions, count, page, last messages
    with django_assert_max_num_queries(7):
        response = client.get("/api/chat/conversations/?view=all&limit=25")

    assert [row["last_message"]["author_kind"] for row in response.json()["results"]] == [
        "bot"
    ] * 25


def test_messages_include_notes_for_agents_and_start_after_a_seq(conversation):
    anna = make_agent("anna")
    services.agent_message_post(
        agent=anna, conversation_id=conversation.pk, body="Hello Ada", client_id="a1"
    )
    services.agent_message_post(
        agent=anna, conversation_id=conversation.pk, body="VIP", client_id="n1", internal=True
    )
    client = logged_in(anna)

    everything = client.get(f"/api/chat/conversations/{conversation.pk}/messages/").json()
    later = client.get(f"/api/chat/conversations/{conversation.pk}/messages/?after_seq=3").json()
    assert (everything["next"], later["next"]) == (None, None)
    everything, later = everything["results"], later["results"]

    assert [(m["seq"], m["author"]["kind"], m["internal"]) for m in everything] == [
        (1, "shopper", False),
        (2, "bot", False),
        (3, "system", False),
        (4, "agent", False),
        (5, "agent", True),
    ]
    assert [m["body"] for m in later] == ["Hello Ada", "VIP"]
    assert later[0]["author"] == {"kind": "agent", "name": "Anna", "id": anna.pk}


@pytest.mark.parametrize(
    "query", ["after_seq=-1", "after_seq=x", "after_seq=99999999999", "limit=0", "limit=201"]
)
def test_messages_refuse_bad_cursors(conversation, query):
    client = logged_in(make_agent("anna"))

    response = client.get(f"/api/chat/conversations/{conversation.pk}/messages/?{query}")

    assert response.status_code == 400


def test_messages_list_costs_the_same_queries_for_long_conversations(
    conversation, django_assert_max_num_queries
):
    anna = make_agent("anna")
    for index in range(30):
        services.agent_message_post(
            agent=anna, conversation_id=conversation.pk, body=f"m{index}", client_id=f"a{index}"
        )
    client = logged_in(anna)

    # session, user, two for permissions, the conversation, the messages with their authors
    with django_assert_max_num_queries(6):
        response = client.get(f"/api/chat/conversations/{conversation.pk}/messages/")

    assert len(response.json()["results"]) == 33


def test_messages_page_forward_from_after_seq_and_never_cut_to_the_newest(conversation):
    anna = make_agent("anna")
    Message.objects.bulk_create(
        Message(conversation_id=conversation.pk, seq=seq, author_kind="system", body=f"m{seq}")
        for seq in range(4, 451)
    )
    client = logged_in(anna)

    pages = []
    url = f"/api/chat/conversations/{conversation.pk}/messages/?after_seq=10"
    while url:
        body = client.get(url).json()
        pages.append([m["seq"] for m in body["results"]])
        url = body["next"]

    assert [len(page) for page in pages] == [200, 200, 40]
    assert [seq for page in pages for seq in page] == list(range(11, 451))
    short = client.get(f"/api/chat/conversations/{conversation.pk}/messages/?after_seq=440&limit=5")
    assert [m["seq"] for m in short.json()["results"]] == [441, 442, 443, 444, 445]
    assert short.json()["next"].endswith("?after_seq=445&limit=5")


@pytest.mark.parametrize(
    "path",
    [
        "/api/chat/conversations/999999/messages/",
        "/api/chat/conversations/999999/context/",
        "/api/chat/conversations/99999999999999999999/context/",
    ],
)
def test_unknown_conversations_are_404(path):
    response = logged_in(make_agent("anna")).get(path)

    assert response.status_code == 404
    assert response.json()["error"] == {"code": "not_found", "message": "No such conversation."}


def test_transcript_is_queued_for_the_given_or_the_shoppers_address(
    conversation, django_capture_on_commit_callbacks
):
    client = logged_in(make_agent("anna"))
    path = f"/api/chat/conversations/{conversation.pk}/transcript/"

    with django_capture_on_commit_callbacks(execute=True):
        given = client.post(path, {"email": "boss@example.com"}, content_type="application/json")
        default = client.post(path, {}, content_type="application/json")

    assert (given.status_code, given.json()) == (
        202,
        {"conversation_id": conversation.pk, "email": "boss@example.com"},
    )
    assert default.json()["email"] == "ada@example.com"
    assert [m.to for m in mail.outbox] == [["boss@example.com"], ["ada@example.com"]]


def test_transcript_without_any_known_address_is_a_400_and_sends_nothing(
    django_capture_on_commit_callbacks,
):
    nameless = Shopper.objects.create()
    cid = services.conversation_start(shopper=nameless).pk
    client = logged_in(make_agent("anna"))

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post(
            f"/api/chat/conversations/{cid}/transcript/", {}, content_type="application/json"
        )
        bad = client.post(
            f"/api/chat/conversations/{cid}/transcript/",
            {"email": "not-an-address"},
            content_type="application/json",
        )

    assert response.status_code == 400
    assert bad.status_code == 400
    assert callbacks == []
    assert mail.outbox == []


def test_canned_responses_and_agents_lists(django_assert_max_num_queries):
    CannedResponse.objects.all().delete()
    CannedResponse.objects.create(shortcut="ship", title="Shipping", body="2 days.")
    CannedResponse.objects.create(shortcut="hello", title="Hello", body="Hi!")
    anna = make_agent("anna", capacity=3)
    make_agent("bob", online=False)
    make_agent("cem", online=False)
    get_user_model().objects.create_user(username="clerk", is_staff=True)  # not an agent
    client = logged_in(anna)

    with django_assert_max_num_queries(5):
        canned = client.get("/api/chat/canned-responses/").json()
    with django_assert_max_num_queries(8):
        agents = client.get("/api/chat/agents/").json()

    assert [(row["shortcut"], row["body"]) for row in canned] == [
        ("hello", "Hi!"),
        ("ship", "2 days."),
    ]
    assert [(a["name"], a["status"], a["load"], a["capacity"]) for a in agents] == [
        ("Anna", "online", 0, 3),
        ("Bob", "offline", 0, 5),
        ("Cem", "offline", 0, 5),
    ]


def test_context_has_the_current_page_then_registered_sections(conversation):
    anna = make_agent("anna")
    # Assigned to her: she sees the shopper's personal data too.
    Conversation.objects.filter(pk=conversation.pk).update(
        page_url="https://shop.example/cart",
        page_title="Cart",
        assigned_agent=anna,
        state=Conversation.State.ASSIGNED,
    )
    registry.register_context_section(
        "test_points", "Points", lambda shopper: {"points": 120, "name": shopper.first_name}
    )
    try:
        response = logged_in(anna).get(f"/api/chat/conversations/{conversation.pk}/context/")
    finally:
        registry.unregister("test_points")

    sections = response.json()
    assert [s["key"] for s in sections] == [
        "current_page",
        "profile",
        "recent_orders",
        "recently_viewed",
        "test_points",
    ]
    assert sections[0]["data"]["url"] == "https://shop.example/cart"
    assert sections[-1] == {
        "key": "test_points",
        "title": "Points",
        "data": {"points": 120, "name": "Ada"},
    }


# --- The public widget configuration ----------------------------------------------------


def test_widget_config_for_an_active_key_and_404_otherwise():
    key = WriteKey.objects.create(name="shop")
    inactive = WriteKey.objects.create(name="old", active=False)

    ok = Client().get(f"/api/chat/widget-config/?write_key={key.key}")
    unknown = Client().get("/api/chat/widget-config/?write_key=nope")
    off = Client().get(f"/api/chat/widget-config/?write_key={inactive.key}")
    missing = Client().get("/api/chat/widget-config/")

    assert ok.status_code == 200
    assert ok.json() == {
        "greeting": "Hi! How can we help you today?",
        "business_hours_open": True,
        "languages": ["en", "lv", "tr"],
        "ws_path": "/ws/chat/",
        # No locale: the merchant's fallback, English, whose labels are the msgids themselves.
        "language": "en",
        "strings": {},
    }
    assert (unknown.status_code, off.status_code, missing.status_code) == (404, 404, 400)


def test_widget_config_answers_cors_only_for_the_keys_allowed_origins():
    key = WriteKey.objects.create(name="shop", allowed_origins=["https://shop.example.com"])
    path = f"/api/chat/widget-config/?write_key={key.key}"

    allowed = Client().get(path, HTTP_ORIGIN="https://shop.example.com")
    foreign = Client().get(path, HTTP_ORIGIN="https://evil.example.net")
    same_origin = Client().get(path)

    assert allowed["Access-Control-Allow-Origin"] == "https://shop.example.com"
    assert "Origin" in allowed["Vary"]
    assert "Access-Control-Allow-Origin" not in foreign
    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    assert "Origin" in foreign["Vary"]
    assert "Access-Control-Allow-Origin" not in same_origin
    assert (allowed.status_code, same_origin.status_code) == (200, 200)


def test_widget_config_of_a_key_without_origins_serves_only_patrons_own_pages(settings):
    settings.ALLOWED_HOSTS = ["*"]  # the development default
    key = WriteKey.objects.create(name="demo")
    path = f"/api/chat/widget-config/?write_key={key.key}"

    foreign = Client().get(path, HTTP_ORIGIN="https://evil.example.net")
    own = Client().get(path, HTTP_ORIGIN="http://testserver")

    assert foreign.status_code == 403
    assert foreign.json()["error"]["code"] == "origin_not_allowed"
    assert own.status_code == 200
