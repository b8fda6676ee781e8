"""The chat admin changes state only through the services (#10 point 3): assignment is read-only
in the conversation form; the assign page calls ``conversation_assign``, which refuses an
agent who is offline or at capacity and otherwise sends the same real-time events as the
console's assign; agents' capacity goes through ``agent_capacity_set``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages

from chat import services
from chat.models import AgentStatus, Conversation, Message
from commerce.models import PERSONAL_DATA_PERMISSION, Shopper
from core.exceptions import Conflict
from tests.chat.conftest import make_agent
from tests.support.admin_forms import change_form_data
from tests.support.permissions import grant

pytestmark = pytest.mark.django_db

State = Conversation.State


def _assign_url(conversation: Conversation) -> str:
    return f"/admin/chat/conversation/{conversation.pk}/assign/"


def _said(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def _holding(agent: Any, count: int) -> None:
    for _ in range(count):
        conversation = services.conversation_start(shopper=Shopper.objects.create())
        services.conversation_assign(conversation_id=conversation.pk, agent=agent, by=agent)


def test_the_conversation_form_is_read_only(admin_client, shopper):
    anna = make_agent("anna")
    conversation = services.conversation_start(shopper=shopper)
    page = admin_client.get(f"/admin/chat/conversation/{conversation.pk}/change/")

    assert "assigned_agent" not in change_form_data(page)
    assert f'href="{_assign_url(conversation)}"' in page.content.decode()
    data = {**change_form_data(page), "assigned_agent": anna.pk, "state": "assigned"}
    admin_client.post(f"/admin/chat/conversation/{conversation.pk}/change/", data)

    row = Conversation.objects.get(pk=conversation.pk)
    assert (row.state, row.assigned_agent_id) == (State.BOT, None)


def test_assigning_over_capacity_is_refused_with_a_message(admin_client, shopper):
    anna = make_agent("anna", capacity=1)
    _holding(anna, 1)
    conversation = services.conversation_start(shopper=shopper)

    response = admin_client.post(_assign_url(conversation), {"agent": anna.pk}, follow=True)

    assert response.status_code == 200
    assert _said(response) == ["Anna is at capacity (1 of 1 conversations)."]
    row = Conversation.objects.get(pk=conversation.pk)
    assert (row.state, row.assigned_agent_id) == (State.BOT, None)
    assert not Message.objects.filter(conversation=conversation).exists()


def test_assigning_to_an_offline_agent_is_refused(admin_client, shopper):
    away = make_agent("away", online=False)
    conversation = services.conversation_start(shopper=shopper)

    response = admin_client.post(_assign_url(conversation), {"agent": away.pk}, follow=True)

    assert _said(response) == ["Away is not online."]
    assert Conversation.objects.get(pk=conversation.pk).assigned_agent_id is None


def _collect(layer: Any, channel: str, wanted: int, loop: asyncio.AbstractEventLoop) -> list[Any]:
    async def receive() -> list[Any]:
        return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(wanted)]

    return loop.run_until_complete(receive())


def test_a_valid_assignment_stores_and_sends_what_the_service_does(
    admin_client, shopper, django_capture_on_commit_callbacks
):
    anna = make_agent("anna")
    conversation = services.conversation_start(shopper=shopper)
    layer = get_channel_layer()
    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(layer.new_channel())
        loop.run_until_complete(layer.group_add(services.agent_group(anna.pk), channel))

        with django_capture_on_commit_callbacks(execute=True):
            response = admin_client.post(_assign_url(conversation), {"agent": anna.pk}, follow=True)
        (heard,) = _collect(layer, channel, 1, loop)
        loop.run_until_complete(layer.flush())
    finally:
        loop.close()

    assert _said(response) == [f"Conversation {conversation.pk} is now with Anna."]
    row = Conversation.objects.get(pk=conversation.pk)
    assert (row.state, row.assigned_agent_id) == (State.ASSIGNED, anna.pk)
    assert row.handed_off_at is not None
    assert list(
        Message.objects.filter(conversation=conversation).values_list("body", flat=True)
    ) == ["Anna joined the conversation."]
    assert heard == {
        "type": "chat.event",
        "event": {
            "type": "assignment",
            "conversation_id": conversation.pk,
            "agent": {"id": anna.pk, "name": "Anna"},
        },
        "cid": conversation.pk,
    }


def test_raising_an_agents_capacity_in_the_admin_hands_them_the_queue(admin_client, shopper):
    anna = make_agent("anna", capacity=0)
    queued = services.shopper_hand_off_request(shopper=shopper, conversation_id=None).conversation
    assert Conversation.objects.get(pk=queued.pk).state == State.QUEUED
    status = AgentStatus.objects.get(user=anna)
    page = admin_client.get(f"/admin/chat/agentstatus/{status.pk}/change/")
    assert "status" not in change_form_data(page)

    admin_client.post(
        f"/admin/chat/agentstatus/{status.pk}/change/",
        {**change_form_data(page), "capacity": 2, "status": "offline"},
    )

    row = Conversation.objects.get(pk=queued.pk)
    assert (row.state, row.assigned_agent_id) == (State.ASSIGNED, anna.pk)
    assert AgentStatus.objects.get(pk=status.pk).status == AgentStatus.Status.ONLINE


def test_a_manager_who_is_not_an_agent_is_told_and_nothing_changes(client, shopper):
    anna = make_agent("anna")
    manager = get_user_model().objects.create_user(username="boss", is_staff=True)
    manager = grant(
        manager,
        "chat.view_conversation",
        "chat.change_conversation",
        PERSONAL_DATA_PERMISSION,
    )
    client.force_login(manager)
    conversation = services.conversation_start(shopper=shopper)

    assign = client.post(_assign_url(conversation), {"agent": anna.pk}, follow=True)
    resolve = client.post(
        "/admin/chat/conversation/",
        {"action": "resolve", "_selected_action": [conversation.pk]},
        follow=True,
    )

    assert _said(assign) == ["Only agents can do this."]
    assert _said(resolve) == [
        f"Conversation {conversation.pk} (bot): Only agents can do this.",
        "Resolved 0 conversations.",
    ]
    row = Conversation.objects.get(pk=conversation.pk)
    assert (row.state, row.assigned_agent_id) == (State.BOT, None)


# --- The rule's home: the service -----------------------------------------------------------


def test_the_service_refuses_a_full_or_absent_agent_only_when_someone_else_assigns(shopper):
    anna = make_agent("anna", capacity=1)
    bob = make_agent("bob")
    _holding(anna, 1)
    conversation = services.conversation_start(shopper=shopper)

    with pytest.raises(Conflict) as refused:
        services.conversation_assign(conversation_id=conversation.pk, agent=anna, by=bob)
    assert refused.value.code == "agent_at_capacity"
    with pytest.raises(Conflict):
        services.conversation_transfer(conversation_id=conversation.pk, to_agent=anna, by=bob)

    services.conversation_assign(conversation_id=conversation.pk, agent=anna, by=anna)

    assert Conversation.objects.get(pk=conversation.pk).assigned_agent_id == anna.pk
