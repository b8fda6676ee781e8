"""Fan-out across processes and through a Redis restart: two uvicorn processes share one
Redis channel layer; a dedicated redis-server is killed and restarted under live chats."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from typing import Any

from django.conf import settings

from chat.models import Message
from commerce.models import WriteKey
from tests.chat.conftest import make_agent
from tests.chat.wsclient import ChatClient
from tests.support.chat_protocol import hand_off_assigned, session_cookie, shopper_socket
from tests.support.processes import (
    asgi_server,
    child_env,
    free_port,
    redis_server,
    stop,
)
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


def test_shopper_on_one_process_and_agent_on_another_talk_in_real_time(chat_settings):
    key = WriteKey.objects.create(name="shop")
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario(shop_url: str, console_url: str) -> list[float]:
        console = await ChatClient(console_url, "/ws/console/", cookie=cookie).connect()
        shopper, _ = await shopper_socket(shop_url, key, anonymous_id="anon-2p")
        cid = await hand_off_assigned(shopper, console)
        delays = []
        for index in range(20):
            started = time.perf_counter()
            await shopper.send(
                {"type": "message.send", "client_id": f"s{index}", "body": f"q{index}"}
            )
            got = await console.expect("message.new", message__client_id=f"s{index}")
            delays.append(time.perf_counter() - started)
            assert got["message"]["body"] == f"q{index}"
            await console.send(
                {
                    "type": "message.send",
                    "conversation_id": cid,
                    "client_id": f"a{index}",
                    "body": f"a{index}",
                }
            )
            answer = await shopper.expect("message.new", message__client_id=f"a{index}")
            assert answer["message"]["author"]["kind"] == "agent"
        await shopper.close()
        await console.close()
        return delays

    with asgi_server() as shop_url, asgi_server() as console_url:
        delays = asyncio.run(scenario(shop_url, console_url))

    assert len(delays) == 20
    assert sorted(delays)[10] < 0.5  # real time: the median hop is far below half a second
    assert Message.objects.filter(author_kind="shopper").count() == 20
    assert Message.objects.filter(author_kind="agent").count() == 20


class Peer:
    """A client that reconnects after any drop, resumes from its last seq and re-sends what
    was never acknowledged, like the widget and the console do."""

    def __init__(
        self, url: str, path: str, hello: dict[str, Any] | None = None, cookie: str | None = None
    ):
        self.url, self.path, self.hello, self.cookie = url, path, hello, cookie
        self.seen: dict[int, list[int]] = {}
        self.bodies: list[str] = []
        self.unacked: dict[str, dict[str, Any]] = {}
        self.client: ChatClient | None = None
        self.reconnects = 0
        self.conversation_id: int | None = None

    def record(self, message: dict[str, Any]) -> None:
        self.seen.setdefault(message["conversation_id"], []).append(message["seq"])
        self.bodies.append(message["body"])

    def last_seq(self) -> int:
        assert self.conversation_id is not None
        return max(self.seen.get(self.conversation_id, [0]))

    async def open(self, until: float | None = None) -> bool:
        """Connect and resume; False when ``until`` (loop time) passes first."""
        loop = asyncio.get_running_loop()
        while until is None or loop.time() < until:
            try:
                self.client = await ChatClient(self.url, self.path, cookie=self.cookie).connect()
                if self.hello is not None:
                    hello = dict(self.hello)
                    if self.conversation_id is not None:
                        hello.update(conversation_id=self.conversation_id, last_seq=self.last_seq())
                    await self.client.send(hello)
                    welcome = await self.client.expect("welcome")
                    self.hello["token"] = welcome["token"]
                    for message in welcome["messages"]:
                        self.record(message)
                else:
                    # The console resumes every conversation it follows from its last seq.
                    for cid, seqs in list(self.seen.items()):
                        await self.client.send(
                            {
                                "type": "conversation.open",
                                "conversation_id": cid,
                                "last_seq": max(seqs),
                            }
                        )
                        opened = await self.client.expect(
                            "conversation.opened", conversation__id=cid
                        )
                        for message in opened["messages"]:
                            self.record(message)
                for frame in list(self.unacked.values()):
                    await self.client.send(frame)
                return True
            except Exception:  # any failure means: try again shortly, as a real client does
                self.client = None
                self.reconnects += 1
                await asyncio.sleep(0.3)
        return False

    async def send(self, frame: dict[str, Any]) -> None:
        self.unacked[frame["client_id"]] = frame
        with contextlib.suppress(Exception):
            assert self.client is not None
            await self.client.send(frame)

    async def pump(self, until: float) -> None:
        """Receive (reconnecting as needed) until the loop time ``until``; ping every 0.5 s."""
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + 0.5
        while loop.time() < until:
            if self.client is None and not await self.open(until):
                return
            try:
                assert self.client is not None
                frame = await self.client.recv(timeout=0.25)
            except TimeoutError:
                if loop.time() >= next_ping:
                    next_ping = loop.time() + 0.5
                    with contextlib.suppress(Exception):
                        assert self.client is not None
                        await self.client.send({"type": "ping"})
                continue
            except Exception:
                self.client = None
                continue
            if frame["type"] == "message.new":
                self.record(frame["message"])
            elif frame["type"] == "message.ack":
                self.unacked.pop(frame["client_id"], None)
                # The ack of a re-sent frame names a message the resume may already have
                # delivered; message.new and welcome frames are never allowed to repeat.
                message = frame["message"]
                if message["seq"] not in self.seen.get(message["conversation_id"], []):
                    self.record(message)
            elif frame["type"] == "error" and frame["code"] == "unavailable":
                self.client = None


def test_redis_restarted_under_live_conversations_loses_and_doubles_nothing(
    chat_settings,
    tmp_path,
):
    key = WriteKey.objects.create(name="shop")
    agent = make_agent("anna", online=False, capacity=10)
    cookie = session_cookie(agent)
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    # Celery and the cache stay on the suite's Redis; only the channel layer moves.
    env = child_env(REDIS_URL=redis_url, CELERY_BROKER_URL=settings.REDIS_URL)
    conversations = 3

    async def scenario(url: str, server: subprocess.Popen[bytes]) -> tuple[list[Peer], Peer]:
        loop = asyncio.get_running_loop()
        console = Peer(url, "/ws/console/", cookie=cookie)
        await console.open()
        shoppers = []
        for index in range(conversations):
            peer = Peer(
                url,
                "/ws/chat/",
                hello={"type": "hello", "write_key": key.key, "anonymous_id": f"anon-{index}"},
            )
            await peer.open()
            assert peer.client is not None
            await peer.client.send({"type": "handoff.request"})
            state = await peer.client.expect("conversation.state", conversation__state="assigned")
            peer.conversation_id = state["conversation"]["id"]
            shoppers.append(peer)

        async def talk(phase: str) -> None:
            for peer in shoppers:
                await peer.send(
                    {
                        "type": "message.send",
                        "client_id": f"{phase}-{peer.conversation_id}",
                        "body": f"{phase} from {peer.conversation_id}",
                    }
                )
                await console.send(
                    {
                        "type": "message.send",
                        "conversation_id": peer.conversation_id,
                        "client_id": f"{phase}-agent-{peer.conversation_id}",
                        "body": f"{phase} to {peer.conversation_id}",
                    }
                )

        async def pump_all(seconds: float) -> None:
            until = loop.time() + seconds
            await asyncio.gather(console.pump(until), *(p.pump(until) for p in shoppers))

        await talk("before")
        await pump_all(1.5)
        stop(server)  # Redis goes away under live conversations...
        await talk("during")
        await pump_all(1.0)
        return shoppers, console

    with redis_server(port, tmp_path) as redis_process, asgi_server(env=env) as url:

        async def run() -> tuple[list[Peer], Peer]:
            shoppers, console = await scenario(url, redis_process)
            with redis_server(port, tmp_path):  # ...and comes back on the same port
                loop = asyncio.get_running_loop()
                for peer in shoppers:
                    await peer.send(
                        {
                            "type": "message.send",
                            "client_id": f"after-{peer.conversation_id}",
                            "body": f"after from {peer.conversation_id}",
                        }
                    )
                until = loop.time() + 6.0
                await asyncio.gather(console.pump(until), *(p.pump(until) for p in shoppers))
            return shoppers, console

        shoppers, console = asyncio.run(run())

    for peer in shoppers:
        cid = peer.conversation_id
        assert cid is not None
        stored = list(
            Message.objects.filter(conversation_id=cid, internal=False)
            .order_by("seq")
            .values_list("seq", flat=True)
        )
        # Every stored message reached the shopper exactly once, in order; nothing was lost.
        after_handoff = [seq for seq in peer.seen[cid]]
        assert after_handoff == stored[stored.index(after_handoff[0]) :]
        assert len(after_handoff) == len(set(after_handoff))
        bodies = set(
            Message.objects.filter(conversation_id=cid, author_kind="shopper").values_list(
                "body", flat=True
            )
        )
        assert bodies == {f"before from {cid}", f"during from {cid}", f"after from {cid}"}
        assert peer.unacked == {}
        # The agent saw every shopper message once.
        agent_seen = console.seen[cid]
        assert len(agent_seen) == len(set(agent_seen))
        shopper_seqs = set(
            Message.objects.filter(conversation_id=cid, author_kind="shopper").values_list(
                "seq", flat=True
            )
        )
        assert shopper_seqs <= set(agent_seen)
    assert console.unacked == {}
    # Each retried frame was stored once.
    assert Message.objects.filter(author_kind="shopper").count() == 3 * conversations
    assert Message.objects.filter(author_kind="agent").count() == 2 * conversations
