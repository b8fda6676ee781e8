"""The shopper's place in the queue, and the honest answer when nobody can come (#11 point 4).

Real uvicorn process, real ``websockets`` clients: what the widget receives when its first
message queues the conversation, after a reload, and when no agent is online.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from chat import emails, presence, selectors, services
from chat.models import AgentStatus, Conversation, Message
from chat.services.conversations import NO_AGENTS_MESSAGE
from commerce.models import Shopper
from engagement.models import Message as OutboxMessage
from tests.chat.conftest import FIXTURE_CONNECTION, make_agent
from tests.support.chat_protocol import shopper_socket
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


@pytest.fixture
def busy_agent() -> Iterator[Any]:
    """An agent online (a live heartbeat) with no free slot: hand-offs wait in the queue.
    Their console is make-believe (no socket); its heartbeat ends with the test."""
    agent = make_agent("anna", capacity=1)
    AgentStatus.objects.filter(user=agent).update(capacity=0)
    yield agent
    presence.presence_end(user_id=agent.pk, connection_id=FIXTURE_CONNECTION)


def test_a_first_message_that_queues_the_conversation_gets_its_place_and_keeps_it_on_reload(
    server, key, busy_agent
):
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        shopper, first = await shopper_socket(server, key, anonymous_id="anon-q1")
        await shopper.send({"type": "message.send", "client_id": "s1", "body": "human please"})
        await shopper.expect("message.ack", client_id="s1")
        state = await shopper.expect("conversation.state")
        position = await shopper.expect("queue.position")
        token = first["token"]
        await shopper.close()

        # The page reloads: a new socket, the stored token and conversation id.
        again, welcome = await shopper_socket(
            server, key, token=token, conversation_id=state["conversation"]["id"]
        )
        position_again = await again.expect("queue.position")
        await again.close()
        return state, position, welcome, position_again

    state, position, welcome, position_again = asyncio.run(scenario())

    conversation = Conversation.objects.get()
    assert state["conversation"]["state"] == "queued"
    expected = {
        "type": "queue.position",
        "conversation_id": conversation.pk,
        "position": 1,
        "agents_online": 1,
    }
    assert position == expected
    assert welcome["conversation"]["queue_position"] == 1
    assert welcome["conversation"]["agents_online"] == 1
    assert position_again == expected
    # Somebody is online: the usual hand-off message, no offline prompt.
    system = list(
        Message.objects.filter(conversation=conversation, author_kind="system").values_list(
            "body", flat=True
        )
    )
    assert system == [chat_settings_row().handoff_message]


def chat_settings_row() -> Any:
    services.chat_settings_invalidate()
    return services.chat_settings_get()


def test_with_no_agent_online_the_shopper_is_told_so_and_leaves_an_email_that_gets_the_reply(
    server, key
):
    agent = make_agent("bob", online=False)  # an agent exists, but nobody is online

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        shopper, _ = await shopper_socket(server, key, anonymous_id="anon-q2", locale="en")
        await shopper.send({"type": "message.send", "client_id": "s1", "body": "human please"})
        await shopper.expect("message.ack", client_id="s1")
        prompt = await shopper.expect("offline.prompt")
        state = await shopper.expect("conversation.state")
        position = await shopper.expect("queue.position")
        await shopper.send(
            {
                "type": "offline.submit",
                "email": "ada@example.com",
                "body": "Is the blue mug back soon?",
                "client_id": "o1",
            }
        )
        ack = await shopper.expect("message.ack", client_id="o1")
        await shopper.close()
        return [prompt, state, position], ack

    (prompt, state, position), ack = asyncio.run(scenario())

    conversation = Conversation.objects.select_related("shopper").get()
    assert prompt == {
        "type": "offline.prompt",
        "conversation_id": conversation.pk,
        "message": str(NO_AGENTS_MESSAGE),
        "reason": "no_agents",
    }
    assert (state["conversation"]["state"], state["conversation"]["agents_online"]) == (
        "queued",
        0,
    )
    assert (position["position"], position["agents_online"]) == (1, 0)
    # No promise of "shortly": what the shopper read is the honest message.
    said = list(
        Message.objects.filter(conversation=conversation, author_kind="system").values_list(
            "body", flat=True
        )
    )
    assert said == [str(NO_AGENTS_MESSAGE)]
    assert ack["message"]["body"] == "Is the blue mug back soon?"
    # Stored on the conversation and the shopper; agents see it in their inbox.
    assert (conversation.channel, conversation.follow_up_email) == ("email", "ada@example.com")
    assert Shopper.objects.get(pk=conversation.shopper_id).email == "ada@example.com"
    snapshot = selectors.inbox_snapshot(view="unassigned", agent_id=agent.pk)
    [summary] = snapshot["conversations"]
    assert (summary["channel"], summary["shopper"]["email"]) == ("email", "ada@example.com")
    # The agent's reply goes to the shopper by email.
    reply = services.agent_message_post(
        agent=agent, conversation_id=conversation.pk, body="Next week!", client_id="a1"
    )
    follow_ups = OutboxMessage.objects.filter(campaign__trigger=emails.FOLLOW_UP)
    assert [(m.run.email_to, m.run.occurrence_key) for m in follow_ups] == [
        ("ada@example.com", f"chat-message:{reply.message['id']}")
    ]
