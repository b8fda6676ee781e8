"""Chat's emails, sent as engagement campaigns: triggers, their template context and previews.

Registered from ``ChatConfig.ready``. ``chat/migrations/0004`` seeds one transactional
campaign per trigger (editable in the admin like any campaign's template); chat's services fire
the triggers in the transaction that decides to send, and engagement's outbox delivers,
retries, sweeps and checks suppressions. No campaign active for a trigger: nothing is sent.

| trigger              | fired by                                   | sent to                 | occurrence key                    |
|----------------------|--------------------------------------------|-------------------------|-----------------------------------|
| chat_offline_receipt | the shopper's offline message              | the address they gave   | ``chat-message:<shopper msg id>`` |
| chat_offline_notice  | the same                                   | chat settings' support  | ``chat-message:<shopper msg id>`` |
|                      |                                            | inbox (Reply-To: them)  |                                   |
| chat_follow_up       | an agent's reply in an email conversation  | the follow-up address   | ``chat-message:<agent msg id>``   |
| chat_transcript      | a transcript request (shopper or agent)    | the address asked for   | see ``transcript_occurrence_key`` |

Template variables, computed at send time: ``conversation`` (plain data: id, state, channel,
created_at, follow_up_email), ``conversation_id``,
``transcript`` (text, without private notes, up to the message that fired it), and
``follow_up_email``; the follow-up adds ``reply`` and ``agent_name``; the notice adds
``shopper_email`` and ``console_url``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils.translation import gettext, gettext_noop

from chat.models import Conversation, Message
from chat.selectors import agent_name
from engagement.registry import Occurrence, register_trigger

if TYPE_CHECKING:
    from commerce.models import Shopper

# The fixed words of the shopper's chat emails as migration 0018 writes their templates
# (``{% translate "…" %}``): marked here so makemessages puts them in the catalogs.
SHIPPED_EMAIL_TEXTS = (
    gettext_noop("We got your message"),
    gettext_noop(
        "Thanks for your message. We're offline right now and will reply to this address as "
        "soon as we're back."
    ),
    gettext_noop("Re: your message"),
    gettext_noop("Your chat transcript"),
)

OFFLINE_RECEIPT = "chat_offline_receipt"
OFFLINE_NOTICE = "chat_offline_notice"
FOLLOW_UP = "chat_follow_up"
TRANSCRIPT = "chat_transcript"


def transcript_text(conversation: Conversation, *, upto_seq: int | None = None) -> str:
    """The conversation as text for the shopper: no private notes; up to ``upto_seq``. Its
    labels are in the active language (a chat email renders in the conversation's)."""
    lines = [
        gettext("Conversation %(id)s — %(started)s UTC")
        % {"id": conversation.pk, "started": f"{conversation.created_at:%Y-%m-%d %H:%M}"},
        "",
    ]
    names = {
        "shopper": gettext("You"),
        "bot": gettext("Assistant"),
        "system": "—",
    }
    messages = Message.objects.filter(conversation=conversation, internal=False)
    if upto_seq is not None:
        messages = messages.filter(seq__lte=upto_seq)
    for message in messages.select_related("author_agent").order_by("seq"):
        if message.author_kind == Message.Author.AGENT:
            who = agent_name(message.author_agent) or gettext("Agent")
        else:
            who = names[message.author_kind]
        lines.append(f"[{message.created_at:%H:%M}] {who}: {message.body}")
    return "\n".join(lines) + "\n"


def transcript_occurrence_key(
    *, conversation_id: int, upto_seq: int, address: str, at: dt.datetime
) -> str:
    """What makes two transcript requests the same one: the same conversation, with nothing
    new in it, to the same address, within the same clock hour.

    A retried HTTP call, a frame re-sent after a reconnect or a double click sends one email;
    asking again once the conversation has moved on, or an hour later (the first one lost),
    sends another. Neither the widget's frame nor the console's carries a request id today,
    so the key is derived from what the request asks for.
    """
    digest = hashlib.sha256(address.strip().lower().encode()).hexdigest()[:16]
    return f"chat-transcript:{conversation_id}:{upto_seq}:{digest}:{at:%Y%m%d%H}"


# --- Template contexts (engagement calls these at send time) ---------------------------------


def _conversation(occurrence: Occurrence) -> Conversation | None:
    conversation_id = occurrence.data.get("conversation_id")
    if not isinstance(conversation_id, int):
        return None
    return Conversation.objects.filter(pk=conversation_id).first()


def _upto(occurrence: Occurrence) -> int | None:
    upto = occurrence.data.get("upto_seq")
    return upto if isinstance(upto, int) else None


def _conversation_data(conversation: Conversation | None) -> dict[str, Any] | None:
    """What a merchant's template may read of the conversation: plain data, no model instance
    (which would reach the assigned agent's user row, internal notes and other messages)."""
    if conversation is None:
        return None
    return {
        "id": conversation.pk,
        "state": conversation.state,
        "channel": conversation.channel,
        "created_at": conversation.created_at,
        "follow_up_email": conversation.follow_up_email,
    }


def _transcript_context(shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
    conversation = _conversation(occurrence)
    return {
        "conversation": _conversation_data(conversation),
        "transcript": (
            transcript_text(conversation, upto_seq=_upto(occurrence)) if conversation else ""
        ),
        "follow_up_email": conversation.follow_up_email if conversation else "",
    }


def _notice_context(shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
    return {
        **_transcript_context(shopper, occurrence),
        "console_url": f"{settings.PATRON_BASE_URL}/console/",
    }


def _follow_up_context(shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
    message_id = occurrence.data.get("message_id")
    message = (
        Message.objects.select_related("author_agent")
        .filter(pk=message_id, internal=False, author_kind=Message.Author.AGENT)
        .first()
        if isinstance(message_id, int)
        else None
    )
    conversation = _conversation(occurrence)
    return {
        "conversation": _conversation_data(conversation),
        "follow_up_email": conversation.follow_up_email if conversation else "",
        "reply": message.body if message is not None else "",
        "agent_name": (agent_name(message.author_agent) if message is not None else "")
        or gettext("Agent"),
    }


# --- Admin previews: occurrence data from the shopper's latest conversation --------------------


def _preview(shopper: Shopper) -> dict[str, Any]:
    conversation = Conversation.objects.filter(shopper=shopper).order_by("-created_at").first()
    if conversation is None:
        return {"conversation_id": None, "shopper_email": shopper.email}
    last = (
        Message.objects.filter(conversation=conversation, internal=False).order_by("-seq").first()
    )
    return {
        "conversation_id": conversation.pk,
        "message_id": last.pk if last is not None else None,
        "upto_seq": last.seq if last is not None else None,
        "shopper_email": conversation.follow_up_email or shopper.email,
    }


def _preview_reply(shopper: Shopper) -> dict[str, Any]:
    data = _preview(shopper)
    reply = (
        Message.objects.filter(
            conversation_id=data["conversation_id"],
            author_kind=Message.Author.AGENT,
            internal=False,
        )
        .order_by("-seq")
        .first()
    )
    data["message_id"] = reply.pk if reply is not None else None
    return data


def register() -> None:
    register_trigger(
        OFFLINE_RECEIPT,
        label="Chat: offline message receipt",
        context=_transcript_context,
        preview=_preview,
        description="Outside business hours, to the address the shopper left with their message. "
        "Context: transcript, conversation, follow_up_email.",
    )
    register_trigger(
        OFFLINE_NOTICE,
        label="Chat: offline message notice to the support inbox",
        context=_notice_context,
        preview=_preview,
        description="To chat settings' support email (Reply-To: the shopper's address). "
        "Context: transcript, shopper_email, console_url.",
    )
    register_trigger(
        FOLLOW_UP,
        label="Chat: agent's reply by email",
        context=_follow_up_context,
        preview=_preview_reply,
        description="An agent's reply in an email follow-up conversation, to its address. "
        "Context: reply, agent_name, conversation.",
    )
    register_trigger(
        TRANSCRIPT,
        label="Chat: transcript by email",
        context=_transcript_context,
        preview=_preview,
        description="Requested by the shopper or an agent, to the address given. "
        "Context: transcript (without private notes), conversation.",
    )
