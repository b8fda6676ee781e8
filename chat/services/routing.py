"""Routing and assignment: picking an online agent, the queue, assign and transfer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from chat import selectors
from chat.models import AgentStatus, ChatSettings, Conversation
from chat.services._common import State, _emit_queue_positions, _emit_state, _lock, _online_agents
from chat.services.identity import chat_settings_get
from chat.services.messages import _system_say
from core.exceptions import Conflict, PermissionDenied


def _pick_agent(
    agents: list[AgentStatus], loads: dict[int, int], routing: str
) -> AgentStatus | None:
    free = [a for a in agents if loads.get(a.user_id, 0) < a.capacity]
    if not free:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    if routing == ChatSettings.Routing.ROUND_ROBIN:
        return min(free, key=lambda a: (a.last_assigned_at or epoch, a.pk))
    return min(
        free,
        key=lambda a: (
            loads.get(a.user_id, 0) / max(a.capacity, 1),
            a.last_assigned_at or epoch,
            a.pk,
        ),
    )


def _assign(conversation: Conversation, agent_user: Any, *, now: dt.datetime) -> int | None:
    """Make ``agent_user`` answer ``conversation`` (row locked by the caller)."""
    previous = conversation.assigned_agent_id
    conversation.state = State.ASSIGNED
    conversation.assigned_agent = agent_user
    conversation.assigned_at = now
    conversation.updated_at = now
    conversation.save(update_fields=["state", "assigned_agent", "assigned_at", "updated_at"])
    AgentStatus.objects.filter(user=agent_user).update(last_assigned_at=now)
    _system_say(
        conversation.pk,
        gettext_noop("%(name)s joined the conversation."),
        name=selectors.agent_name(agent_user),
    )
    return previous


def conversation_route(*, conversation_id: int) -> Conversation:
    """Assign a queued conversation to an online agent with free capacity (least busy or round
    robin, as configured), or leave it queued and tell every queued shopper their place.

    Locks every online agent's status row in pk order before the conversation, so concurrent
    hand-offs see each other's assignments and never overfill an agent.
    """
    routing = chat_settings_get().routing
    with transaction.atomic():
        agents = list(_online_agents().select_for_update().order_by("pk"))
        conversation = _lock(conversation_id)
        if conversation.state != State.QUEUED or conversation.channel != Conversation.Channel.CHAT:
            return conversation
        chosen = _pick_agent(agents, selectors.agent_loads(), routing)
        if chosen is None:
            _emit_queue_positions()
            return conversation
        now = timezone.now()
        previous = _assign(conversation, chosen.user, now=now)
        _emit_state(conversation_id, previous_agent_id=previous)
        _emit_queue_positions()
    return conversation


def queue_drain() -> int:
    """Assign queued chat conversations, oldest first, while agents have free capacity."""
    routing = chat_settings_get().routing
    assigned = 0
    with transaction.atomic():
        agents = list(_online_agents().select_for_update().order_by("pk"))
        if not agents:
            return 0
        loads = selectors.agent_loads()
        free = sum(max(a.capacity - loads.get(a.user_id, 0), 0) for a in agents)
        if free == 0:
            return 0
        waiting = list(
            Conversation.objects.select_for_update(skip_locked=True)
            .filter(state=State.QUEUED, channel=Conversation.Channel.CHAT)
            .order_by("queued_at", "pk")[:free]
        )
        now = timezone.now()
        for conversation in waiting:
            chosen = _pick_agent(agents, loads, routing)
            if chosen is None:
                break
            previous = _assign(conversation, chosen.user, now=now)
            chosen.last_assigned_at = now
            loads[chosen.user_id] = loads.get(chosen.user_id, 0) + 1
            _emit_state(conversation.pk, previous_agent_id=previous)
            assigned += 1
        if assigned:
            _emit_queue_positions()
    return assigned


def _check_agent(user: Any) -> None:
    if not selectors.is_agent(user):
        raise PermissionDenied("Only agents can do this.", code="forbidden")


def _check_can_take(agent: Any, *, by: Any) -> None:
    """Refuse to give ``agent`` a conversation when someone else assigns it and ``agent`` is not
    online or has no free capacity. Call holding ``agent``'s ``AgentStatus`` row lock.

    An agent who takes a conversation themselves (``by`` is ``agent``: a reply in an unassigned
    conversation, "assign to me") decides their own load; routing never gives them more than
    their capacity."""
    if by is not None and by.pk == agent.pk:
        return
    name = selectors.agent_name(agent)
    if not _online_agents().filter(user=agent).exists():
        raise Conflict(f"{name} is not online.", code="agent_unavailable")
    capacity = AgentStatus.objects.filter(user=agent).values_list("capacity", flat=True).get()
    load = selectors.agent_loads().get(agent.pk, 0)
    if load >= capacity:
        raise Conflict(
            f"{name} is at capacity ({load} of {capacity} conversations).",
            code="agent_at_capacity",
        )


def _assign_checked(
    *, conversation_id: int, agent: Any, by: Any, transfer: bool = False
) -> Conversation:
    _check_agent(by)
    _check_agent(agent)
    with transaction.atomic():
        # Lock order: AgentStatus rows, then the conversation (as routing does).
        list(AgentStatus.objects.select_for_update().filter(user=agent))
        conversation = _lock(conversation_id)
        if conversation.state == State.RESOLVED:
            raise Conflict("This conversation is resolved.", code="conflict")
        if transfer and conversation.state != State.ASSIGNED:
            raise Conflict("Only an assigned conversation can be transferred.", code="conflict")
        if conversation.state == State.ASSIGNED and conversation.assigned_agent_id == agent.pk:
            return conversation
        _check_can_take(agent, by=by)
        now = timezone.now()
        if conversation.handed_off_at is None:
            conversation.handed_off_at = now
            conversation.save(update_fields=["handed_off_at"])
        previous = _assign(conversation, agent, now=now)
        _emit_state(conversation_id, previous_agent_id=previous)
        _emit_queue_positions()
    return conversation


def conversation_assign(*, conversation_id: int, agent: Any, by: Any) -> Conversation:
    """Assign to ``agent`` (an agent taking a conversation, or a manager assigning it); works
    from ``bot`` or ``queued`` (the bot falls silent) and from ``assigned`` (a transfer).

    ``by`` and ``agent`` must be agents (``PermissionDenied``). When ``by`` is someone else,
    ``agent`` must be online with free capacity (``Conflict``, codes ``agent_unavailable`` and
    ``agent_at_capacity``). A resolved conversation is a ``Conflict``. Sends the state,
    assignment and queue events after commit, and says in the conversation who joined.
    """
    return _assign_checked(conversation_id=conversation_id, agent=agent, by=by)


def conversation_transfer(*, conversation_id: int, to_agent: Any, by: Any) -> Conversation:
    """assigned → assigned to another agent; the rules and events of ``conversation_assign``,
    and a ``Conflict`` unless the conversation is assigned."""
    return _assign_checked(conversation_id=conversation_id, agent=to_agent, by=by, transfer=True)
