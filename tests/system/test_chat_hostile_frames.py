"""Hostile frames on the chat socket get an error frame and a close code, over a real socket.

Found by fuzzing: a ``hello`` whose ``anonymous_id`` held a NUL character or 10 KB reached
PostgreSQL, and the socket was dropped (close 1011, no frame) instead of told what was wrong.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chat.consumers import CLOSE_PROTOCOL
from chat.models import Conversation, Message
from commerce.models import Shopper
from tests.chat.wsclient import ChatClient
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"anonymous_id": "anon\u0000x"}, "invalid_character"),
        ({"anonymous_id": "a" * 10_240}, "field_too_long"),
        ({"anonymous_id": "anon-1", "page": {"url": "/p\u0000"}}, "invalid_character"),
        ({"anonymous_id": "anon-1", "customer_id": "c" * 10_240}, "field_too_long"),
    ],
    ids=["nul", "10kb-id", "nul-in-page", "10kb-customer"],
)
def test_a_hostile_hello_gets_an_error_frame_and_a_protocol_close(server, key, fields, code):
    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        client = ChatClient(server, "/ws/chat/")
        await client.connect()
        await client.send({"type": "hello", "write_key": key.key, **fields})
        return await client.closed_with(timeout=15)

    frames, close_code = asyncio.run(scenario())

    assert [(f["type"], f["code"]) for f in frames] == [("error", code)]
    assert close_code == CLOSE_PROTOCOL
    assert not Shopper.objects.exists()
    assert not Conversation.objects.exists()


def test_a_nul_in_a_message_body_closes_with_an_error_and_stores_nothing(server, key):
    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], int | None]:
        client = ChatClient(server, "/ws/chat/")
        await client.connect()
        await client.send({"type": "hello", "write_key": key.key, "anonymous_id": "anon-2"})
        welcome = await client.expect("welcome")
        await client.send({"type": "message.send", "client_id": "c1", "body": "hi\u0000"})
        frames, close_code = await client.closed_with(timeout=15)
        return welcome, frames, close_code

    welcome, frames, close_code = asyncio.run(scenario())

    assert welcome["type"] == "welcome"
    assert [(f["type"], f.get("code")) for f in frames if f["type"] == "error"] == [
        ("error", "invalid_character")
    ]
    assert close_code == CLOSE_PROTOCOL
    assert not Message.objects.filter(body__startswith="hi").exists()
