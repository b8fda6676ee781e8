"""Chat protocol conformance, part 2: the shopper socket ``/ws/chat/`` (docs/chat-protocol.md
§2), every client and server frame through real ``websockets`` clients against one real
uvicorn server. The frames agents cause (typing, read, assignment) are driven from a real
console socket."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from chat.models import BusinessHours, ChatSettings, Conversation, CsatRating, Message
from chat.services.conversations import NO_AGENTS_MESSAGE
from chat.services.language import translate
from commerce.models import WriteKey
from tests.chat.conftest import make_agent
from tests.chat.wsclient import ChatClient
from tests.support.chat_protocol import (
    console_socket,
    covers,
    hand_off_assigned,
    session_cookie,
    shopper_socket,
)
from tests.support.processes import asgi_server_fixture
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM

MESSAGE_KEYS = {
    "id",
    "conversation_id",
    "seq",
    "author",
    "body",
    "internal",
    "client_id",
    "created_at",
}
SHOPPER_VIEW_KEYS = {
    "id",
    "state",
    "last_seq",
    "channel",
    "agent",
    "queue_position",
    "agents_online",
    "business_hours_open",
    "csat_requested",
}


server = asgi_server_fixture(PATRON_RATE_CHAT_CONVERSATIONS="1000/600")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_utc_time(value: str) -> None:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.utcoffset() == dt.timedelta(0), value


@covers("shopper>hello", "shopper<welcome")
def test_hello_is_answered_by_welcome(server, key):
    async def scenario() -> dict[str, Any]:
        _, welcome = await shopper_socket(
            server,
            key,
            anonymous_id="a-1",
            locale="lv",
            page={"url": "https://shop.example/", "title": "Home"},
        )
        return welcome

    welcome = run(scenario())

    assert set(welcome) == {
        "type",
        "token",
        "shopper",
        "conversation",
        "messages",
        "has_more",
        "settings",
    }
    assert isinstance(welcome["token"], str)
    assert welcome["token"]
    assert welcome["shopper"] == {"name": "", "identified": False}
    assert (welcome["conversation"], welcome["messages"]) == (None, [])
    assert welcome["settings"] == {
        # The hello's locale is Latvian: the (default) greeting is said in Latvian.
        "greeting": translate(ChatSettings.objects.get().greeting, language="lv"),
        "business_hours_open": True,
        "languages": ["en", "lv", "tr"],
    }


@covers(
    "shopper>message.send",
    "shopper<message.ack",
    "shopper<message.new",
    "shopper<conversation.state",
    "shopper<error",
)
def test_message_send_is_acked_to_its_socket_and_new_to_the_shoppers_other_tabs(server, key):
    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        tab_a, welcome = await shopper_socket(server, key, anonymous_id="a-1")
        await tab_a.send(
            {"type": "message.send", "client_id": "c1", "body": "  How long does shipping take? "}
        )
        # The first message starts the conversation: ack, what the bot said, the state.
        seen["first"] = [await tab_a.recv() for _ in range(3)]
        cid = seen["first"][0]["message"]["conversation_id"]
        seen["tab_a_rest"] = await tab_a.settle()

        tab_b, seen["welcome_b"] = await shopper_socket(
            server, key, token=welcome["token"], conversation_id=cid
        )
        second = "And returns?"
        await tab_a.send({"type": "message.send", "client_id": "c2", "body": second})
        seen["ack_2"] = await tab_a.expect("message.ack")
        seen["bot_2_a"] = await tab_a.expect("message.new")
        seen["tab_b"] = await tab_b.expect("message.new", message__client_id="c2")
        seen["bot_2_b"] = await tab_b.expect("message.new")

        # Re-sent after a lost ack: the stored message again, nothing new anywhere.
        await tab_a.send({"type": "message.send", "client_id": "c2", "body": second})
        seen["ack_2_again"] = await tab_a.expect("message.ack")
        # Bad input: an error with the frame's ref, nothing stored, the socket stays open.
        await tab_a.send({"type": "message.send", "client_id": "c3", "body": " ", "ref": "e"})
        seen["empty"] = await tab_a.expect("error")
        await tab_a.send({"type": "message.send", "client_id": "c4", "body": "x" * 4001})
        seen["too_long"] = await tab_a.expect("error")
        seen["tab_a_after"] = await tab_a.settle()
        seen["tab_b_after"] = await tab_b.settle()
        await tab_a.close()
        await tab_b.close()
        return seen

    seen = run(scenario())

    ack, bot, state = seen["first"]
    assert ack["type"] == "message.ack"
    assert ack["client_id"] == "c1"
    assert set(ack["message"]) == MESSAGE_KEYS
    cid = ack["message"]["conversation_id"]
    assert ack["message"] | {"id": 0, "created_at": ""} == {
        "id": 0,
        "conversation_id": cid,
        "seq": 1,
        "author": {"kind": "shopper", "name": "You", "id": None},
        "body": "How long does shipping take?",
        "internal": False,
        "client_id": "c1",
        "created_at": "",
    }
    assert_utc_time(ack["message"]["created_at"])
    assert (bot["type"], bot["message"]["seq"], bot["message"]["author"]["kind"]) == (
        "message.new",
        2,
        "bot",
    )
    assert bot["message"]["body"] == "We ship within 2 working days."
    assert state["type"] == "conversation.state"
    assert set(state["conversation"]) == SHOPPER_VIEW_KEYS
    assert (state["conversation"]["id"], state["conversation"]["state"]) == (cid, "bot")
    assert seen["tab_a_rest"] == []

    assert [m["seq"] for m in seen["welcome_b"]["messages"]] == [1, 2]
    assert seen["tab_b"]["message"] == seen["ack_2"]["message"]
    assert seen["ack_2_again"]["message"] == seen["ack_2"]["message"]
    assert (seen["empty"]["code"], seen["empty"]["ref"]) == ("invalid", "e")
    assert seen["too_long"]["code"] == "invalid"
    assert seen["bot_2_a"]["message"] == seen["bot_2_b"]["message"]
    assert (seen["bot_2_a"]["message"]["seq"], seen["bot_2_a"]["message"]["body"]) == (
        4,
        "You can return unused items within 30 days.",
    )
    # No message.new of the sender's own message, no second copy of anything.
    assert seen["tab_a_after"] == []
    assert seen["tab_b_after"] == []
    assert Message.objects.filter(author_kind="shopper").count() == 2


@covers(
    "shopper>typing",
    "shopper>read",
    "shopper<typing",
    "shopper<read",
    "console>typing",
    "console>read",
    "console<typing",
    "console<read",
)
def test_typing_and_read_receipts_travel_between_shopper_and_agent(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        console, _ = await console_socket(server, cookie)
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-1")
        cid = await hand_off_assigned(shopper, console)
        await shopper.settle()
        await console.settle()

        await shopper.send({"type": "typing", "active": True})
        seen["console_typing"] = await console.expect("typing")
        await shopper.send({"type": "read", "seq": 2})
        seen["console_read"] = await console.expect("read")
        await console.send({"type": "typing", "conversation_id": cid, "active": False})
        seen["shopper_typing"] = await shopper.expect("typing")
        await console.send({"type": "read", "conversation_id": cid, "seq": 1})
        seen["shopper_read"] = await shopper.expect("read")
        # Each side hears the other's, never its own.
        seen["console_rest"] = await console.settle()
        seen["shopper_rest"] = await shopper.settle()
        seen["cid"] = cid
        await shopper.close()
        await console.close()
        return seen

    seen = run(scenario())

    cid = seen["cid"]
    assert seen["console_typing"] == {
        "type": "typing",
        "conversation_id": cid,
        "author": {"kind": "shopper", "name": "Shopper", "id": None},
        "active": True,
    }
    assert seen["console_read"] == {
        "type": "read",
        "conversation_id": cid,
        "reader": "shopper",
        "seq": 2,
    }
    assert seen["shopper_typing"] == {
        "type": "typing",
        "conversation_id": cid,
        "author": {"kind": "agent", "name": "Anna", "id": agent.pk},
        "active": False,
    }
    assert seen["shopper_read"] == {
        "type": "read",
        "conversation_id": cid,
        "reader": "agent",
        "seq": 1,
    }
    assert seen["console_rest"] == []
    assert seen["shopper_rest"] == []


@covers(
    "shopper>handoff.request",
    "shopper<queue.position",
    "shopper<conversation.state",
    "shopper<assignment",
    "shopper<message.new",
)
def test_hand_off_queues_with_a_position_then_an_agent_is_assigned(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-1")
        await shopper.send({"type": "message.send", "client_id": "c1", "body": "returns?"})
        await shopper.expect("conversation.state", conversation__state="bot")
        await shopper.settle()
        await shopper.send({"type": "handoff.request"})
        # queue.position is published last: what the hand-off sent before it has arrived.
        position = await shopper.expect("queue.position")
        seen["queued"] = [*await shopper.settle(), position]
        console, _ = await console_socket(server, cookie)  # an agent comes online: routed
        seen["assigned_state"] = await shopper.expect(
            "conversation.state", conversation__state="assigned"
        )
        seen["assignment"] = await shopper.expect("assignment")
        seen["rest"] = await shopper.settle()
        await shopper.close()
        await console.close()
        return seen

    seen = run(scenario())

    cid = Conversation.objects.get().pk
    queued = seen["queued"]
    # Nobody is online: the hand-off says so honestly (no promise of an agent) and asks for an
    # email; the conversation still waits in the queue, so an agent coming online takes it.
    assert [f["type"] for f in queued] == [
        "message.new",
        "offline.prompt",
        "conversation.state",
        "queue.position",
    ]
    by_type = {f["type"]: f for f in queued}
    assert by_type["message.new"]["message"]["body"] == str(NO_AGENTS_MESSAGE)
    assert by_type["offline.prompt"]["reason"] == "no_agents"
    assert by_type["conversation.state"]["conversation"]["state"] == "queued"
    assert by_type["conversation.state"]["conversation"]["agents_online"] == 0
    assert by_type["conversation.state"]["conversation"]["queue_position"] == 1
    assert by_type["queue.position"] == {
        "type": "queue.position",
        "conversation_id": cid,
        "position": 1,
        "agents_online": 0,
    }
    assert seen["assigned_state"]["conversation"]["agent"] == {"name": "Anna"}
    assert seen["assignment"] == {
        "type": "assignment",
        "conversation_id": cid,
        "agent": {"name": "Anna"},
    }
    assert [f["message"]["body"] for f in seen["rest"] if f["type"] == "message.new"] == [
        "Anna joined the conversation."
    ]


@covers(
    "shopper<csat.request",
    "shopper>csat.submit",
    "shopper<csat.recorded",
    "shopper<error",
    "console>conversation.resolve",
    "console<conversation.state",
    "console<csat.recorded",
)
def test_resolve_asks_for_a_rating_once(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        console, _ = await console_socket(server, cookie)
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-1")
        cid = await hand_off_assigned(shopper, console)
        await console.send({"type": "conversation.resolve", "conversation_id": cid})
        seen["console_state"] = await console.expect("conversation.state")
        seen["request"] = await shopper.expect("csat.request")
        seen["shopper_state"] = await shopper.expect("conversation.state")
        await console.settle()
        await shopper.send({"type": "csat.submit", "rating": 4, "comment": "quick"})
        seen["shopper_recorded"] = await shopper.expect("csat.recorded")
        seen["console_recorded"] = await console.expect("csat.recorded")
        await shopper.send({"type": "csat.submit", "rating": 1, "ref": "again"})
        seen["again"] = await shopper.expect("error")
        await shopper.send({"type": "csat.submit", "rating": 6, "ref": "six"})
        seen["six"] = await shopper.expect("error")
        seen["cid"] = cid
        await shopper.close()
        await console.close()
        return seen

    seen = run(scenario())

    cid = seen["cid"]
    assert seen["console_state"]["conversation"]["state"] == "resolved"
    assert seen["request"] == {"type": "csat.request", "conversation_id": cid}
    assert seen["shopper_state"]["conversation"]["state"] == "resolved"
    assert seen["shopper_state"]["conversation"]["csat_requested"] is True
    assert seen["shopper_recorded"] == {
        "type": "csat.recorded",
        "conversation_id": cid,
        "rating": 4,
    }
    assert seen["console_recorded"] == {
        "type": "csat.recorded",
        "conversation_id": cid,
        "rating": 4,
        "comment": "quick",
    }
    assert (seen["again"]["code"], seen["again"]["ref"]) == ("conflict", "again")
    assert (seen["six"]["code"], seen["six"]["ref"]) == ("invalid", "six")
    assert list(CsatRating.objects.values_list("rating", flat=True)) == [4]


@covers("shopper>transcript.request", "shopper<transcript.queued", "shopper<error")
def test_transcript_request_is_answered_with_transcript_queued(server, key):
    async def scenario() -> list[dict[str, Any]]:
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-1")
        answers = []
        await shopper.send({"type": "transcript.request", "email": "t@example.com", "ref": "0"})
        answers.append(await shopper.expect("error"))  # no conversation yet
        await shopper.send({"type": "message.send", "client_id": "c1", "body": "hello"})
        await shopper.expect("message.ack")
        await shopper.send({"type": "transcript.request", "email": "t@example.com", "ref": "1"})
        answers.append(await shopper.expect("transcript.queued"))
        await shopper.send({"type": "transcript.request", "ref": "2"})  # address unknown
        answers.append(await shopper.expect("error"))
        await shopper.send({"type": "transcript.request", "email": "not-an-address", "ref": "3"})
        answers.append(await shopper.expect("error"))
        await shopper.close()
        return answers

    answers = run(scenario())

    cid = Conversation.objects.get().pk
    assert [(a["type"], a.get("code"), a["ref"]) for a in answers] == [
        ("error", "conflict", "0"),
        ("transcript.queued", None, "1"),
        ("error", "invalid", "2"),
        ("error", "invalid", "3"),
    ]
    assert answers[1] == {
        "type": "transcript.queued",
        "conversation_id": cid,
        "email": "t@example.com",
        "ref": "1",
    }


@covers(
    "shopper>page.view",
    "console>conversation.open",
    "console<conversation.opened",
    "console<context.update",
)
def test_page_view_updates_the_agents_context_live(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        shopper, _ = await shopper_socket(
            server, key, anonymous_id="a-1", page={"url": "https://shop.example/", "title": "Home"}
        )
        await shopper.send({"type": "message.send", "client_id": "c1", "body": "hello"})
        cid = (await shopper.expect("message.ack"))["message"]["conversation_id"]
        console, _ = await console_socket(server, cookie)
        await console.send({"type": "conversation.open", "conversation_id": cid, "ref": "o"})
        opened = await console.expect("conversation.opened", ref="o")
        await shopper.send(
            {"type": "page.view", "url": "https://shop.example/cart", "title": "Cart"}
        )
        update = await console.expect("context.update")
        await shopper.close()
        await console.close()
        return opened, update

    opened, update = run(scenario())

    cid = Conversation.objects.get().pk
    assert set(opened) == {"type", "conversation", "messages", "has_more", "context", "ref"}
    current = next(s for s in opened["context"] if s["key"] == "current_page")
    assert (current["data"]["url"], current["data"]["title"]) == ("https://shop.example/", "Home")
    assert update["conversation_id"] == cid
    assert update["section"]["key"] == "current_page"
    assert update["section"]["title"] == "Current page"
    assert (update["section"]["data"]["url"], update["section"]["data"]["title"]) == (
        "https://shop.example/cart",
        "Cart",
    )
    assert Conversation.objects.get().page_url == "https://shop.example/cart"


@pytest.fixture
def closed_now(key: WriteKey) -> None:
    """Business hours on another weekday only: the shop is closed now."""
    closed_day = (dt.datetime.now(dt.UTC).weekday() + 3) % 7
    BusinessHours.objects.create(weekday=closed_day, opens=dt.time(9), closes=dt.time(17))


@covers("shopper<offline.prompt", "shopper>offline.submit", "shopper<message.ack")
def test_outside_business_hours_a_hand_off_prompts_for_an_email(server, key, closed_now):
    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
        shopper, welcome = await shopper_socket(server, key, anonymous_id="a-1")
        assert welcome["settings"]["business_hours_open"] is False
        await shopper.send({"type": "handoff.request"})
        frames = await shopper.settle()
        await shopper.send(
            {
                "type": "offline.submit",
                "email": "night@example.com",
                "body": "Call me",
                "client_id": "o1",
            }
        )
        ack = await shopper.expect("message.ack")
        rest = await shopper.settle()
        await shopper.close()
        return frames, ack, rest

    frames, ack, rest = run(scenario())

    conversation = Conversation.objects.get()
    assert [f["type"] for f in frames] == ["message.new", "offline.prompt", "conversation.state"]
    assert frames[1] == {
        "type": "offline.prompt",
        "conversation_id": conversation.pk,
        "message": ChatSettings.objects.get().offline_message,
        "reason": "closed",
    }
    assert (ack["client_id"], ack["message"]["body"]) == ("o1", "Call me")
    assert (conversation.channel, conversation.state, conversation.follow_up_email) == (
        "email",
        "queued",
        "night@example.com",
    )
    assert [f for f in rest if f["type"] == "offline.prompt"] == []


@covers("shopper>hello", "shopper<error")
def test_hello_for_someone_elses_conversation_is_forbidden(server, key):
    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        owner, _ = await shopper_socket(server, key, anonymous_id="owner")
        await owner.send({"type": "message.send", "client_id": "c1", "body": "hello"})
        cid = (await owner.expect("message.ack"))["message"]["conversation_id"]
        await owner.close()
        other = await ChatClient(server, "/ws/chat/").connect()
        await other.send(
            {"type": "hello", "write_key": key.key, "anonymous_id": "other", "conversation_id": cid}
        )
        return await other.closed_with()

    frames, code = run(scenario())

    assert [(f["type"], f["code"]) for f in frames] == [("error", "forbidden")]
    assert code == 4003
