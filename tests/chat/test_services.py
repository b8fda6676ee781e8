"""Every transition of the conversation state machine, routing, CSAT and transcripts."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.db import connection

from chat import presence, selectors, services
from chat.models import AgentStatus, BusinessHours, ChatSettings, Conversation, CsatRating, Message
from commerce.models import Shopper
from core.exceptions import Conflict, PermissionDenied, ValidationError
from tests.chat.conftest import make_agent

pytestmark = pytest.mark.django_db
# A page on Patron's own origin (the demo shop): any write key may chat from it.
OWN_PAGE = "http://testserver"

State = Conversation.State


def say(shopper: Shopper, body: str, client_id: str | None = None) -> services.ShopperPost:
    return services.shopper_message_post(shopper=shopper, body=body, client_id=client_id)


def transcript(conversation_id: int) -> list[tuple[int, str, str]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("seq")
        .values_list("seq", "author_kind", "body")
    )


def test_first_message_starts_a_bot_conversation_and_the_bot_answers_from_the_kb(shopper):
    result = say(shopper, "How long does shipping take?", "c1")

    conversation = Conversation.objects.get(pk=result.conversation_id)
    assert result.conversation_started is True
    assert conversation.state == State.BOT
    assert conversation.last_seq == 2
    assert transcript(conversation.pk) == [
        (1, "shopper", "How long does shipping take?"),
        (2, "bot", "We ship within 2 working days."),
    ]
    assert result.posted.message["seq"] == 1
    assert result.posted.message["author"]["kind"] == "shopper"


def test_a_retried_send_with_the_same_client_id_is_stored_once(shopper):
    first = say(shopper, "returns?", "same-id")
    again = say(shopper, "returns?", "same-id")

    assert again.posted.created is False
    assert again.posted.message["id"] == first.posted.message["id"]
    assert Message.objects.filter(author_kind="shopper").count() == 1
    assert Message.objects.filter(author_kind="bot").count() == 1  # the bot answered once


def test_invalid_bodies_and_client_ids_are_refused_and_store_nothing(shopper):
    with pytest.raises(ValidationError):
        say(shopper, "   ", "c1")
    with pytest.raises(ValidationError):
        say(shopper, "x" * 4001, "c2")
    with pytest.raises(ValidationError):
        say(shopper, "hi", "bad id with spaces")
    assert Conversation.objects.count() == 0
    assert Message.objects.count() == 0


def test_asking_for_a_human_queues_and_routes_to_an_online_agent(shopper):
    agent = make_agent("anna")

    result = say(shopper, "I want to talk to a human please", "c1")

    conversation = Conversation.objects.get(pk=result.conversation_id)
    assert conversation.state == State.ASSIGNED
    assert conversation.assigned_agent_id == agent.pk
    assert conversation.handed_off_at is not None
    assert [m[1] for m in transcript(conversation.pk)] == ["shopper", "system", "system"]
    assert transcript(conversation.pk)[2][2] == "Anna joined the conversation."


@pytest.mark.parametrize(
    "text",
    [
        "Gribu runāt ar cilvēku",
        "gribu runat ar cilveku",
        "Canl\u0131 destek istiyorum",
        "CANLI DESTEK",
        "temsilci lütfen",
        "operators",
    ],
)
def test_hand_off_phrases_in_latvian_and_turkish(shopper, text):
    result = say(shopper, text, "c1")

    assert Conversation.objects.get(pk=result.conversation_id).state == State.QUEUED


def test_the_bot_stays_silent_once_an_agent_holds_the_conversation(shopper):
    agent = make_agent("anna")
    result = say(shopper, "agent", "c1")
    assert Conversation.objects.get(pk=result.conversation_id).assigned_agent_id == agent.pk
    before = Message.objects.filter(author_kind="bot").count()

    say(shopper, "How long does shipping take?", "c2")
    say(shopper, "asdkjh qwe", "c3")

    assert Message.objects.filter(author_kind="bot").count() == before == 0
    with pytest.raises(Conflict):
        services.message_post(
            conversation_id=result.conversation_id, author_kind="bot", body="late"
        )
    assert Message.objects.filter(author_kind="bot").count() == 0


def test_an_agent_replying_to_a_bot_conversation_takes_it_over(shopper):
    agent = make_agent("anna")
    result = say(shopper, "How long does shipping take?", "c1")

    services.agent_message_post(
        agent=agent, conversation_id=result.conversation_id, body="Hi!", client_id="a1"
    )
    say(shopper, "and returns?", "c2")

    conversation = Conversation.objects.get(pk=result.conversation_id)
    assert conversation.state == State.ASSIGNED
    assert conversation.first_agent_response_at is not None
    assert [m[1] for m in transcript(conversation.pk)] == [
        "shopper",
        "bot",
        "system",
        "agent",
        "shopper",
    ]


def test_without_free_agents_the_conversation_waits_in_fifo_order(shopper):
    other = Shopper.objects.create()
    first = say(shopper, "human", "c1").conversation_id
    second = say(other, "human", "c1").conversation_id

    assert list(Conversation.objects.order_by("pk").values_list("state", flat=True)) == [
        "queued",
        "queued",
    ]
    assert selectors.queue_position(conversation=Conversation.objects.get(pk=first)) == 1
    assert selectors.queue_position(conversation=Conversation.objects.get(pk=second)) == 2

    agent = make_agent("anna", online=False)
    services.agent_connect(user=agent, connection_id="console-1")

    assert Conversation.objects.get(pk=first).assigned_agent_id == agent.pk
    assert Conversation.objects.get(pk=second).assigned_agent_id == agent.pk
    assert presence.live_connections()[agent.pk] == 1


def test_a_heartbeat_after_presence_was_lost_routes_what_queued_meanwhile(shopper):
    agent = make_agent("anna", online=False)
    services.agent_connect(user=agent, connection_id="console-1")
    presence.presence_clear([agent.pk])  # Redis restarted: every heartbeat is gone
    cid = say(shopper, "human", "c1").conversation_id
    assert Conversation.objects.get(pk=cid).state == State.QUEUED

    services.agent_heartbeat(user=agent, connection_id="console-1")

    assert Conversation.objects.get(pk=cid).assigned_agent_id == agent.pk
    assert selectors.agents_list()[0]["status"] == "online"


def test_capacity_is_respected_and_resolving_frees_a_slot(shopper):
    agent = make_agent("anna", capacity=1)
    other = Shopper.objects.create()
    first = say(shopper, "human", "c1").conversation_id
    second = say(other, "human", "c1").conversation_id
    assert Conversation.objects.get(pk=first).state == State.ASSIGNED
    assert Conversation.objects.get(pk=second).state == State.QUEUED

    services.conversation_resolve(conversation_id=first, by=agent)

    assert Conversation.objects.get(pk=first).state == State.RESOLVED
    assert Conversation.objects.get(pk=second).state == State.ASSIGNED
    assert Conversation.objects.get(pk=second).assigned_agent_id == agent.pk


def test_least_busy_routing_picks_the_agent_with_fewest_conversations(shopper):
    busy = make_agent("busy", capacity=5)
    idle = make_agent("idle", capacity=5)
    for index in range(2):
        conversation = services.conversation_start(shopper=Shopper.objects.create())
        services.conversation_assign(conversation_id=conversation.pk, agent=busy, by=busy)
        assert index >= 0

    result = say(shopper, "human", "c1")

    assert Conversation.objects.get(pk=result.conversation_id).assigned_agent_id == idle.pk


def test_round_robin_routing_rotates(shopper, chat_settings):
    ChatSettings.objects.filter(pk=1).update(routing="round_robin")
    services.chat_settings_invalidate()
    first = make_agent("first")
    second = make_agent("second")

    owners = [
        Conversation.objects.get(
            pk=say(Shopper.objects.create(), "human", "c").conversation_id
        ).assigned_agent_id
        for _ in range(4)
    ]

    assert owners == [first.pk, second.pk, first.pk, second.pk]


def test_away_or_stale_agents_are_not_routed_to(shopper):
    away = make_agent("away")
    AgentStatus.objects.filter(user=away).update(status="away")
    stale = make_agent("stale", online=False)
    AgentStatus.objects.filter(user=stale).update(status="online")
    # Its console's last heartbeat is older than the presence window: a process that died.
    presence.presence_beat(
        user_id=stale.pk,
        connection_id="dead-process",
        now=time.time() - settings.PATRON_AGENT_PRESENCE_SECONDS - 1,
    )

    result = say(shopper, "human", "c1")

    assert Conversation.objects.get(pk=result.conversation_id).state == State.QUEUED


def test_transfer_moves_the_conversation_and_only_from_assigned(shopper):
    anna = make_agent("anna")
    bob = make_agent("bob")
    cid = say(shopper, "agent", "c1").conversation_id
    assert Conversation.objects.get(pk=cid).assigned_agent_id == anna.pk

    services.conversation_transfer(conversation_id=cid, to_agent=bob, by=anna)

    assert Conversation.objects.get(pk=cid).assigned_agent_id == bob.pk
    services.conversation_resolve(conversation_id=cid, by=bob)
    with pytest.raises(Conflict):
        services.conversation_transfer(conversation_id=cid, to_agent=anna, by=bob)
    assert Conversation.objects.get(pk=cid).assigned_agent_id == bob.pk


def test_a_non_agent_cannot_assign(shopper):
    make_agent("anna")
    from django.contrib.auth import get_user_model

    outsider = get_user_model().objects.create_user(username="x", is_staff=True)
    cid = say(shopper, "shipping?", "c1").conversation_id

    with pytest.raises(PermissionDenied):
        services.conversation_assign(conversation_id=cid, agent=outsider, by=outsider)
    assert Conversation.objects.get(pk=cid).state == State.BOT


@pytest.mark.parametrize(("reopen_to", "expected"), [("bot", State.BOT), ("queued", State.QUEUED)])
def test_writing_after_resolve_reopens_as_the_merchant_configured(shopper, reopen_to, expected):
    ChatSettings.objects.filter(pk=1).update(reopen_state=reopen_to)
    services.chat_settings_invalidate()
    agent = make_agent("anna", online=False)
    cid = say(shopper, "human", "c1").conversation_id
    services.conversation_assign(conversation_id=cid, agent=agent, by=agent)
    services.conversation_resolve(conversation_id=cid, by=agent)
    assert Conversation.objects.get(pk=cid).csat_requested_at is not None

    result = say(shopper, "one more thing", "c2")

    conversation = Conversation.objects.get(pk=cid)
    assert result.conversation_id == cid
    assert conversation.state == expected
    assert conversation.assigned_agent_id is None
    assert conversation.resolved_at is None


def test_repeated_failures_clarify_once_then_hand_off(shopper):
    cid = say(shopper, "zxqv blorp", "c1").conversation_id
    assert Conversation.objects.get(pk=cid).state == State.BOT
    assert transcript(cid)[-1][1:] == ("bot", ChatSettings.objects.get().clarify_message)

    say(shopper, "flibber jabber", "c2")

    conversation = Conversation.objects.get(pk=cid)
    assert conversation.state == State.QUEUED
    assert conversation.bot_failures == 2
    assert Message.objects.filter(conversation_id=cid, author_kind="bot").count() == 1


def test_a_good_answer_resets_the_failure_count(shopper):
    cid = say(shopper, "zxqv blorp", "c1").conversation_id
    say(shopper, "what about returns", "c2")
    say(shopper, "flibber jabber", "c3")

    conversation = Conversation.objects.get(pk=cid)
    assert conversation.state == State.BOT
    assert conversation.bot_failures == 1


def test_csat_once_per_resolved_conversation(shopper):
    agent = make_agent("anna")
    cid = say(shopper, "human", "c1").conversation_id
    with pytest.raises(Conflict):
        services.csat_record(shopper=shopper, conversation_id=cid, rating=5)
    services.conversation_resolve(conversation_id=cid, by=agent)

    with pytest.raises(ValidationError):
        services.csat_record(shopper=shopper, conversation_id=cid, rating=6)
    services.csat_record(shopper=shopper, conversation_id=cid, rating=4, comment=" quick ")
    with pytest.raises(Conflict):
        services.csat_record(shopper=shopper, conversation_id=cid, rating=1)

    rating = CsatRating.objects.get()
    assert (rating.rating, rating.comment, rating.agent_id) == (4, "quick", agent.pk)


def test_a_shopper_cannot_touch_another_shoppers_conversation(shopper):
    cid = say(shopper, "returns?", "c1").conversation_id
    intruder = Shopper.objects.create()

    with pytest.raises(PermissionDenied):
        services.shopper_message_post(
            shopper=intruder, body="hi", client_id="x", conversation_id=cid
        )
    with pytest.raises(PermissionDenied):
        services.csat_record(shopper=intruder, conversation_id=cid, rating=5)
    assert Message.objects.filter(conversation_id=cid).count() == 2


def test_identity_token_and_customer_hash(write_key, shopper):
    identity = services.chat_identify(
        origin=OWN_PAGE, host="testserver", write_key=write_key.key, anonymous_id="anon-1"
    )
    again = services.chat_identify(
        origin=OWN_PAGE, host="testserver", write_key=write_key.key, token=identity.token
    )
    assert again.shopper.pk == identity.shopper.pk
    assert again.identified is False

    with pytest.raises(PermissionDenied):
        services.chat_identify(
            origin=OWN_PAGE, host="testserver", write_key=write_key.key, token=identity.token + "x"
        )
    with pytest.raises(PermissionDenied):
        services.chat_identify(
            origin=OWN_PAGE, host="testserver", write_key="nope", anonymous_id="anon-1"
        )
    with pytest.raises(PermissionDenied):
        services.chat_identify(
            origin=OWN_PAGE,
            host="testserver",
            write_key=write_key.key,
            customer_id="c-9",
            customer_hash_value="00",
        )

    good = services.customer_hash(customer_id="c-9", secret="s3cret")
    known = services.chat_identify(
        write_key=write_key.key,
        origin=OWN_PAGE,
        host="testserver",
        customer_id="c-9",
        customer_hash_value=good,
    )
    assert known.identified is True
    assert known.shopper.customer_id == "c-9"
    assert Shopper.objects.filter(customer_id="c-9").count() == 1


def test_outside_business_hours_the_shopper_leaves_an_email(
    shopper, django_capture_on_commit_callbacks
):
    now = dt.datetime.now(dt.UTC)
    closed_day = (now.weekday() + 3) % 7
    BusinessHours.objects.create(weekday=closed_day, opens=dt.time(9), closes=dt.time(17))
    ChatSettings.objects.filter(pk=1).update(support_email="support@shop.example")
    services.chat_settings_invalidate()
    make_agent("anna")

    cid = say(shopper, "human", "c1").conversation_id
    conversation = Conversation.objects.get(pk=cid)
    assert conversation.state == State.QUEUED
    assert conversation.assigned_agent_id is None
    assert transcript(cid)[-1][2] == ChatSettings.objects.get().offline_message

    with django_capture_on_commit_callbacks(execute=True):
        services.offline_message_leave(
            shopper=shopper,
            conversation_id=cid,
            email="ada@example.com",
            body="Call me back",
            client_id="c2",
        )

    conversation.refresh_from_db()
    assert conversation.channel == Conversation.Channel.EMAIL
    assert conversation.follow_up_email == "ada@example.com"
    notice, receipt = sorted(mail.outbox, key=lambda m: m.to != ["support@shop.example"])
    assert (notice.to, receipt.to) == (["support@shop.example"], ["ada@example.com"])
    assert notice.extra_headers["Reply-To"] == "ada@example.com"
    assert "Call me back" in notice.body
    mail.outbox.clear()

    agent = make_agent("bob", online=False)
    with django_capture_on_commit_callbacks(execute=True):
        services.agent_message_post(
            agent=agent, conversation_id=cid, body="We'll call at 10.", client_id="a1"
        )

    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"]
    assert mail.outbox[0].body.startswith("We'll call at 10.")


def test_transcript_by_email_leaves_out_private_notes(shopper, django_capture_on_commit_callbacks):
    agent = make_agent("anna")
    cid = say(shopper, "human", "c1").conversation_id
    services.agent_message_post(
        agent=agent, conversation_id=cid, body="VIP customer", client_id="n1", internal=True
    )
    services.agent_message_post(agent=agent, conversation_id=cid, body="Hello Ada", client_id="a1")

    with django_capture_on_commit_callbacks(execute=True):
        address = services.transcript_send(conversation_id=cid, email=None, shopper=shopper)

    assert address == "ada@example.com"
    assert len(mail.outbox) == 1
    body = mail.outbox[0].body
    assert "Anna: Hello Ada" in body
    assert "You: human" in body
    assert "VIP customer" not in body


def test_notes_are_agent_only():
    with pytest.raises(ValidationError):
        services.message_post(conversation_id=1, author_kind="shopper", body="x", internal=True)


@pytest.mark.django_db(transaction=True)
def test_concurrent_hand_offs_never_overfill_an_agent():
    anna = make_agent("anna", capacity=2)
    bob = make_agent("bob", capacity=1)
    conversations = [
        services.conversation_start(shopper=Shopper.objects.create()).pk for _ in range(8)
    ]
    barrier = threading.Barrier(len(conversations))
    errors: list[BaseException] = []

    def hand_off(cid: int) -> None:
        try:
            barrier.wait()
            services.conversation_hand_off(conversation_id=cid)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=hand_off, args=(cid,)) for cid in conversations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    loads: dict[Any, int] = {}
    for row in Conversation.objects.filter(state=State.ASSIGNED):
        loads[row.assigned_agent_id] = loads.get(row.assigned_agent_id, 0) + 1
    assert loads == {anna.pk: 2, bob.pk: 1}
    assert Conversation.objects.filter(state=State.QUEUED).count() == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_get_consecutive_seqs(shopper):
    cid = services.conversation_start(shopper=shopper).pk
    Conversation.objects.filter(pk=cid).update(state=State.QUEUED)
    barrier = threading.Barrier(6)

    def post(index: int) -> None:
        barrier.wait()
        for n in range(10):
            services.message_post(
                conversation_id=cid,
                author_kind="shopper",
                body=f"{index}-{n}",
                client_id=f"{index}-{n}",
            )
        connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    seqs = list(
        Message.objects.filter(conversation_id=cid).order_by("seq").values_list("seq", flat=True)
    )
    assert seqs == list(range(1, 61))
    assert Conversation.objects.get(pk=cid).last_seq == 60
