"""Chat protocol conformance, part 3: the agent console socket ``/ws/console/``
(docs/chat-protocol.md §3), every client and server frame through real ``websockets`` clients
against one real uvicorn server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat.models import AgentStatus, CannedResponse, Conversation, Message
from commerce.models import WriteKey
from tests.chat.conftest import make_agent
from tests.support.chat_protocol import (
    SUMMARY_KEYS,
    console_socket,
    covers,
    hand_off_assigned,
    session_cookie,
    shopper_socket,
)
from tests.support.processes import asgi_server_fixture
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


server = asgi_server_fixture(PATRON_RATE_CHAT_CONVERSATIONS="1000/600")


@pytest.fixture
def anna(chat_settings: Any) -> Any:
    return make_agent("anna", online=False)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def started(server: str, key: WriteKey, anonymous_id: str, body: str = "hello") -> int:
    """A conversation in state ``bot`` with one shopper message and the bot's answer."""
    shopper, _ = await shopper_socket(server, key, anonymous_id=anonymous_id)
    await shopper.send({"type": "message.send", "client_id": "c1", "body": body})
    cid = int((await shopper.expect("message.ack"))["message"]["conversation_id"])
    await shopper.expect("conversation.state")
    await shopper.close()
    return cid


async def handed_off(server: str, key: WriteKey, anonymous_id: str) -> tuple[int, str]:
    """A conversation the shopper handed off (its state now: ``queued`` or ``assigned``)."""
    shopper, _ = await shopper_socket(server, key, anonymous_id=anonymous_id)
    await shopper.send({"type": "message.send", "client_id": "c1", "body": "returns?"})
    cid = int((await shopper.expect("message.ack"))["message"]["conversation_id"])
    await shopper.expect("conversation.state", conversation__state="bot")
    await shopper.send({"type": "handoff.request"})
    state = await shopper.expect("conversation.state", conversation__state="queued")
    await shopper.close()
    return cid, state["conversation"]["state"]


@covers("console<inbox.snapshot", "console<canned.list", "console<presence")
def test_a_console_is_greeted_with_the_inbox_canned_responses_and_presence(server, key, anna):
    AgentStatus.objects.filter(user=anna).update(capacity=0)  # the queued one stays queued
    cookie_a = session_cookie(anna)
    CannedResponse.objects.create(shortcut="ship", title="Shipping", body="Within 2 days.")

    async def scenario() -> tuple[int, list[dict[str, Any]]]:
        cid, _ = await handed_off(server, key, "a-1")
        await started(server, key, "a-2")
        console, greeting = await console_socket(server, cookie_a)
        await console.close()
        return cid, greeting

    cid, greeting = run(scenario())

    assert [f["type"] for f in greeting] == ["inbox.snapshot", "canned.list", "presence"]
    snapshot, canned, presence = greeting
    assert (snapshot["view"], snapshot["counts"]) == (
        "unassigned",
        {"unassigned": 1, "mine": 0, "all": 2, "snoozed": 0},
    )
    assert [c["id"] for c in snapshot["conversations"]] == [cid]
    assert set(snapshot["conversations"][0]) == SUMMARY_KEYS
    assert canned["responses"] == [
        {"id": r.pk, "shortcut": r.shortcut, "title": r.title, "body": r.body}
        for r in CannedResponse.objects.order_by("shortcut")
    ]
    assert {"id": CannedResponse.objects.get(shortcut="ship").pk, "shortcut": "ship"}.items() <= (
        next(r for r in canned["responses"] if r["shortcut"] == "ship").items()
    )
    assert presence == {
        "type": "presence",
        "agent": {"id": anna.pk, "name": "Anna"},
        "status": "online",
        "load": 0,
        "capacity": 0,
    }


@covers("console>inbox.query", "console<inbox.snapshot", "console<error")
def test_inbox_query_answers_a_snapshot_of_the_view_and_filters(server, key, anna):
    cookie_a = session_cookie(anna)
    AgentStatus.objects.filter(user=anna).update(capacity=1)

    async def scenario() -> tuple[int, dict[str, dict[str, Any]]]:
        mine = await started(server, key, "a-mine")
        console, _ = await console_socket(server, cookie_a)
        await console.send(
            {"type": "message.send", "conversation_id": mine, "client_id": "a1", "body": "Hi"}
        )
        await console.expect("message.ack", client_id="a1")  # replying assigned it to her
        await handed_off(server, key, "a-other")  # she is full: it stays queued
        answers = {}
        queries: dict[str, dict[str, Any]] = {
            "mine": {"view": "mine"},
            "unassigned": {"view": "unassigned"},
            "all": {"view": "all"},
            "all-bot": {"view": "all", "state": "bot"},
            "all-queued": {"view": "all", "state": "queued"},
            "all-assigned": {"view": "all", "state": "assigned"},
            "all-limit": {"view": "all", "limit": 1},
            "search": {"view": "all", "q": "nobody-is-called-this"},
            "bad-view": {"view": "everything"},
        }
        for ref, query in queries.items():
            await console.send({"type": "inbox.query", "ref": ref, **query})
            answers[ref] = await console.expect(
                "error" if ref == "bad-view" else "inbox.snapshot", ref=ref
            )
        await console.close()
        return mine, answers

    mine, answers = run(scenario())

    other = Conversation.objects.exclude(pk=mine).get().pk
    ids = {ref: [c["id"] for c in a.get("conversations", [])] for ref, a in answers.items()}
    assert sorted(ids.pop("all")) == sorted([mine, other])
    assert len(ids.pop("all-limit")) == 1
    assert ids == {
        "mine": [mine],
        "unassigned": [other],
        "all-bot": [],
        "all-queued": [other],
        "all-assigned": [mine],
        "search": [],
        "bad-view": [],
    }
    assert answers["mine"]["view"] == "mine"
    assert answers["mine"]["counts"] == {"unassigned": 1, "mine": 1, "all": 2, "snoozed": 0}
    assert (answers["bad-view"]["code"], answers["bad-view"]["type"]) == ("invalid", "error")


@covers("console<inbox.update")
def test_every_console_hears_of_new_conversations_and_their_messages(server, key, anna):
    cookie_a = session_cookie(anna)

    async def scenario() -> list[dict[str, Any]]:
        console, _ = await console_socket(server, cookie_a)
        cid = await started(server, key, "a-1", body="returns?")
        updates: list[dict[str, Any]] = []
        while not updates or updates[-1]["conversation"]["last_seq"] < 2:
            updates.append(await console.expect("inbox.update", conversation__id=cid))
        await console.close()
        return updates

    updates = run(scenario())

    assert {u["conversation"]["state"] for u in updates} == {"bot"}
    assert set(updates[-1]["conversation"]) == SUMMARY_KEYS
    assert updates[-1]["conversation"]["last_message"]["author_kind"] == "bot"


@covers(
    "console>conversation.open",
    "console<conversation.opened",
    "console<message.new",
    "console>conversation.leave",
    "console<error",
)
def test_open_follows_a_conversation_and_leave_stops_its_events(server, key, anna):
    cookie_a = session_cookie(anna)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-1")
        await shopper.send({"type": "message.send", "client_id": "c1", "body": "returns?"})
        cid = (await shopper.expect("message.ack"))["message"]["conversation_id"]
        await shopper.expect("conversation.state")
        console, _ = await console_socket(server, cookie_a)
        await console.send({"type": "conversation.open", "conversation_id": cid, "ref": "o"})
        seen["opened"] = await console.expect("conversation.opened", ref="o")
        await shopper.send({"type": "message.send", "client_id": "c2", "body": "shipping?"})
        seen["live"] = await console.expect("message.new", message__client_id="c2")
        await shopper.expect("message.new", message__author__kind="bot")
        await console.settle()

        await console.send({"type": "conversation.leave", "conversation_id": cid})
        await shopper.send({"type": "message.send", "client_id": "c3", "body": "refund?"})
        await shopper.expect("message.ack", client_id="c3")
        await shopper.expect("message.new", message__author__kind="bot")
        # The inbox still hears of it (a bot conversation), the conversation's events do not.
        await console.expect("inbox.update", conversation__last_message__author_kind="bot")
        seen["after_leave"] = await console.settle()

        await console.send({"type": "conversation.open", "conversation_id": 999999, "ref": "x"})
        seen["unknown"] = await console.expect("error")
        seen["cid"] = cid
        await shopper.close()
        await console.close()
        return seen

    seen = run(scenario())

    cid = seen["cid"]
    opened = seen["opened"]
    assert set(opened) == {"type", "conversation", "messages", "has_more", "context", "ref"}
    assert set(opened["conversation"]) == SUMMARY_KEYS
    assert [(m["seq"], m["author"]["kind"]) for m in opened["messages"]] == [
        (1, "shopper"),
        (2, "bot"),
    ]
    assert {"profile", "current_page"} <= {s["key"] for s in opened["context"]}
    assert (seen["live"]["message"]["conversation_id"], seen["live"]["message"]["seq"]) == (cid, 3)
    assert [f for f in seen["after_leave"] if f["type"] != "inbox.update"] == []
    assert (seen["unknown"]["code"], seen["unknown"]["ref"]) == ("not_found", "x")


@covers("console>message.send", "console<message.ack", "console<message.new")
def test_agent_replies_reach_the_shopper_and_notes_reach_only_agents(server, key, anna):
    cookie_a = session_cookie(anna)
    boris = make_agent("boris", online=False)
    cookie_b = session_cookie(boris)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        console, _ = await console_socket(server, cookie_a)
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-1")
        cid = await hand_off_assigned(shopper, console)
        other, _ = await console_socket(server, cookie_b)
        await other.send({"type": "conversation.open", "conversation_id": cid, "ref": "o"})
        await other.expect("conversation.opened", ref="o")
        await shopper.settle()

        reply = {"type": "message.send", "conversation_id": cid, "client_id": "a1", "body": "Hi"}
        await console.send({**reply, "ref": "r"})
        seen["ack"] = await console.expect("message.ack")
        seen["shopper_reply"] = await shopper.expect("message.new")
        note = {**reply, "client_id": "n1", "body": "VIP", "internal": True}
        await console.send(note)
        seen["note_ack"] = await console.expect("message.ack")
        seen["boris_note"] = await other.expect("message.new", message__client_id="n1")
        await console.send({**reply, "body": "Hi"})  # a re-send: the stored reply again
        seen["again"] = await console.expect("message.ack")
        seen["shopper_rest"] = await shopper.settle()
        seen["cid"] = cid
        await shopper.close()
        await other.close()
        await console.close()
        return seen

    seen = run(scenario())

    cid = seen["cid"]
    ack = seen["ack"]
    assert (ack["client_id"], ack["ref"]) == ("a1", "r")
    assert ack["message"]["author"] == {"kind": "agent", "name": "Anna", "id": anna.pk}
    assert seen["shopper_reply"]["message"] == ack["message"]
    assert seen["note_ack"]["message"]["internal"] is True
    assert seen["boris_note"]["message"] == seen["note_ack"]["message"]
    assert seen["again"]["message"] == ack["message"]
    assert seen["shopper_rest"] == []  # no note, no second reply
    assert list(
        Message.objects.filter(conversation_id=cid, author_kind="agent").values_list(
            "body", "internal"
        )
    ) == [("Hi", False), ("VIP", True)]


@covers(
    "console>conversation.assign",
    "console>conversation.transfer",
    "console<assignment",
    "console<inbox.update",
    "console>presence.set",
    "console<presence",
    "console<error",
    "shopper<assignment",
)
def test_assign_and_transfer_tell_everyone_concerned(server, key, anna):
    cookie_a = session_cookie(anna)
    boris = make_agent("boris", online=False)
    cookie_b = session_cookie(boris)

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        console_a, _ = await console_socket(server, cookie_a)
        console_b, _ = await console_socket(server, cookie_b)
        for console, agent in ((console_a, anna), (console_b, boris)):
            await console.send({"type": "presence.set", "status": "away", "ref": "p"})
            seen.setdefault("presence", []).append(
                await console_a.expect("presence", agent__id=agent.pk, status="away")
            )
        await console_b.expect("presence", agent__id=boris.pk, status="away")
        cid, state = await handed_off(server, key, "a-1")
        assert state == "queued"  # nobody available
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-1", conversation_id=cid)

        await console_a.send({"type": "conversation.assign", "conversation_id": cid})
        seen["a_assignment"] = await console_a.expect("assignment", conversation_id=cid)
        # She did not follow it: the state reaches her console as an inbox.update.
        seen["a_state"] = await console_a.expect(
            "inbox.update", conversation__id=cid, conversation__state="assigned"
        )
        seen["shopper_anna"] = await shopper.expect("assignment")

        # Boris is away: a transfer to him is refused, and nothing moves.
        await console_a.send(
            {
                "type": "conversation.transfer",
                "conversation_id": cid,
                "agent_id": boris.pk,
                "ref": "away",
            }
        )
        seen["boris_away"] = await console_a.expect("error", ref="away")
        await console_b.send({"type": "presence.set", "status": "online", "ref": "on"})
        await console_a.expect("presence", agent__id=boris.pk, status="online")
        await console_a.send(
            {"type": "conversation.transfer", "conversation_id": cid, "agent_id": boris.pk}
        )
        try:
            seen["b_assignment"] = await console_b.expect("assignment", conversation_id=cid)
        except AssertionError as exc:  # say why the transfer did not happen
            raise AssertionError(f"{exc}; Anna's console got {await console_a.settle()}") from None
        seen["a_let_go"] = await console_a.expect("assignment", agent__id=boris.pk)
        seen["shopper_boris"] = await shopper.expect("assignment", agent__name="Boris")
        await console_b.send({"type": "inbox.query", "view": "mine", "ref": "m"})
        seen["b_mine"] = await console_b.expect("inbox.snapshot", ref="m")
        await console_b.send(
            {"type": "conversation.transfer", "conversation_id": cid, "agent_id": 0, "ref": "t"}
        )
        seen["unknown_agent"] = await console_b.expect("error", ref="t")
        await console_b.send({"type": "presence.set", "status": "asleep", "ref": "s"})
        seen["bad_status"] = await console_b.expect("error", ref="s")
        seen["cid"] = cid
        await shopper.close()
        await console_a.close()
        await console_b.close()
        return seen

    seen = run(scenario())

    cid = seen["cid"]
    assert [(p["agent"]["name"], p["status"]) for p in seen["presence"]] == [
        ("Anna", "away"),
        ("Boris", "away"),
    ]
    assert seen["a_assignment"] == {
        "type": "assignment",
        "conversation_id": cid,
        "agent": {"id": anna.pk, "name": "Anna"},
    }
    assert seen["a_state"]["conversation"]["state"] == "assigned"
    assert seen["a_state"]["conversation"]["assigned_agent"] == {"id": anna.pk, "name": "Anna"}
    assert seen["shopper_anna"] == {
        "type": "assignment",
        "conversation_id": cid,
        "agent": {"name": "Anna"},
    }
    assert seen["boris_away"]["code"] == "agent_unavailable"
    assert seen["b_assignment"]["agent"] == {"id": boris.pk, "name": "Boris"}
    assert seen["a_let_go"]["agent"] == {"id": boris.pk, "name": "Boris"}
    assert seen["shopper_boris"]["agent"] == {"name": "Boris"}
    assert [c["id"] for c in seen["b_mine"]["conversations"]] == [cid]
    assert seen["unknown_agent"]["code"] == "not_found"
    assert seen["bad_status"]["code"] == "invalid"
    assert Conversation.objects.get(pk=cid).assigned_agent_id == boris.pk
    assert AgentStatus.objects.get(user=boris).status == "online"  # set before the transfer


@covers(
    "console>canned.list",
    "console<canned.list",
    "console>transcript.send",
    "console<transcript.queued",
)
def test_canned_list_and_transcript_send_are_answered(server, key, anna):
    cookie_a = session_cookie(anna)
    CannedResponse.objects.create(shortcut="hi", title="Greeting", body="Hello!")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
        cid = await started(server, key, "a-1")
        console, _ = await console_socket(server, cookie_a)
        await console.send({"type": "canned.list", "ref": "c"})
        canned = await console.expect("canned.list", ref="c")
        await console.send(
            {
                "type": "transcript.send",
                "conversation_id": cid,
                "email": "t@example.com",
                "ref": "t",
            }
        )
        queued = await console.expect("transcript.queued")
        await console.send({"type": "transcript.send", "conversation_id": cid, "ref": "n"})
        no_address = await console.expect("error", ref="n")
        await console.close()
        return canned, queued, no_address, cid

    canned, queued, no_address, cid = run(scenario())

    assert canned == {
        "type": "canned.list",
        "responses": [
            {"id": r.pk, "shortcut": r.shortcut, "title": r.title, "body": r.body}
            for r in CannedResponse.objects.order_by("shortcut")
        ],
        "ref": "c",
    }
    assert queued == {
        "type": "transcript.queued",
        "conversation_id": cid,
        "email": "t@example.com",
        "ref": "t",
    }
    assert no_address["code"] == "invalid"
