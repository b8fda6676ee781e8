"""#8 §3 Abuse limits on the shopper chat socket, against a real uvicorn server.

The documented ``rate_limited`` error frame (docs/chat-protocol.md) is sent with a retry hint
and the socket stays open: frames per connection, new conversations per client address,
transcript emails per recipient. Limits are set low through the server's environment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chat.models import Conversation
from commerce.models import WriteKey
from tests.chat.wsclient import ChatClient
from tests.support.processes import asgi_server_fixture
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


server = asgi_server_fixture(
    PATRON_CHAT_FRAMES_PER_SECOND="4",
    PATRON_CHAT_FRAMES_BURST="6",
    PATRON_RATE_CHAT_CONVERSATIONS="2/600",
    PATRON_RATE_EMAIL_PER_RECIPIENT="2/3600",
)


async def _hello(server: str, key: WriteKey, anonymous_id: str) -> ChatClient:
    client = await ChatClient(server, "/ws/chat/").connect()
    await client.send({"type": "hello", "write_key": key.key, "anonymous_id": anonymous_id})
    await client.expect("welcome")
    return client


async def _first(client: ChatClient, types: set[str]) -> dict[str, Any]:
    """The next frame of one of ``types``; others (bot answers, states) are skipped."""
    while True:
        frame = await client.recv()
        if frame["type"] in types:
            return frame


def test_a_socket_over_its_frame_rate_gets_rate_limited_and_stays_open(server, key):
    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        client = await _hello(server, key, "a-1")  # hello took one of the 6 tokens
        for n in range(10):
            await client.send({"type": "ping", "ref": f"p-{n}"})
        answers = [await client.recv() for _ in range(10)]
        await asyncio.sleep(1.0)  # 4 tokens a second come back
        await client.send({"type": "ping", "ref": "later"})
        later = await client.expect("pong")
        await client.close()
        return answers, later

    answers, later = asyncio.run(scenario())

    pongs = [a for a in answers if a["type"] == "pong"]
    limited = [a for a in answers if a["type"] == "error"]
    assert 5 <= len(pongs) <= 6  # the burst left after hello (a token may refill meanwhile)
    assert len(limited) == 10 - len(pongs)
    assert {a["code"] for a in limited} == {"rate_limited"}
    assert all(0 < a["retry_after_ms"] <= 250 for a in limited)
    assert [a["ref"] for a in limited] == [f"p-{n}" for n in range(len(pongs), 10)]
    assert later == {"type": "pong", "ref": "later"}  # the socket stayed open


def test_new_conversations_are_limited_per_client_address(server, key):
    async def scenario() -> list[dict[str, Any]]:
        frames = []
        for n in range(3):
            client = await _hello(server, key, f"visitor-{n}")
            await client.send({"type": "message.send", "client_id": f"c-{n}", "body": "hi"})
            frames.append(await _first(client, {"message.ack", "error"}))
            await client.close()
        return frames

    frames = asyncio.run(scenario())

    assert [f["type"] for f in frames] == ["message.ack", "message.ack", "error"]
    assert frames[2]["code"] == "rate_limited"
    assert frames[2]["retry_after_ms"] >= 1000
    assert Conversation.objects.count() == 2


def test_transcripts_to_one_typed_address_are_limited(server, key):
    async def scenario() -> list[dict[str, Any]]:
        client = await _hello(server, key, "a-1")
        await client.send({"type": "message.send", "client_id": "c-1", "body": "hello"})
        await client.expect("message.ack")
        answers = []
        for n in range(3):
            await client.send(
                {"type": "transcript.request", "email": "victim@example.com", "ref": f"t-{n}"}
            )
            answers.append(await _first(client, {"transcript.queued", "error"}))
            await asyncio.sleep(0.3)
        await client.close()
        return answers

    answers = asyncio.run(scenario())

    assert [a["type"] for a in answers] == ["transcript.queued", "transcript.queued", "error"]
    assert answers[2]["code"] == "rate_limited"
    assert answers[2]["ref"] == "t-2"
