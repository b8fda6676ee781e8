"""Who may post a chat message, where: the rules of the message path, in one place.

Every path that stores a message builds its ``PostRequest`` with ``post_request`` and learns why
one was refused from ``post_rejected``: the one-message path (``messages.message_post``, which
the services, the bot, system messages and the admin's actions use) and the group commit of the
sockets (``chat.writer`` → ``messages.message_post_many``). Both store through the SQL function
``chat_messages_post`` (chat/sql/), which checks the conditions a request carries and decides
nothing of its own: the allowed states, the owner, the holder and the channel all come from here.

The table (``STATES_FOR`` and the checks below it):

- shopper: while the conversation is ``bot``, ``queued`` or ``assigned``, and only in their own
  (``shopper_id``); a resolved one is reopened first (``shopper_message_post``);
- bot: while the conversation is the bot's (``bot``);
- agent: ``bot``, ``queued`` or ``assigned``; a public reply where nobody holds the conversation
  assigns it to them first (``reply_assigns``, ``agent_message_post``); only agents write notes;
- system: in every state.

A ``client_id`` already stored in the conversation is a resend, whatever the state: nothing is
stored and the stored message comes back (``created`` False). Ownership is checked before that,
so nobody reads another shopper's message by guessing its client id, and the stored message must
be the same kind of author's (a shopper never gets an agent's note back; ``Conflict``).

Through the sockets' writer (``writer=True``), which stores and publishes but assigns nothing
and emails nothing, an agent's public reply is taken only in a live chat (channel ``chat``)
assigned to that agent; anything else is refused with ``Conflict`` and the socket posts it
through ``agent_message_post``, which assigns it or emails it in the reply's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext

from chat import selectors
from chat.models import Conversation, Message
from chat.services._common import CLIENT_ID_RE, MAX_BODY, Author, State
from core.exceptions import Conflict, NotFound, PermissionDenied, ValidationError

# The states in which each kind of author may post (docs/chat-protocol.md, "Conversation
# states"). The SQL function receives these per message: it holds no copy.
STATES_FOR: Mapping[str, tuple[str, ...]] = {
    Author.SHOPPER: (State.BOT, State.QUEUED, State.ASSIGNED),
    Author.BOT: (State.BOT,),
    Author.AGENT: (State.BOT, State.QUEUED, State.ASSIGNED),
    Author.SYSTEM: (State.BOT, State.QUEUED, State.ASSIGNED, State.RESOLVED),
}


def may_post(author_kind: str, state: str) -> bool:
    """Whether ``author_kind`` (``Message.Author``) may post while the conversation is ``state``."""
    return state in STATES_FOR[Author(author_kind)]


def reply_assigns(*, state: str, holder_id: int | None) -> bool:
    """Whether an agent's public reply first assigns the conversation to them: where agents may
    post and nobody holds it (the bot's, the queue's), so the bot never answers over a person."""
    return may_post(Author.AGENT, state) and (state != State.ASSIGNED or holder_id is None)


# --- Cleaning --------------------------------------------------------------------------------


def clean_body(body: Any) -> str:
    """The message text, stripped; ``ValidationError`` unless 1-``MAX_BODY`` characters."""
    if not isinstance(body, str):
        raise ValidationError("body must be text")
    text = body.strip()
    if not text:
        raise ValidationError(gettext("body must not be empty"))
    if len(text) > MAX_BODY:
        raise ValidationError(
            gettext("body must be at most %(max)s characters") % {"max": MAX_BODY}
        )
    return text


def clean_client_id(client_id: Any) -> str | None:
    """The sender's idempotency key (``CLIENT_ID_RE``) or None; ``ValidationError`` if bad."""
    if client_id is None:
        return None
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise ValidationError("client_id must be 1-64 letters, digits, '-' or '_'")
    return client_id


# --- Requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostRequest:
    """One message to store, checked (``post_request``) but not yet stored."""

    conversation_id: int
    author_kind: str
    body: str
    agent: Any = None
    client_id: str | None = None
    internal: bool = False
    intent: str = ""
    # The conditions the SQL function checks under the conversation's row lock; a message that
    # fails one is not stored and ``post_rejected`` says why. With ``shopper_id``: the
    # conversation is that shopper's. ``states``: one of these. With ``holder_id``: assigned to
    # that agent. With ``channel``: on that channel (``Conversation.Channel``).
    shopper_id: int | None = None
    states: tuple[str, ...] = ()
    holder_id: int | None = None
    channel: str | None = None


def post_request(
    *,
    conversation_id: int,
    author_kind: str,
    body: Any,
    agent: Any = None,
    client_id: Any = None,
    internal: bool = False,
    intent: str = "",
    shopper_id: int | None = None,
    writer: bool = False,
) -> PostRequest:
    """Check one message's fields and make its ``PostRequest``, with the conditions of this
    module's table.

    ``author_kind``: a ``Message.Author``; ``agent``: the writing user (agents); ``shopper_id``:
    the writing shopper, whose conversation it must be (None: the caller has checked it);
    ``writer``: the request goes to ``chat.writer`` (see the module docstring). Raises
    ``ValidationError`` for a bad body or client id, or a note by anyone but an agent.
    """
    body = clean_body(body)
    client_id = clean_client_id(client_id)
    kind = Author(author_kind)
    if internal and kind != Author.AGENT:
        raise ValidationError("only agents write notes")
    states, holder_id, channel = STATES_FOR[kind], None, None
    if writer and kind == Author.AGENT and not internal:
        states = (State.ASSIGNED,)
        holder_id = agent.pk
        channel = Conversation.Channel.CHAT
    return PostRequest(
        conversation_id=conversation_id,
        author_kind=str(kind),
        body=body,
        agent=agent,
        client_id=client_id,
        internal=internal,
        intent=intent,
        shopper_id=shopper_id,
        states=tuple(str(s) for s in states),
        holder_id=holder_id,
        channel=None if channel is None else str(channel),
    )


@dataclass(frozen=True)
class PostedMessage:
    """A message as a post left it: ``message`` is docs/chat-protocol.md's message object;
    ``created`` is False for a resend; ``state`` is the conversation's."""

    message: dict[str, Any]
    created: bool
    state: str


def bot_answers(posted: PostedMessage) -> bool:
    """Whether the bot answers a shopper's message: one just stored (not a resend) while the
    conversation is in a state the bot may post in."""
    return posted.created and may_post(Author.BOT, posted.state)


def post_rejected(request: PostRequest) -> PostedMessage:
    """Why ``request`` was not stored, read from the conversation as it is now.

    Returns the message already stored under the request's ``client_id`` (``created`` False)
    when the same kind of author wrote it. Raises ``NotFound`` (no such conversation),
    ``PermissionDenied`` (another shopper's) or ``Conflict`` (the client id is another kind of
    author's message, a state the author may not post in, held by another agent, or on another
    channel; ``extra`` holds the ``state``).
    """
    cid = request.conversation_id
    current = (
        Conversation.objects.filter(pk=cid)
        .values_list("shopper_id", "state", "assigned_agent_id", "channel")
        .first()
    )
    if current is None:
        raise NotFound("No such conversation.")
    owner, state, holder, channel = current
    if request.shopper_id is not None and owner != request.shopper_id:
        raise PermissionDenied("This conversation is not yours.", code="forbidden")
    existing = _message_by_client_id(cid, request.client_id)
    if existing is not None and existing.author_kind != request.author_kind:
        # Someone else's message (an agent's note, to a shopper): not this author's resend.
        raise Conflict(
            "This client_id belongs to another message.", code="conflict", extra={"state": state}
        )
    if existing is not None:
        return PostedMessage(message=selectors.message_dict(existing), created=False, state=state)
    if request.holder_id is not None and holder != request.holder_id and state in request.states:
        reason = "This conversation is held by another agent."
    elif request.channel is not None and channel != request.channel and state in request.states:
        reason = f"This conversation is on the {channel} channel."
    elif state == State.RESOLVED:
        reason = "This conversation is resolved."
    else:
        reason = (
            f"No {request.author_kind} message can be posted while the conversation is {state}."
        )
    raise Conflict(reason, code="conflict", extra={"state": state})


def _message_by_client_id(conversation_id: int, client_id: str | None) -> Message | None:
    if client_id is None:
        return None
    return (
        Message.objects.select_related("author_agent")
        .filter(conversation_id=conversation_id, client_id=client_id)
        .first()
    )
