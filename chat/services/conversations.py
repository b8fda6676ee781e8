"""The conversation state machine: start, shopper posts, the bot, hand-off, resolve, reopen, CSAT."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from chat.models import Conversation, CsatRating
from chat.services._common import (
    MAX_BODY,
    Author,
    State,
    _emit,
    _emit_state,
    _lock,
    _online_agents,
    conversation_group,
    staff_group,
)
from chat.services.identity import business_hours_open, chat_settings_get, conversation_for_shopper
from chat.services.language import (
    conversation_language,
    conversation_language_detected,
    language_normalise,
    translate,
)
from chat.services.messages import _emit_inbox_update, _system_say, message_post
from chat.services.post_rules import (
    PostedMessage,
    bot_answers,
    clean_body,
    clean_client_id,
    may_post,
)
from chat.services.routing import _check_agent, conversation_route, queue_drain
from chat.services.transcripts import offline_emails_fire
from commerce.models import Shopper
from core.exceptions import Conflict, ValidationError

# Said instead of the hand-off message when no agent is online in business hours.
NO_AGENTS_MESSAGE = gettext_noop(
    "No one from our team is online right now. Leave your email address and your question, "
    "and we'll reply by email."
)

# --- Conversation lifecycle ------------------------------------------------------------------


@transaction.atomic
def conversation_start(
    *, shopper: Shopper, language: str = "", page_url: str = "", page_title: str = ""
) -> Conversation:
    """A new conversation, answered by the bot (or queued at once when the bot is off).

    ``language``: the widget's locale (e.g. ``"tr-TR"``); when it names no shipped language,
    the shopper's identified ``locale``; else none yet, and the shopper's first message decides
    (``chat.services.language``)."""
    now = timezone.now()
    conversation = Conversation.objects.create(
        shopper=shopper,
        state=State.BOT,
        language=language_normalise(language) or language_normalise(shopper.locale),
        page_url=page_url[:2000],
        page_title=page_title[:300],
        page_seen_at=now if page_url else None,
        created_at=now,
        updated_at=now,
    )
    _emit_inbox_update(conversation.pk)
    return conversation


@dataclass(frozen=True)
class ShopperPost:
    conversation_id: int
    posted: PostedMessage
    conversation_started: bool
    # Set when this message made the bot hand off outside business hours (see ``HandOff``).
    offline_prompt: dict[str, Any] | None = None


def shopper_message_post(
    *,
    shopper: Shopper,
    body: str,
    client_id: str | None,
    conversation_id: int | None = None,
    language: str = "",
    page_url: str = "",
    page_title: str = "",
) -> ShopperPost:
    """A shopper writes: start or reopen the conversation as needed, store the message, and let
    the bot answer when the conversation is the bot's."""
    body = clean_body(body)
    client_id = clean_client_id(client_id)
    if conversation_id is not None:
        # The hot path: one statement, which also checks the conversation is this shopper's.
        try:
            posted = message_post(
                conversation_id=conversation_id,
                author_kind=Author.SHOPPER,
                body=body,
                client_id=client_id,
                shopper_id=shopper.pk,
            )
        except Conflict:
            pass  # resolved: reopened below
        else:
            handoff = (
                bot_respond(conversation_id=conversation_id, text=body)
                if bot_answers(posted)
                else None
            )
            return ShopperPost(
                conversation_id=conversation_id,
                posted=posted,
                conversation_started=False,
                offline_prompt=handoff.offline_prompt if handoff else None,
            )
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    started = False
    if conversation is None:
        conversation = conversation_start(
            shopper=shopper, language=language, page_url=page_url, page_title=page_title
        )
        started = True
    try:
        posted = message_post(
            conversation_id=conversation.pk,
            author_kind=Author.SHOPPER,
            body=body,
            client_id=client_id,
            shopper_id=shopper.pk,
        )
    except Conflict:
        conversation_reopen(conversation_id=conversation.pk)
        posted = message_post(
            conversation_id=conversation.pk,
            author_kind=Author.SHOPPER,
            body=body,
            client_id=client_id,
            shopper_id=shopper.pk,
        )
    handoff = (
        bot_respond(conversation_id=conversation.pk, text=body) if bot_answers(posted) else None
    )
    return ShopperPost(
        conversation_id=conversation.pk,
        posted=posted,
        conversation_started=started,
        offline_prompt=handoff.offline_prompt if handoff else None,
    )


def bot_respond(*, conversation_id: int, text: str) -> HandOff | None:
    """Let the bot answer ``text``; hands off on request, on low confidence after a clarifying
    question, or after ``bot_max_failures`` failures in a row. Silent unless state is ``bot``.
    Returns the hand-off when it handed off."""
    from chat import bot

    settings_row = chat_settings_get()
    conversation = Conversation.objects.select_related("shopper").get(pk=conversation_id)
    if not may_post(Author.BOT, conversation.state):
        return None
    if not settings_row.bot_enabled:
        return conversation_hand_off(conversation_id=conversation_id, reason="bot_disabled")
    reply = bot.bot_answer(conversation=conversation, text=text, settings_row=settings_row)
    # No locale given: the conversation speaks the language the shopper writes in, from now on.
    conversation_language_detected(conversation_id=conversation_id, language=reply.language)
    if reply.failed:
        failures = _bot_failures_bump(conversation_id)
        if failures >= settings_row.bot_max_failures:
            return conversation_hand_off(conversation_id=conversation_id, reason="bot_failures")
    elif reply.handoff:
        if reply.text:
            _bot_say(conversation_id, reply.text, reply.intent)
        return conversation_hand_off(
            conversation_id=conversation_id, reason=reply.intent or "requested"
        )
    else:
        Conversation.objects.filter(pk=conversation_id, bot_failures__gt=0).update(bot_failures=0)
    if reply.text:
        _bot_say(conversation_id, reply.text, reply.intent)
    return None


def _bot_failures_bump(conversation_id: int) -> int:
    Conversation.objects.filter(pk=conversation_id).update(bot_failures=F("bot_failures") + 1)
    return int(Conversation.objects.values_list("bot_failures", flat=True).get(pk=conversation_id))


def _bot_say(conversation_id: int, text: str, intent: str) -> None:
    # Conflict: an agent took over meanwhile, and the bot stays silent, which is the point.
    with contextlib.suppress(Conflict):
        message_post(
            conversation_id=conversation_id,
            author_kind=Author.BOT,
            body=text[:MAX_BODY],
            intent=intent,
        )


@dataclass(frozen=True)
class HandOff:
    conversation: Conversation
    # The offline.prompt frame sent to the conversation's sockets (outside business hours, or
    # no agent online).
    # A socket that joins the conversation only after this call (the hand-off started it) did
    # not hear it, and sends it itself.
    offline_prompt: dict[str, Any] | None = None


def conversation_hand_off(*, conversation_id: int, reason: str = "requested") -> HandOff:
    """bot → queued (then routed to an agent). When nobody can answer live, outside business
    hours or with no agent online, the shopper is told so honestly and asked for an email
    address and their question (``offline.prompt``, which ``offline_message_leave`` answers);
    a conversation queued with no agent online stays in the live queue meanwhile, so an agent
    who comes online takes it. Queued or assigned: nothing changes. Resolved: reopened straight
    into the queue."""
    settings_row = chat_settings_get()
    open_now = business_hours_open()
    prompt: dict[str, Any] | None = None
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state in (State.QUEUED, State.ASSIGNED):
            return HandOff(conversation=conversation)
        now = timezone.now()
        conversation.state = State.QUEUED
        conversation.queued_at = now
        conversation.handed_off_at = conversation.handed_off_at or now
        conversation.assigned_agent = None
        conversation.updated_at = now
        conversation.save(
            update_fields=["state", "queued_at", "handed_off_at", "assigned_agent", "updated_at"]
        )
        staffed = open_now and _online_agents().exists()
        if staffed:
            _system_say(conversation_id, settings_row.handoff_message)
        else:
            # An English msgid (or the merchant's own sentence), said in the conversation's
            # language by _system_say and by the prompt alike.
            message = NO_AGENTS_MESSAGE if open_now else settings_row.offline_message
            _system_say(conversation_id, message)
            prompt = {
                "type": "offline.prompt",
                "conversation_id": conversation_id,
                "message": translate(message, language=conversation_language(conversation_id)),
                "reason": "no_agents" if open_now else "closed",
            }
            _emit(
                conversation_group(conversation_id),
                {**prompt, "audience": "shopper"},
                conversation_id=conversation_id,
            )
        _emit_state(conversation_id)
    if open_now:
        return HandOff(
            conversation=conversation_route(conversation_id=conversation_id), offline_prompt=prompt
        )
    return HandOff(conversation=conversation, offline_prompt=prompt)


def conversation_resolve(*, conversation_id: int, by: Any = None) -> Conversation:
    """Close the conversation and ask the shopper for a CSAT rating; frees the agent's slot.

    The agent who held it keeps it (``assigned_agent`` stays, no ``assignment`` event), so
    their console stays subscribed and hears the rating; it lets go when the conversation is
    reopened (``conversation_reopen``) or when they leave it."""
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state == State.RESOLVED:
            return conversation
        if by is not None:
            _check_agent(by)
        now = timezone.now()
        _system_say(conversation_id, gettext_noop("This conversation has been resolved."))
        conversation.state = State.RESOLVED
        conversation.resolved_at = now
        conversation.resolved_by = by
        conversation.csat_requested_at = now
        conversation.updated_at = now
        conversation.save(
            update_fields=["state", "resolved_at", "resolved_by", "csat_requested_at", "updated_at"]
        )
        _emit_state(conversation_id)
        _emit(
            conversation_group(conversation_id),
            {"type": "csat.request", "conversation_id": conversation_id, "audience": "shopper"},
            conversation_id=conversation_id,
        )
        freed = conversation.assigned_agent_id is not None
    if freed:
        queue_drain()
    return conversation


def conversation_reopen(*, conversation_id: int) -> Conversation:
    """resolved → bot or queued (``ChatSettings.reopen_state``); other states: unchanged."""
    reopen_to = chat_settings_get().reopen_state
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state != State.RESOLVED:
            return conversation
        now = timezone.now()
        previous_agent_id = conversation.assigned_agent_id
        conversation.state = reopen_to
        conversation.assigned_agent = None
        conversation.bot_failures = 0
        conversation.resolved_at = None
        conversation.csat_requested_at = None
        conversation.queued_at = now if reopen_to == State.QUEUED else None
        conversation.updated_at = now
        conversation.save(
            update_fields=[
                "state",
                "assigned_agent",
                "bot_failures",
                "resolved_at",
                "csat_requested_at",
                "queued_at",
                "updated_at",
            ]
        )
        # The agent who resolved it lets go now (an ``assignment`` with agent null).
        _emit_state(conversation_id, previous_agent_id=previous_agent_id)
    if reopen_to == State.QUEUED:
        return conversation_route(conversation_id=conversation_id)
    return conversation


def shopper_hand_off_request(
    *, shopper: Shopper, conversation_id: int | None, language: str = ""
) -> HandOff:
    """The shopper pressed "talk to a person": start, reopen or hand off as needed."""
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    if conversation is None:
        conversation = conversation_start(shopper=shopper, language=language)
    if conversation.state == State.RESOLVED:
        with transaction.atomic():
            locked = _lock(conversation.pk)
            if locked.state == State.RESOLVED:
                previous_agent_id = locked.assigned_agent_id
                locked.state = State.BOT
                locked.assigned_agent = None
                locked.resolved_at = None
                locked.csat_requested_at = None
                locked.save(
                    update_fields=["state", "assigned_agent", "resolved_at", "csat_requested_at"]
                )
                _emit_state(locked.pk, previous_agent_id=previous_agent_id)
    return conversation_hand_off(conversation_id=conversation.pk, reason="requested")


def offline_message_leave(
    *, shopper: Shopper, conversation_id: int | None, email: str, body: str, client_id: str | None
) -> PostedMessage:
    """Outside business hours: keep the shopper's message and address; the conversation becomes
    an email follow-up (agents' replies are emailed) and the support inbox is told."""
    from django.core.validators import validate_email

    try:
        validate_email(email)
    except Exception:
        raise ValidationError(gettext("email is not a valid address")) from None
    body = clean_body(body)
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    if conversation is None:
        conversation = conversation_start(shopper=shopper)
    with transaction.atomic():
        locked = _lock(conversation.pk)
        previous_agent_id = locked.assigned_agent_id if locked.state == State.RESOLVED else None
        now = timezone.now()
        locked.follow_up_email = email
        locked.channel = Conversation.Channel.EMAIL
        if locked.state != State.ASSIGNED:
            locked.state = State.QUEUED
            locked.assigned_agent = None
            locked.queued_at = locked.queued_at or now
            locked.handed_off_at = locked.handed_off_at or now
        locked.updated_at = now
        locked.save(
            update_fields=[
                "follow_up_email",
                "channel",
                "state",
                "assigned_agent",
                "queued_at",
                "handed_off_at",
                "updated_at",
            ]
        )
        if not shopper.email:
            Shopper.objects.filter(pk=shopper.pk, email="").update(email=email)
        posted = message_post(
            conversation_id=locked.pk,
            author_kind=Author.SHOPPER,
            body=body,
            client_id=client_id,
            shopper_id=shopper.pk,
        )
        if posted.created:
            offline_emails_fire(
                shopper=shopper,
                conversation_id=locked.pk,
                message_id=posted.message["id"],
                seq=posted.message["seq"],
                email=email,
            )
        _emit_state(locked.pk, previous_agent_id=previous_agent_id)
    return posted


def csat_record(
    *, shopper: Shopper, conversation_id: int, rating: Any, comment: str = ""
) -> CsatRating:
    """The shopper's rating of a resolved conversation; once per conversation."""
    if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
        raise ValidationError(gettext("rating must be a whole number from 1 to 5"))
    if not isinstance(comment, str) or len(comment) > 1000:
        raise ValidationError(gettext("comment must be text of at most 1000 characters"))
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    assert conversation is not None
    if conversation.csat_requested_at is None:
        raise Conflict(
            gettext("Ratings are asked for after a conversation is resolved."), code="conflict"
        )
    try:
        with transaction.atomic():
            csat = CsatRating.objects.create(
                conversation=conversation,
                agent_id=conversation.assigned_agent_id,
                rating=rating,
                comment=comment.strip(),
            )
    except IntegrityError:
        raise Conflict(
            gettext("This conversation has already been rated."), code="conflict"
        ) from None
    with transaction.atomic():
        event = {
            "type": "csat.recorded",
            "conversation_id": conversation.pk,
            "rating": rating,
            "comment": csat.comment,
        }
        _emit(staff_group(conversation.pk), event, conversation_id=conversation.pk)
        _emit(
            conversation_group(conversation.pk),
            {
                "type": "csat.recorded",
                "conversation_id": conversation.pk,
                "rating": rating,
                "audience": "shopper",
            },
            conversation_id=conversation.pk,
        )
    return csat


def conversation_page_view(
    *, shopper: Shopper, conversation_id: int | None, url: str, title: str = ""
) -> None:
    """The shopper is on ``url`` now: update the conversation and every open context panel."""
    if not isinstance(url, str) or not isinstance(title, str):
        raise ValidationError("url and title must be text")
    conversation = conversation_for_shopper(shopper=shopper, conversation_id=conversation_id)
    if conversation is None:
        return
    now = timezone.now()
    with transaction.atomic():
        Conversation.objects.filter(pk=conversation.pk).update(
            page_url=url[:2000], page_title=title[:300], page_seen_at=now
        )
        _emit(
            staff_group(conversation.pk),
            {
                "type": "context.update",
                "conversation_id": conversation.pk,
                "section": {
                    "key": "current_page",
                    "title": "Current page",
                    "data": {"url": url[:2000], "title": title[:300], "at": now.isoformat()},
                },
            },
            conversation_id=conversation.pk,
        )
