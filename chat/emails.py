"""The emails chat sends: transcripts, offline-message notices and agents' follow-up replies.

Sent with Django's email backend from Celery tasks queued on commit. (The engagement app's
outbox did not expose an enqueue service when chat was written; these are transactional
messages the shopper asked for, not campaigns, so consent does not apply.)
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMessage

from chat.models import Conversation, Message
from chat.selectors import agent_name


def transcript_text(conversation: Conversation) -> str:
    lines = [f"Conversation {conversation.pk} — {conversation.created_at:%Y-%m-%d %H:%M} UTC", ""]
    for message in (
        Message.objects.filter(conversation=conversation, internal=False)
        .select_related("author_agent")
        .order_by("seq")
    ):
        if message.author_kind == Message.Author.AGENT:
            who = agent_name(message.author_agent) or "Agent"
        else:
            who = {"shopper": "You", "bot": "Bot", "system": "—"}[message.author_kind]
        lines.append(f"[{message.created_at:%H:%M}] {who}: {message.body}")
    return "\n".join(lines) + "\n"


def transcript_deliver(*, conversation_id: int, email: str) -> None:
    conversation = Conversation.objects.get(pk=conversation_id)
    EmailMessage(
        subject="Your chat transcript",
        body=transcript_text(conversation),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email],
    ).send()


def offline_message_deliver(*, conversation_id: int) -> None:
    from chat.services import chat_settings_get

    conversation = Conversation.objects.select_related("shopper").get(pk=conversation_id)
    support = chat_settings_get(fresh=True).support_email or settings.DEFAULT_FROM_EMAIL
    EmailMessage(
        subject=f"Offline chat message from {conversation.follow_up_email}",
        body=transcript_text(conversation)
        + f"\nReply from the agent console: {settings.PATRON_BASE_URL}/console/\n",
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[support],
        reply_to=[conversation.follow_up_email],
    ).send()
    EmailMessage(
        subject="We got your message",
        body="Thanks for your message. We're offline right now and will reply to this address "
        "as soon as we're back.\n\n" + transcript_text(conversation),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[conversation.follow_up_email],
    ).send()


def follow_up_deliver(*, message_id: int) -> None:
    message = Message.objects.select_related("conversation", "author_agent").get(pk=message_id)
    address = message.conversation.follow_up_email
    if not address:
        return
    EmailMessage(
        subject="Re: your message",
        body=f"{message.body}\n\n— {agent_name(message.author_agent)}\n",
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[address],
    ).send()
