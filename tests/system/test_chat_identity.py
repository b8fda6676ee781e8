"""Verified identity on the chat socket (issue #8, section 1), over real sockets.

A uvicorn process, the tracking API over real HTTP and real ``websockets`` clients. A known
customer is recognised on ``/ws/chat/`` only with ``customer_id`` and ``customer_hash``: an
anonymous id (even one a forged identify tied to the customer, or the customer's own after
logout) or a chat token issued while the customer was logged in hands over nothing of theirs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

import pytest

from chat.models import Conversation, Message
from commerce.models import Order, Shopper, ShopperAlias, WriteKey
from tests.chat.wsclient import ChatClient
from tests.support.identity import user_hash
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM

SECRET = "s3cret"  # the identity secret tests/chat/conftest.py gives the store
ANA_HASH = user_hash("c-ana", SECRET)
CLOSE_FORBIDDEN = 4003


@pytest.fixture
def ana(chat_settings: Any) -> Shopper:
    shopper = Shopper.objects.create(customer_id="c-ana", email="ana@example.com", first_name="Ana")
    ShopperAlias.objects.create(anonymous_id="anon-ana", shopper=shopper)
    Order.objects.create(number="ANA-1001", shopper=shopper, total=Decimal("42.00"))
    return shopper


def _post(server: str, key: WriteKey, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        server + path,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{key.key}:".encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def _hello(server: str, key: WriteKey, **fields: Any) -> tuple[ChatClient, dict[str, Any]]:
    client = await ChatClient(server, "/ws/chat/").connect()
    await client.send({"type": "hello", "write_key": key.key, **fields})
    return client, await client.expect("welcome", timeout=20)


async def _ana_chats(server: str, key: WriteKey) -> tuple[int, str]:
    """Ana, logged in (with her hash), asks a question; returns (conversation id, token)."""
    client, welcome = await _hello(
        server, key, anonymous_id="anon-ana", customer_id="c-ana", customer_hash=ANA_HASH
    )
    assert welcome["shopper"] == {"name": "Ana", "identified": True}
    await client.send({"type": "message.send", "client_id": "a1", "body": "my secret question"})
    ack = await client.expect("message.ack", timeout=20)
    await client.expect("message.new", timeout=20)  # the bot's answer
    await client.close()
    return ack["message"]["conversation_id"], welcome["token"]


async def _asks_for_orders(client: ChatClient) -> str:
    await client.send({"type": "message.send", "client_id": "o1", "body": "where is my order"})
    await client.expect("message.ack", timeout=20)
    reply = await client.expect("message.new", timeout=20, message__author__kind="bot")
    return str(reply["message"]["body"])


def _nothing_of_anas(welcome: dict[str, Any]) -> None:
    assert welcome["shopper"] == {"name": "", "identified": False}
    assert welcome["conversation"] is None
    assert welcome["messages"] == []


def test_a_forged_identify_then_chat_gets_nothing_of_the_customers(server, key, ana):
    async def scenario() -> tuple[int, int, dict[str, Any], str, int]:
        cid, _ = await _ana_chats(server, key)
        # Someone with the public key claims to be Ana for their own anonymous id,
        status = _post(
            server,
            key,
            "/v1/identify",
            {"userId": "c-ana", "anonymousId": "anon-evil", "traits": {"email": "e@evil.net"}},
        )
        # then opens the chat with that anonymous id, and also asks for Ana's conversation.
        client, welcome = await _hello(server, key, anonymous_id="anon-evil")
        answer = await _asks_for_orders(client)
        await client.close()
        probe = await ChatClient(server, "/ws/chat/").connect()
        await probe.send(
            {
                "type": "hello",
                "write_key": key.key,
                "anonymous_id": "anon-evil",
                "conversation_id": cid,
            }
        )
        _, code = await probe.closed_with(timeout=20)
        return cid, status, welcome, answer, code or 0

    cid, status, welcome, answer, code = asyncio.run(scenario())

    assert status == 200
    _nothing_of_anas(welcome)
    assert "ANA-1001" not in answer
    assert answer.startswith("I can look that up.")
    assert code == CLOSE_FORBIDDEN
    # Ana keeps her conversation and her email; the forger's shopper is a stranger.
    assert Conversation.objects.get(pk=cid).shopper_id == ana.pk
    ana.refresh_from_db()
    assert (ana.email, ana.merged_into_id) == ("ana@example.com", None)
    evil = ShopperAlias.objects.get(anonymous_id="anon-evil").shopper
    assert evil.pk != ana.pk
    assert evil.customer_id is None
    assert not Message.objects.filter(conversation__shopper=evil, body="my secret question")


@pytest.mark.parametrize(
    "with_token", [False, True], ids=["anonymous-id", "token-and-anonymous-id"]
)
def test_after_logout_the_same_browser_gets_nothing_of_the_customers(server, key, ana, with_token):
    async def scenario() -> tuple[int, dict[str, Any], str, tuple[list[Any], int | None]]:
        cid, token = await _ana_chats(server, key)
        # Ana logs out; the shop's page no longer has her id and hash, but the browser still
        # has the analytics anonymous id and the widget's token.
        fields: dict[str, Any] = {"anonymous_id": "anon-ana"}
        if with_token:
            fields["token"] = token
        client, welcome = await _hello(server, key, **fields)
        answer = await _asks_for_orders(client)
        await client.close()
        token_only = await ChatClient(server, "/ws/chat/").connect()
        await token_only.send({"type": "hello", "write_key": key.key, "token": token})
        return cid, welcome, answer, await token_only.closed_with(timeout=20)

    cid, welcome, answer, (frames, code) = asyncio.run(scenario())

    _nothing_of_anas(welcome)
    assert "ANA-1001" not in answer
    # A token alone names only Ana: refused, the widget starts over.
    assert code == CLOSE_FORBIDDEN
    assert [f.get("code") for f in frames if f["type"] == "error"] == ["forbidden"]
    # Her conversation is still hers, untouched by the next person's messages.
    conversation = Conversation.objects.get(pk=cid)
    assert conversation.shopper_id == ana.pk
    assert "where is my order" not in set(conversation.messages.values_list("body", flat=True))
    newcomer = ShopperAlias.objects.get(anonymous_id="anon-ana").shopper
    assert newcomer.pk != ana.pk
    assert newcomer.customer_id is None


def test_with_her_hash_the_customer_gets_her_conversation_back(server, key, ana):
    async def scenario() -> tuple[int, dict[str, Any], str]:
        cid, _ = await _ana_chats(server, key)
        client, welcome = await _hello(
            server, key, anonymous_id="anon-new-device", customer_id="c-ana", customer_hash=ANA_HASH
        )
        answer = await _asks_for_orders(client)
        await client.close()
        return cid, welcome, answer

    cid, welcome, answer = asyncio.run(scenario())

    assert welcome["shopper"] == {"name": "Ana", "identified": True}
    assert welcome["conversation"]["id"] == cid
    assert welcome["messages"][0]["body"] == "my secret question"
    assert "ANA-1001" in answer


@pytest.mark.parametrize("customer_hash", [None, "", "0" * 64, user_hash("c-ana", "other")])
def test_a_customer_id_without_its_hash_is_refused_before_anything_changes(
    server, key, ana, customer_hash
):
    async def scenario() -> int | None:
        client = await ChatClient(server, "/ws/chat/").connect()
        hello: dict[str, Any] = {
            "type": "hello",
            "write_key": key.key,
            "anonymous_id": "anon-evil",
            "customer_id": "c-ana",
        }
        if customer_hash is not None:
            hello["customer_hash"] = customer_hash
        await client.send(hello)
        _, code = await client.closed_with(timeout=20)
        return code

    assert asyncio.run(scenario()) == CLOSE_FORBIDDEN
    assert not ShopperAlias.objects.filter(anonymous_id="anon-evil").exists()
    assert Shopper.objects.count() == 1
