"""Shared by the chat services: limits, Channels groups, real-time events, the conversation lock."""

from __future__ import annotations

import re
from typing import Any

from chat import presence, selectors
from chat.models import AgentStatus, Conversation, Message
from chat.services.identity import business_hours_open
from core.exceptions import NotFound
from core.transactions import group_send_on_commit

MAX_BODY = 4000
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

State = Conversation.State
Author = Message.Author

# --- Groups and events ---------------------------------------------------------------------

CONSOLE_GROUP = "chat.console"


def conversation_group(conversation_id: int) -> str:
    """Everyone in a conversation: the shopper's sockets and subscribed agents."""
    return f"chat.c.{conversation_id}"


def staff_group(conversation_id: int) -> str:
    """Agents subscribed to a conversation: notes, shopper typing, live context."""
    return f"chat.s.{conversation_id}"


def agent_group(user_id: int) -> str:
    return f"chat.a.{user_id}"


def _emit(group: str, event: dict[str, Any], *, conversation_id: int | None = None) -> None:
    group_send_on_commit(group, {"type": "chat.event", "event": event, "cid": conversation_id})


def _emit_state(conversation_id: int, *, previous_agent_id: int | None = None) -> None:
    """Tell the shopper, the agents in the conversation and every console about a change."""
    conversation = Conversation.objects.select_related("shopper", "assigned_agent").get(
        pk=conversation_id
    )
    summary = selectors.conversation_summary(conversation)
    shopper_view = conversation_shopper_state(conversation)
    # The shopper's sockets drop agent-side frames by "audience"; agents get the summary.
    _emit(
        conversation_group(conversation_id),
        {"type": "conversation.state", "conversation": shopper_view, "audience": "shopper"},
        conversation_id=conversation_id,
    )
    _emit(
        staff_group(conversation_id),
        {"type": "conversation.state", "conversation": summary},
        conversation_id=conversation_id,
    )
    _emit(CONSOLE_GROUP, {"type": "inbox.update", "conversation": summary})
    agent = conversation.assigned_agent if conversation.state == State.ASSIGNED else None
    assignment = {
        "type": "assignment",
        "conversation_id": conversation_id,
        "agent": {"id": agent.pk, "name": selectors.agent_name(agent)} if agent else None,
    }
    if agent is not None or previous_agent_id is not None:
        _emit(
            conversation_group(conversation_id),
            {
                "type": "assignment",
                "conversation_id": conversation_id,
                "agent": {"name": selectors.agent_name(agent)} if agent else None,
                "audience": "shopper",
            },
            conversation_id=conversation_id,
        )
    for user_id in {previous_agent_id, agent.pk if agent else None} - {None}:
        assert user_id is not None
        _emit(agent_group(user_id), assignment, conversation_id=conversation_id)


def conversation_shopper_state(conversation: Conversation) -> dict[str, Any]:
    """The shopper view of ``conversation`` now: business hours, and who is online to answer
    while it waits in the queue (``selectors.conversation_shopper_view``)."""
    queued = conversation.state == State.QUEUED
    return selectors.conversation_shopper_view(
        conversation,
        business_hours_open=business_hours_open(),
        agents_online=_online_agents().count() if queued else None,
    )


def queue_position_now(conversation_id: int) -> dict[str, Any] | None:
    """The ``queue.position`` frame of a conversation as it stands (None when not queued): for
    a socket that joins a queued conversation after the queue last moved (the shopper's first
    message queued it, or the page was reloaded). None outside business hours too: nobody is
    promised a place in a queue then; the shopper is asked for an email (``offline.prompt``)."""
    conversation = Conversation.objects.get(pk=conversation_id)
    if conversation.state != State.QUEUED or not business_hours_open():
        return None
    return selectors.queue_position_frame(conversation, agents_online=_online_agents().count())


def _emit_queue_positions() -> None:
    queued = list(
        Conversation.objects.filter(state=State.QUEUED, channel=Conversation.Channel.CHAT)
        .order_by("queued_at", "pk")
        .values_list("pk", flat=True)
    )
    online = _online_agents().count()
    for position, conversation_id in enumerate(queued, start=1):
        _emit(
            conversation_group(conversation_id),
            {
                "type": "queue.position",
                "conversation_id": conversation_id,
                "position": position,
                "agents_online": online,
                "audience": "shopper",
            },
            conversation_id=conversation_id,
        )


def _lock(conversation_id: int) -> Conversation:
    try:
        return Conversation.objects.select_for_update().get(pk=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound("No such conversation.") from None


def _online_agents() -> Any:
    """Agents routing may assign to: a live console connection (``chat.presence``), not away."""
    return AgentStatus.objects.filter(
        user_id__in=presence.live_agent_ids(),
        user__in=selectors.agents_queryset(),
    ).exclude(status=AgentStatus.Status.AWAY)
