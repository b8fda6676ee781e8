"""The WebSocket origin policy over real sockets: a uvicorn process with production-like
ALLOWED_HOSTS, real ``websockets`` clients sending the Origin header a browser would send.

- ``/ws/chat/`` accepts Patron's own pages and the origins the write key lists; any other page
  gets the protocol's ``error`` ``forbidden`` and close 4003 on ``hello``, before anything is
  created.
- ``/ws/console/`` refuses every foreign origin at the handshake (HTTP 403), even with a valid
  agent session.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from chat.models import Conversation, Message
from commerce.models import Shopper, WriteKey
from tests.chat.conftest import make_agent
from tests.chat.wsclient import ChatClient
from tests.support.chat_protocol import session_cookie
from tests.support.processes import asgi_server_fixture
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM

SHOP = "https://shop.example.com"
FOREIGN = "https://evil.example.net"


# Not the development default (ALLOWED_HOSTS=*, where every origin is "own").
server = asgi_server_fixture(ALLOWED_HOSTS="127.0.0.1")


@pytest.fixture
def key(chat_settings: Any) -> WriteKey:
    return WriteKey.objects.create(name="shop", allowed_origins=[SHOP + "/"])


async def hello(client: ChatClient, key: WriteKey, **fields: Any) -> None:
    await client.connect()
    await client.send({"type": "hello", "write_key": key.key, **fields})


def test_a_page_on_an_origin_the_key_allows_chats(server, key):
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = ChatClient(server, "/ws/chat/", origin=SHOP)
        await hello(client, key, anonymous_id="anon-shop")
        welcome = await client.expect("welcome")
        await client.send({"type": "message.send", "client_id": "s1", "body": "returns?"})
        ack = await client.expect("message.ack")
        await client.close()
        return welcome, ack

    welcome, ack = asyncio.run(scenario())

    assert welcome["token"]
    assert ack["message"]["body"] == "returns?"
    assert Message.objects.filter(author_kind="shopper").count() == 1


def test_patrons_own_pages_chat_with_any_key(server, chat_settings):
    own_only = WriteKey.objects.create(name="demo")  # no allowed origins at all

    async def scenario() -> dict[str, Any]:
        client = ChatClient(server, "/ws/chat/")  # Origin: http://127.0.0.1:<port>
        await hello(client, own_only, anonymous_id="anon-own")
        welcome = await client.expect("welcome")
        await client.close()
        return welcome

    assert asyncio.run(scenario())["type"] == "welcome"


@pytest.mark.parametrize("origin", [FOREIGN, "https://shop.example.com.evil.net", "null", None])
def test_any_other_origin_is_refused_on_hello_and_nothing_is_created(server, key, origin):
    shoppers_before = Shopper.objects.count()

    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        client = ChatClient(server, "/ws/chat/", origin=origin)
        await hello(client, key, anonymous_id="anon-evil", customer_id=None)
        return await client.closed_with()

    frames, code = asyncio.run(scenario())

    assert code == 4003
    assert [(f["type"], f["code"]) for f in frames] == [("error", "forbidden")]
    assert Shopper.objects.count() == shoppers_before
    assert Conversation.objects.count() == 0


def test_the_console_refuses_foreign_origins_even_for_a_signed_in_agent(server, chat_settings):
    cookie = session_cookie(make_agent("anna", online=False))

    async def scenario() -> tuple[list[int], str]:
        statuses = []
        for origin in (FOREIGN, SHOP):
            with pytest.raises(InvalidStatus) as refused:
                await ChatClient(server, "/ws/console/", cookie=cookie, origin=origin).connect()
            statuses.append(refused.value.response.status_code)
        own = await ChatClient(server, "/ws/console/", cookie=cookie).connect()
        snapshot = await own.expect("inbox.snapshot")
        await own.close()
        return statuses, snapshot["type"]

    statuses, accepted = asyncio.run(scenario())

    assert statuses == [403, 403]
    assert accepted == "inbox.snapshot"


# --- The development default: ALLOWED_HOSTS=* names no host, and opens nothing ---------------


dev_server = asgi_server_fixture(ALLOWED_HOSTS="*")


@pytest.mark.parametrize("origin", [FOREIGN, "null", None])
def test_with_allowed_hosts_star_a_key_without_origins_refuses_other_pages(
    dev_server,
    chat_settings,
    origin,
):
    own_only = WriteKey.objects.create(name="demo")
    shoppers_before = Shopper.objects.count()

    async def scenario() -> tuple[list[dict[str, Any]], int | None]:
        client = ChatClient(dev_server, "/ws/chat/", origin=origin)
        await hello(client, own_only, anonymous_id="anon-evil")
        return await client.closed_with()

    frames, code = asyncio.run(scenario())

    assert code == 4003
    assert [(f["type"], f["code"]) for f in frames] == [("error", "forbidden")]
    assert Shopper.objects.count() == shoppers_before


def test_with_allowed_hosts_star_patrons_own_page_chats_with_a_key_without_origins(
    dev_server,
    chat_settings,
):
    own_only = WriteKey.objects.create(name="demo")

    async def scenario() -> dict[str, Any]:
        client = ChatClient(dev_server, "/ws/chat/")  # Origin: the server's own
        await hello(client, own_only, anonymous_id="anon-own")
        welcome = await client.expect("welcome")
        await client.close()
        return welcome

    assert asyncio.run(scenario())["type"] == "welcome"


def test_with_allowed_hosts_star_the_console_refuses_foreign_pages(
    dev_server,
    chat_settings,
):
    cookie = session_cookie(make_agent("anna", online=False))

    async def scenario() -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as refused:
            await ChatClient(dev_server, "/ws/console/", cookie=cookie, origin=FOREIGN).connect()
        own = await ChatClient(dev_server, "/ws/console/", cookie=cookie).connect()
        snapshot = await own.expect("inbox.snapshot")
        await own.close()
        return refused.value.response.status_code, snapshot["type"]

    status, accepted = asyncio.run(scenario())

    assert status == 403
    assert accepted == "inbox.snapshot"
