"""chat.writer: many messages stored in one statement (``services.message_post_many``).

That each message of a batch gets the answer ``message_post`` would give is the table of
tests/chat/test_post_rules.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import services, writer
from chat.models import Conversation, Message
from commerce.models import Shopper
from core.exceptions import Conflict
from tests.chat.conftest import make_agent

State = Conversation.State
Author = services.Author


def open_conversation(shopper: Shopper, *, agent: Any = None, **fields: Any) -> Conversation:
    now = timezone.now()
    if agent is not None:
        fields.update(state=State.ASSIGNED, assigned_agent=agent, assigned_at=now)
    return Conversation.objects.create(shopper=shopper, created_at=now, updated_at=now, **fields)


def shopper_says(conversation: Conversation, body: str, client_id: str) -> services.PostRequest:
    return services.post_request(
        conversation_id=conversation.pk,
        author_kind=Author.SHOPPER,
        body=body,
        client_id=client_id,
        shopper_id=conversation.shopper_id,
    )


def stored(conversation: Conversation) -> list[tuple[int, str, str | None]]:
    return list(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("seq", "body", "client_id")
    )


@pytest.fixture
def settings_layer(settings: Any) -> Iterator[None]:
    """The push layer on its own key prefix, so other tests' groups stay apart."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "core.channel_layer.PushPubSubChannelLayer",
            "CONFIG": {
                "address": settings.REDIS_URL,
                "prefix": f"test-writer-{uuid.uuid4().hex[:8]}",
            },
        }
    }
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.django_db
def test_a_batch_is_one_statement_and_keeps_each_conversations_order():
    agent = make_agent("ann")
    ada, bob = Shopper.objects.create(email="ada@example.com"), Shopper.objects.create()
    first = open_conversation(ada, agent=agent)
    second = open_conversation(bob, agent=agent)
    requests = [
        shopper_says(second, "b1", "b1"),
        shopper_says(first, "a1", "a1"),
        shopper_says(second, "b2", "b2"),
        shopper_says(first, "a2", "a2"),
        shopper_says(first, "a3", "a3"),
    ]

    with CaptureQueriesContext(connection) as queries:
        outcomes = services.message_post_many(requests)

    assert len(queries) == 1
    posted = [o for o in outcomes if isinstance(o, services.PostedMessage) and o.created]
    assert len(posted) == len(requests)
    # In the order asked, each with its own message and the next seq of its conversation.
    assert [o.message["body"] for o in posted] == ["b1", "a1", "b2", "a2", "a3"]
    assert [o.message["seq"] for o in posted] == [1, 1, 2, 2, 3]
    assert stored(first) == [(1, "a1", "a1"), (2, "a2", "a2"), (3, "a3", "a3")]
    assert stored(second) == [(1, "b1", "b1"), (2, "b2", "b2")]
    first.refresh_from_db()
    assert first.last_seq == 3


@pytest.mark.django_db(transaction=True)
def test_a_failing_batch_is_stored_one_message_at_a_time():
    agent = make_agent("ann")
    conversation = open_conversation(Shopper.objects.create(), agent=agent)
    good = shopper_says(conversation, "fine", "c1")
    # Past post_request's checks: a shopper's private note breaks a CHECK constraint, which
    # fails the whole statement.
    bad = services.PostRequest(
        conversation_id=conversation.pk,
        author_kind=Author.SHOPPER,
        body="sneaky",
        client_id="c2",
        internal=True,
        states=(State.ASSIGNED,),
    )
    also_good = shopper_says(conversation, "also fine", "c3")

    outcomes = services.message_post_many([good, bad, also_good])

    assert isinstance(outcomes[0], services.PostedMessage)
    assert isinstance(outcomes[1], Exception)
    assert not isinstance(outcomes[1], Conflict)
    assert isinstance(outcomes[2], services.PostedMessage)
    assert stored(conversation) == [(1, "fine", "c1"), (2, "also fine", "c3")]


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_share_batches_and_reach_the_group_in_order(settings_layer, monkeypatch):
    agent = make_agent("ann")
    conversation = open_conversation(Shopper.objects.create(), agent=agent)
    group = services.conversation_group(conversation.pk)
    statements: list[int] = []
    real_store = services.messages.messages_store

    def counting_store(requests: Any, *, now: Any) -> Any:
        statements.append(len(requests))
        return real_store(requests, now=now)

    async def scenario() -> tuple[list[Any], list[Any], bool]:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        listener, sender = await layer.new_channel(), await layer.new_channel()
        await layer.group_add(group, listener)
        await layer.group_add(group, sender)
        posts = [
            writer.writer().post(shopper_says(conversation, f"m{n}", f"c{n}"), sender=sender)
            for n in range(30)
        ]
        results = await asyncio.gather(*posts)
        heard = [await layer.receive(listener) for _ in range(30)]
        await asyncio.sleep(0.3)
        sender_quiet = layer._states[asyncio.get_running_loop()].queues[sender].empty()
        await layer.flush()
        return results, heard, sender_quiet

    monkeypatch.setattr(services.messages, "messages_store", counting_store)
    try:
        results, heard, sender_quiet = asyncio.run(scenario())
    finally:
        writer._executor.submit(connections.close_all).result()  # the writer thread's own

    assert [r.message["body"] for r in results] == [f"m{n}" for n in range(30)]
    assert [r.message["seq"] for r in results] == list(range(1, 31))
    # The first message is written alone; the others wait for it and go in fewer statements.
    assert sum(statements) == 30
    assert statements[0] == 1
    assert len(statements) < 30
    assert [e["event"]["message"]["seq"] for e in heard] == list(range(1, 31))
    assert sender_quiet  # the sender acknowledges its own messages: it is not sent them
    assert stored(conversation) == [(n + 1, f"m{n}", f"c{n}") for n in range(30)]
