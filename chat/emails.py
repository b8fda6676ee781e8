"""The emails chat sends: transcripts, offline-message notices and agents' follow-up replies.

Each is a ``ChatEmail`` row, sent by ``services.chat_email_send`` from a Celery task queued on
commit; this module only turns a row into an ``EmailMessage``. (The engagement app's outbox did
not expose an enqueue service when chat was written; these are transactional messages the
shopper asked for, not campaigns, so consent does not apply.)
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import EmailMessage

from chat.models import ChatEmail, Conversation, Message
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


def email_message(email: ChatEmail) -> EmailMessage:
    """The message for ``email`` (with its conversation and message selected)."""
    conversation = email.conversation
    kind = ChatEmail.Kind
    if email.kind == kind.TRANSCRIPT:
        subject, body, reply_to = "Your chat transcript", transcript_text(conversation), None
    elif email.kind == kind.OFFLINE_NOTICE:
        subject = f"Offline chat message from {conversation.follow_up_email}"
        body = (
            transcript_text(conversation)
            + f"\nReply from the agent console: {settings.PATRON_BASE_URL}/console/\n"
        )
        reply_to = [conversation.follow_up_email]
    elif email.kind == kind.OFFLINE_RECEIPT:
        subject = "We got your message"
        body = (
            "Thanks for your message. We're offline right now and will reply to this address "
            "as soon as we're back.\n\n" + transcript_text(conversation)
        )
        reply_to = None
    else:
        message = email.message
        assert message is not None
        subject = "Re: your message"
        body = f"{message.body}\n\n— {agent_name(message.author_agent)}\n"
        reply_to = None
    return EmailMessage(
        subject=subject,
        body=body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email.to],
        reply_to=reply_to,
        headers={"X-Patron-Chat-Email": str(email.pk)},
    )
