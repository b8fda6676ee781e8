"""Labels and snoozing in the console, over real sockets against a real server (#11 point 4):
agents add and remove labels, filter the inbox by them, the metrics count them; a snoozed
conversation leaves the inbox tabs and comes back when its time comes (the beat task's
service) or when the shopper writes."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from django.db import connection
from django.test import Client
from django.utils import timezone

from chat import services, tasks
from chat.models import Conversation
from tests.chat.conftest import make_agent
from tests.chat.wsclient import ChatClient
from tests.support.chat_protocol import covers, session_cookie, shopper_socket
from tests.support.permissions import permissions
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


async def console_for(server: str, cookie: str) -> ChatClient:
    console = await ChatClient(server, "/ws/console/", cookie=cookie).connect()
    await console.expect("canned.list")
    return console


async def inbox(console: ChatClient, ref: str, **query: Any) -> dict[str, Any]:
    await console.send({"type": "inbox.query", "ref": ref, **query})
    return await console.expect("inbox.snapshot", ref=ref)


async def in_thread(function: Any, **kwargs: Any) -> Any:
    """Run ``function`` (ORM code) in a worker thread that closes its connection after."""

    def run() -> Any:
        try:
            return function(**kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


def ids(snapshot: dict[str, Any]) -> list[int]:
    return [c["id"] for c in snapshot["conversations"]]


@covers(
    "console>conversation.label.add",
    "console>conversation.label.remove",
    "console<inbox.update",
    "console<error",
)
def test_labels_are_added_filtered_removed_and_counted(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    agent.user_permissions.add(*permissions("chat.view_chat_metrics"))

    async def scenario() -> dict[str, Any]:
        shopper, _ = await shopper_socket(server, key, anonymous_id="anon-l1")
        await shopper.send({"type": "message.send", "client_id": "s1", "body": "returns?"})
        ack = await shopper.expect("message.ack")
        cid = ack["message"]["conversation_id"]
        console = await console_for(server, cookie)

        await console.send(
            {"type": "conversation.label.add", "conversation_id": cid, "label": " VIP "}
        )
        added = await console.expect(
            "inbox.update", conversation__id=cid, conversation__labels=["vip"]
        )
        await console.send(
            {"type": "conversation.label.add", "conversation_id": cid, "label": "Billing"}
        )
        await console.expect("inbox.update", conversation__labels=["billing", "vip"])
        vip = await inbox(console, "q1", view="all", label="VIP")
        other = await inbox(console, "q2", view="all", label="shipping")
        await console.send(
            {"type": "conversation.label.add", "conversation_id": cid, "label": "  ", "ref": "bad"}
        )
        bad = await console.expect("error", ref="bad")
        await console.send(
            {"type": "conversation.label.remove", "conversation_id": cid, "label": "billing"}
        )
        removed = await console.expect("inbox.update", conversation__labels=["vip"])
        await console.close()
        await shopper.close()
        return {
            "cid": cid,
            "added": added,
            "vip": vip,
            "other": other,
            "bad": bad,
            "removed": removed,
        }

    got = asyncio.run(scenario())

    assert ids(got["vip"]) == [got["cid"]]
    assert got["vip"]["conversations"][0]["labels"] == ["billing", "vip"]
    assert ids(got["other"]) == []
    assert got["bad"]["code"] == "invalid"
    assert Conversation.objects.get().labels == ["vip"]
    client = Client()
    client.force_login(agent)
    metrics = client.get("/api/chat/metrics/").json()
    assert metrics["labels"] == {"vip": 1}


@covers("console>conversation.snooze", "console<inbox.update", "console>inbox.query")
def test_a_conversation_snoozed_until_the_shopper_writes_leaves_the_tabs_and_comes_back(
    server, key
):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> dict[str, Any]:
        shopper, _ = await shopper_socket(server, key, anonymous_id="anon-s1")
        await shopper.send({"type": "message.send", "client_id": "s1", "body": "returns?"})
        cid = (await shopper.expect("message.ack"))["message"]["conversation_id"]
        console = await console_for(server, cookie)

        await console.send({"type": "conversation.snooze", "conversation_id": cid})
        snoozed = await console.expect(
            "inbox.update", conversation__id=cid, conversation__snoozed=True
        )
        all_while = await inbox(console, "a1", view="all")
        snoozed_view = await inbox(console, "z1", view="snoozed")

        await shopper.send({"type": "message.send", "client_id": "s2", "body": "one more thing"})
        woken = await console.expect(
            "inbox.update", conversation__id=cid, conversation__snoozed=False
        )
        all_after = await inbox(console, "a2", view="all")
        await console.close()
        await shopper.close()
        return {
            "cid": cid,
            "snoozed": snoozed,
            "all_while": all_while,
            "snoozed_view": snoozed_view,
            "woken": woken,
            "all_after": all_after,
        }

    got = asyncio.run(scenario())

    assert got["snoozed"]["conversation"]["snoozed_until"] is None
    assert ids(got["all_while"]) == []
    assert got["all_while"]["counts"]["snoozed"] == 1
    assert ids(got["snoozed_view"]) == [got["cid"]]
    assert ids(got["all_after"]) == [got["cid"]]
    assert got["all_after"]["counts"]["snoozed"] == 0
    conversation = Conversation.objects.get()
    assert (conversation.snoozed_at, conversation.snoozed_until) == (None, None)


@covers(
    "console>conversation.snooze", "console>conversation.unsnooze", "console<conversation.state"
)
def test_a_conversation_snoozed_until_a_time_is_woken_by_the_beat_task_when_due(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    until = timezone.now() + dt.timedelta(hours=1)

    async def scenario() -> dict[str, Any]:
        shopper, _ = await shopper_socket(server, key, anonymous_id="anon-s2")
        await shopper.send({"type": "message.send", "client_id": "s1", "body": "returns?"})
        cid = (await shopper.expect("message.ack"))["message"]["conversation_id"]
        console = await console_for(server, cookie)
        past = (timezone.now() - dt.timedelta(minutes=1)).isoformat()
        await console.send(
            {"type": "conversation.snooze", "conversation_id": cid, "until": past, "ref": "p"}
        )
        refused = await console.expect("error", ref="p")
        await console.send(
            {"type": "conversation.snooze", "conversation_id": cid, "until": until.isoformat()}
        )
        snoozed = await console.expect(
            "inbox.update", conversation__id=cid, conversation__snoozed=True
        )

        # The beat task, run now: not due yet.
        early = await in_thread(lambda: tasks.conversations_wake.apply().get())
        due = until + dt.timedelta(seconds=1)
        on_time = await in_thread(services.conversations_wake_due, now=due)
        woken = await console.expect(
            "inbox.update", conversation__id=cid, conversation__snoozed=False
        )
        again = await in_thread(services.conversations_wake_due, now=due)
        # An agent who has the conversation open snoozes it and brings it back at once.
        await console.send({"type": "conversation.open", "conversation_id": cid, "ref": "o"})
        await console.expect("conversation.opened", ref="o")
        await console.send({"type": "conversation.snooze", "conversation_id": cid})
        await console.expect("conversation.state", conversation__snoozed=True)
        await console.send({"type": "conversation.unsnooze", "conversation_id": cid})
        unsnoozed = await console.expect("conversation.state", conversation__snoozed=False)
        await console.close()
        await shopper.close()
        return {
            "refused": refused,
            "snoozed": snoozed,
            "early": early,
            "on_time": on_time,
            "woken": woken,
            "again": again,
            "unsnoozed": unsnoozed,
        }

    got = asyncio.run(scenario())

    assert got["refused"]["code"] == "invalid"
    assert got["snoozed"]["conversation"]["snoozed_until"] == until.isoformat()
    assert (got["early"], got["on_time"], got["again"]) == (0, 1, 0)
    assert got["unsnoozed"]["conversation"]["id"] == got["snoozed"]["conversation"]["id"]
    assert Conversation.objects.get().snoozed_at is None
