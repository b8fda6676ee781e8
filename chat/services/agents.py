"""Agents and presence: connect, disconnect, heartbeat, status, and an agent's posts."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from chat import presence, selectors
from chat.models import AgentStatus, Conversation
from chat.services._common import CONSOLE_GROUP, Author, _emit
from chat.services.messages import message_post
from chat.services.post_rules import PostedMessage, reply_assigns
from chat.services.routing import _check_agent, conversation_assign, queue_drain
from core.exceptions import ValidationError

# --- Agents ---------------------------------------------------------------------------------


def _emit_presence(user: Any) -> None:
    status = AgentStatus.objects.filter(user=user).first()
    if status is None:  # deleted meanwhile: nobody to show
        return
    load = selectors.agent_loads().get(user.pk, 0)
    _emit(
        CONSOLE_GROUP,
        {
            "type": "presence",
            "agent": {"id": user.pk, "name": selectors.agent_name(user)},
            "status": selectors.agent_presence(
                status.status, live=user.pk in presence.live_agent_ids()
            ),
            "load": load,
            "capacity": status.capacity,
        },
    )


def agent_connect(*, user: Any, connection_id: str) -> AgentStatus:
    """A console socket opened: its first heartbeat (``chat.presence``), the agent is online
    (an earlier "away" ends), and queued conversations may now route to them.

    ``connection_id``: unique per socket (its channel name). Raises ``redis.RedisError`` when
    Redis is down (the socket then closes as ``unavailable``)."""
    _check_agent(user)
    presence.presence_beat(user_id=user.pk, connection_id=connection_id)
    now = timezone.now()
    with transaction.atomic():
        status, _ = AgentStatus.objects.get_or_create(user=user)
        AgentStatus.objects.filter(pk=status.pk).update(
            status=AgentStatus.Status.ONLINE, last_seen_at=now
        )
        _emit_presence(user)
    queue_drain()
    status.refresh_from_db()
    return status


def agent_disconnect(*, user: Any, connection_id: str) -> None:
    """A console socket closed cleanly: forget its heartbeat, tell the consoles. (A socket of
    a process that died is forgotten when its heartbeat ages out instead.)"""
    presence.presence_end(user_id=user.pk, connection_id=connection_id)
    _emit_presence(user)


def agent_heartbeat(*, user: Any, connection_id: str) -> None:
    """A console's ``ping``: the connection is alive (keeps the agent routable). A connection
    presence had forgotten (Redis restarted, or its heartbeat aged out) counts again: the
    consoles hear the agent is back and queued conversations may route to them."""
    returned = presence.presence_beat(user_id=user.pk, connection_id=connection_id)
    AgentStatus.objects.filter(user=user).update(last_seen_at=timezone.now())
    if returned:
        _emit_presence(user)
        queue_drain()


def agent_presence_set(*, user: Any, status: str) -> AgentStatus:
    if status not in (AgentStatus.Status.ONLINE, AgentStatus.Status.AWAY):
        raise ValidationError("status must be online or away")
    _check_agent(user)
    with transaction.atomic():
        row, _ = AgentStatus.objects.get_or_create(user=user)
        AgentStatus.objects.filter(pk=row.pk).update(status=status, last_seen_at=timezone.now())
        _emit_presence(user)
    if status == AgentStatus.Status.ONLINE:
        queue_drain()
    row.refresh_from_db()
    return row


def agent_capacity_set(*, user: Any, capacity: int) -> AgentStatus:
    """Set how many conversations ``user`` (an agent) holds at once (0 to 1000). A raised
    capacity hands queued conversations to the agent at once; a lowered one takes nothing
    away (the agent finishes what they hold). ``ValidationError`` on a bad number."""
    if not 0 <= capacity <= 1000:
        raise ValidationError("capacity must be between 0 and 1000")
    _check_agent(user)
    with transaction.atomic():
        row, _ = AgentStatus.objects.select_for_update().get_or_create(user=user)
        AgentStatus.objects.filter(pk=row.pk).update(capacity=capacity)
        _emit_presence(user)
    queue_drain()
    row.refresh_from_db()
    return row


def agent_message_post(
    *, agent: Any, conversation_id: int, body: str, client_id: str | None, internal: bool = False
) -> PostedMessage:
    """An agent writes (``post_rules``). A public reply in a conversation nobody holds assigns it
    to the writer first, so the bot can never answer over a person. Raises ``PermissionDenied``
    (not an agent), ``NotFound``, ``Conflict`` (a resolved conversation), ``ValidationError``."""
    _check_agent(agent)
    if not internal:
        current = (
            Conversation.objects.filter(pk=conversation_id)
            .values_list("state", "assigned_agent_id")
            .first()
        )
        if current is not None and reply_assigns(state=current[0], holder_id=current[1]):
            conversation_assign(conversation_id=conversation_id, agent=agent, by=agent)
    # No such conversation, or one an agent may not post in: message_post says so.
    return message_post(
        conversation_id=conversation_id,
        author_kind=Author.AGENT,
        body=body,
        agent=agent,
        client_id=client_id,
        internal=internal,
    )
