"""What faults showed (issue #11, point 5), each against a real uvicorn process: a client that
missed more than a page of messages, a message re-sent after a Redis restart, a web process
killed under an agent, a console reconnecting while the chat goes on, and a handshake while
Redis is down."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.db import connection

from chat import presence, selectors
from chat.models import Conversation, Message
from commerce.models import WriteKey
from tests.chat.conftest import make_agent
from tests.chat.wsclient import ChatClient
from tests.support.chat_protocol import session_cookie, shopper_socket
from tests.support.processes import asgi_process, child_env, free_port, redis_server, stop
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


async def until_pong(client: ChatClient) -> list[dict[str, Any]]:
    """Ping, and every frame that arrives before the pong (the marker that nothing more was
    queued ahead of it)."""
    await client.send({"type": "ping"})
    frames = []
    while (frame := await client.recv()).get("type") != "pong":
        frames.append(frame)
    return frames


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["message"]["seq"] for f in frames if f["type"] == "message.new"]


def test_a_client_that_missed_more_than_a_page_gets_every_missed_message_in_order(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    total = 450

    async def start() -> tuple[str, int]:
        shopper, welcome = await shopper_socket(server, key, anonymous_id="anon-many")
        await shopper.send({"type": "message.send", "client_id": "s0", "body": "hello"})
        cid = (await shopper.expect("message.ack"))["message"]["conversation_id"]
        await shopper.expect("conversation.state")  # the bot has acted on it
        await shopper.close()
        return welcome["token"], cid

    token, cid = asyncio.run(start())
    # Given a conversation of 450 messages, every 50th a private note.
    first = Conversation.objects.get(pk=cid).last_seq + 1
    Message.objects.bulk_create(
        Message(
            conversation_id=cid,
            seq=seq,
            author_kind="agent" if seq % 50 == 0 else "system",
            author_agent=agent if seq % 50 == 0 else None,
            internal=seq % 50 == 0,
            body=f"m{seq}",
        )
        for seq in range(first, total + 1)
    )
    Conversation.objects.filter(pk=cid).update(last_seq=total)
    public = [seq for seq in range(11, total + 1) if seq % 50]

    async def resume() -> None:
        # The shopper saw up to seq 10: the welcome holds the first page after it, the rest
        # follows as message.new, in order, before anything else.
        shopper, welcome = await shopper_socket(
            server, key, token=token, conversation_id=cid, last_seq=10
        )
        after = await until_pong(shopper)
        assert [m["seq"] for m in welcome["messages"]] + seqs(after) == public
        assert (len(welcome["messages"]), welcome["has_more"]) == (200, True)
        await shopper.close()

        # The console opens it from seq 10: notes included, nothing cut.
        console = await ChatClient(server, "/ws/console/", cookie=cookie).connect()
        await console.expect("canned.list")
        await console.send({"type": "conversation.open", "conversation_id": cid, "last_seq": 10})
        opened = await console.expect("conversation.opened")
        after = await until_pong(console)
        assert [m["seq"] for m in opened["messages"]] + seqs(after) == list(range(11, total + 1))
        assert (len(opened["messages"]), opened["has_more"]) == (200, True)
        await console.close()

    asyncio.run(resume())


def test_a_message_re_sent_after_a_redis_restart_reaches_a_listening_reader_at_once(
    key: WriteKey, tmp_path: Path
) -> None:
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    port = free_port()
    # Celery and the cache stay on the suite's Redis; the channel layer uses one we restart.
    env = child_env(
        REDIS_URL=f"redis://127.0.0.1:{port}/0", CELERY_BROKER_URL=django_settings.REDIS_URL
    )

    def stored() -> int:
        try:
            return Message.objects.filter(client_id="again-1").count()
        finally:
            connection.close()  # this runs in a thread of its own: leave no session behind

    with redis_server(port, tmp_path) as redis_process, asgi_process(env=env) as (url, _):

        async def scenario() -> None:
            reader = await ChatClient(url, "/ws/console/", cookie=cookie).connect()
            shopper, welcome = await shopper_socket(url, key, anonymous_id="anon-again")
            await shopper.send({"type": "handoff.request"})
            state = await shopper.expect("conversation.state", conversation__state="assigned")
            cid, last_seq = state["conversation"]["id"], state["conversation"]["last_seq"]
            await reader.expect("assignment", conversation_id=cid)
            # From here on the reader only listens: no ping would sweep up what it missed.

            stop(redis_process)
            frame = {"type": "message.send", "client_id": "again-1", "body": "still there?"}
            await shopper.send(frame)
            frames, code = await shopper.closed_with()
            assert (code, frames[-1].get("code")) == (1011, "unavailable")
            assert await asyncio.to_thread(stored) == 1  # stored; its publish was what failed

            with redis_server(port, tmp_path):
                deadline = time.monotonic() + 20
                while True:  # the shopper reconnects with backoff, as the widget does
                    try:
                        again, _ = await shopper_socket(
                            url,
                            key,
                            token=welcome["token"],
                            conversation_id=cid,
                            last_seq=last_seq,
                        )
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.3)
                await again.send(frame)
                ack = await again.expect("message.ack", client_id="again-1")
                # The reader hears of it now, not at a ping 25 s later.
                heard = await reader.expect("message.new", timeout=3, message__client_id="again-1")
                assert heard["message"]["seq"] == ack["message"]["seq"]
                await again.close()
                await reader.close()

        asyncio.run(scenario())
    assert len(Message.objects.filter(client_id="again-1")) == 1


def test_an_agent_whose_web_process_dies_goes_offline_and_is_not_routed_to(
    key: WriteKey, settings: Any
) -> None:
    window = 3
    settings.PATRON_AGENT_PRESENCE_SECONDS = window
    env = child_env(PATRON_AGENT_PRESENCE_SECONDS=str(window))
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    def shown() -> str:
        return next(a["status"] for a in selectors.agents_list() if a["id"] == agent.pk)

    try:
        # Two web processes: the agent's console on one, which is killed; shoppers on the other.
        with asgi_process(env=env) as (shop_url, _), asgi_process(env=env) as (url, process):

            async def open_console() -> None:
                console = await ChatClient(url, "/ws/console/", cookie=cookie).connect()
                await console.expect("canned.list")
                await until_pong(console)  # a heartbeat

            asyncio.run(open_console())
            assert shown() == "online"
            process.send_signal(signal.SIGKILL)  # no disconnect handler runs
            process.wait(10)
            killed = time.monotonic()
            while shown() == "online" and time.monotonic() - killed < window + 5:
                time.sleep(0.1)
            assert shown() == "offline"
            assert time.monotonic() - killed <= window + 1

            async def hand_off() -> dict[str, Any]:
                shopper, _ = await shopper_socket(shop_url, key, anonymous_id="anon-dead")
                await shopper.send({"type": "handoff.request"})
                state = await shopper.expect("conversation.state")
                await shopper.close()
                return state

            # A hand-off now waits in the queue instead of going to an agent nobody is.
            state = asyncio.run(hand_off())
        assert state["conversation"]["state"] == "queued"
        assert Conversation.objects.get().assigned_agent_id is None
    finally:
        presence.presence_clear([agent.pk])


def test_a_reconnecting_console_gets_the_missed_messages_before_live_ones(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> None:
        console = await ChatClient(server, "/ws/console/", cookie=cookie).connect()
        shopper, _ = await shopper_socket(server, key, anonymous_id="anon-console")
        await shopper.send({"type": "handoff.request"})
        state = await shopper.expect("conversation.state", conversation__state="assigned")
        cid = state["conversation"]["id"]
        await console.send({"type": "conversation.open", "conversation_id": cid})
        opened = await console.expect("conversation.opened")
        seen = max(m["seq"] for m in opened["messages"])
        await console.close()

        # While the console is away, the shopper writes three messages.
        for index in range(3):
            await shopper.send(
                {"type": "message.send", "client_id": f"m{index}", "body": f"away {index}"}
            )
            await shopper.expect("message.ack", client_id=f"m{index}")

        # It comes back naming the conversation it had open and the last seq it showed; the
        # shopper writes again at once, racing the console's resume.
        console = await ChatClient(
            server, f"/ws/console/?resume={cid}:{seen}", cookie=cookie
        ).connect()
        await shopper.send({"type": "message.send", "client_id": "live", "body": "live"})
        live_seq = (await shopper.expect("message.ack", client_id="live"))["message"]["seq"]
        frames = await until_pong(console)
        order = []
        for frame in frames:
            if frame["type"] == "conversation.opened":
                order += [m["seq"] for m in frame["messages"]]
            elif frame["type"] == "message.new":
                order.append(frame["message"]["seq"])
        assert order == list(range(seen + 1, live_seq + 1))
        opened_at = next(i for i, f in enumerate(frames) if f["type"] == "conversation.opened")
        assert [f for f in frames[:opened_at] if f["type"] == "message.new"] == []
        await console.close()
        await shopper.close()

    asyncio.run(scenario())


def test_a_handshake_while_redis_is_down_is_answered_unavailable_without_a_traceback(
    chat_settings: Any,
    tmp_path: Path,
) -> None:
    key = WriteKey.objects.create(name="shop")
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    port = free_port()
    env = child_env(
        REDIS_URL=f"redis://127.0.0.1:{port}/0", CELERY_BROKER_URL=django_settings.REDIS_URL
    )
    log_path = tmp_path / "server.log"
    with (
        log_path.open("wb") as log,
        redis_server(port, tmp_path) as redis_process,
        asgi_process(env=env, log=log) as (url, _),
    ):

        async def scenario() -> list[tuple[list[dict[str, Any]], int | None]]:
            # A socket made while Redis was up sets the process's channel layer going.
            shopper, _ = await shopper_socket(url, key, anonymous_id="anon-up")
            await shopper.close()
            stop(redis_process)
            answers = []
            for path, headers in (("/ws/chat/", None), ("/ws/console/", cookie)):
                client = await ChatClient(url, path, cookie=headers).connect()
                answers.append(await client.closed_with())
            return answers

        answers = asyncio.run(scenario())
    for frames, code in answers:
        assert code == 1011
        assert [(f["type"], f["code"]) for f in frames] == [("error", "unavailable")]
    text = log_path.read_text()
    assert "Traceback" not in text
    assert text.count("chat socket refused, channel layer unavailable") == 2
