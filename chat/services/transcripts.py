"""Transcripts and chat emails: transcripts on request, offline and follow-up emails."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import Conversation, Message
from chat.services.identity import chat_settings_get
from chat.services.language import conversation_language
from commerce.models import Shopper
from core.exceptions import NotFound, PermissionDenied, ValidationError
from core.ratelimit import rate_limit_hit


def transcript_agent_rate_limit(*, agent_id: int, email: str | None) -> None:
    """Count a transcript an agent asks to send (console API or socket) before sending it.

    Per agent (``PATRON_RATE_LIMITS["transcript"]``) and, for a typed address, per recipient
    whoever sends (``["email_recipient"]``, shared with the shoppers' requests). Raises
    ``RateLimited`` (429, ``retry_after``) over either; the shopper's own address needs no
    recipient count: ``transcript_send`` mails one transcript there once an hour.
    """
    rate_limit_hit(scope="transcript", key=(str(agent_id),))
    typed = (email or "").strip().lower()
    if typed:
        rate_limit_hit(scope="email_recipient", key=(typed,))


def transcript_send(
    *, conversation_id: int, email: str | None, shopper: Shopper | None = None
) -> str:
    """Queue the conversation's transcript (without notes) to ``email`` or the shopper's.

    Sent once per request (``emails.transcript_occurrence_key``: a repeated request for the
    same transcript to the same address within the hour sends nothing more). Returns the
    address.
    """
    from django.core.validators import validate_email

    from chat import emails

    conversation = Conversation.objects.select_related("shopper").filter(pk=conversation_id).first()
    if conversation is None:
        raise NotFound("No such conversation.")
    if shopper is not None and conversation.shopper_id != shopper.pk:
        raise PermissionDenied("This conversation is not yours.", code="forbidden")
    address = (email or "").strip() or conversation.shopper.email or conversation.follow_up_email
    if not address:
        raise ValidationError(gettext("email is required: we don't know the shopper's address"))
    try:
        validate_email(address)
    except Exception:
        raise ValidationError(gettext("email is not a valid address")) from None
    # The transcript as of now (what the shopper sees); notes do not make it a new one.
    upto_seq = (
        Message.objects.filter(conversation_id=conversation_id, internal=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    ) or 0
    _email_fire(
        trigger=emails.TRANSCRIPT,
        shopper=conversation.shopper,
        occurrence_key=emails.transcript_occurrence_key(
            conversation_id=conversation_id, upto_seq=upto_seq, address=address, at=timezone.now()
        ),
        data={"conversation_id": conversation_id, "upto_seq": upto_seq},
        email_to=address,
    )
    return address


# --- Emails ---------------------------------------------------------------------------------
# Chat's emails are engagement campaigns (``chat/emails.py``): firing a trigger writes the
# outbox rows in the caller's transaction, keyed so that a repeated decision sends nothing
# more; engagement delivers them, retries, re-queues what a dead worker left, and skips
# suppressed addresses. The merchant edits their templates as campaigns in the admin.


def _email_fire(
    *,
    trigger: str,
    shopper: Shopper,
    occurrence_key: str,
    data: dict[str, Any],
    email_to: str,
    email_reply_to: str = "",
) -> int:
    from chat import emails
    from engagement import services as engagement_services

    conversation_id = data.get("conversation_id")
    if trigger != emails.OFFLINE_NOTICE and isinstance(conversation_id, int):
        # The shopper's emails speak the conversation's language (the support inbox's notice
        # stays in the store's default).
        data = {**data, "language": conversation_language(conversation_id)}
    runs = engagement_services.trigger_fire(
        trigger=trigger,
        shopper=shopper,
        occurrence_key=occurrence_key,
        data=data,
        email_to=email_to,
        email_reply_to=email_reply_to,
    )
    return len(runs)


def offline_emails_fire(
    *, shopper: Shopper, conversation_id: int, message_id: int, seq: int, email: str
) -> int:
    """The receipt to ``email`` and the notice to the support inbox for the shopper's offline
    message ``message_id``; once per message however often it is called. Call in the
    transaction that stored the message."""
    from email.utils import parseaddr

    from chat import emails

    support = (
        chat_settings_get(fresh=True).support_email or parseaddr(settings.DEFAULT_FROM_EMAIL)[1]
    )
    data = {"conversation_id": conversation_id, "message_id": message_id, "upto_seq": seq}
    key = f"chat-message:{message_id}"
    return _email_fire(
        trigger=emails.OFFLINE_RECEIPT,
        shopper=shopper,
        occurrence_key=key,
        data=data,
        email_to=email,
    ) + _email_fire(
        trigger=emails.OFFLINE_NOTICE,
        shopper=shopper,
        occurrence_key=key,
        data={**data, "shopper_email": email},
        email_to=support,
        email_reply_to=email,
    )


def follow_up_email_fire(*, conversation_id: int, message_id: int) -> int:
    """Email the agent's reply ``message_id`` to the conversation's follow-up address; once per
    message however often it is called."""
    from chat import emails

    conversation = Conversation.objects.select_related("shopper").filter(pk=conversation_id).first()
    if conversation is None or not conversation.follow_up_email:
        return 0
    return _email_fire(
        trigger=emails.FOLLOW_UP,
        shopper=conversation.shopper,
        occurrence_key=f"chat-message:{message_id}",
        data={"conversation_id": conversation_id, "message_id": message_id},
        email_to=conversation.follow_up_email,
    )
