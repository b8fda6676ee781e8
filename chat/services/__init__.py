"""Every state change of live chat: conversations, messages, hand-off, routing, CSAT.

The conversation state machine (docs/chat-protocol.md, "Conversation states"):

    bot ──hand off──► queued ──assign/route──► assigned ──transfer──► assigned
    bot | queued | assigned ──resolve──► resolved ──shopper writes──► bot | queued (settings)

Each public function is keyword-only and atomic, and sends its real-time events through
``core.transactions.group_send_on_commit`` so that no client hears of a change that was rolled
back. Lock order, everywhere: ``AgentStatus`` rows by pk, then the ``Conversation`` row.

The package, by sub-domain (this module re-exports every public name, so callers keep
``from chat import services; services.message_post(...)``):

- ``identity``: chat settings, business hours, shopper tokens, identified customers, origins;
- ``post_rules``: who may post a message where, and why one was refused (the one table);
- ``messages``: storing a message (one, or a batch for the sockets' writer), its follow-ups;
- ``conversations``: the state machine: start, shopper posts, the bot, hand-off, resolve,
  reopen, CSAT, page views;
- ``routing``: picking an agent, the queue, assign and transfer;
- ``agents``: presence (connect, disconnect, heartbeat, status) and an agent's posts;
- ``transcripts``: transcripts on request, offline and follow-up emails;
- ``_common``: Channels groups, real-time events, the conversation lock, online agents.
"""

from chat.services._common import (
    CLIENT_ID_RE,
    CONSOLE_GROUP,
    MAX_BODY,
    Author,
    State,
    agent_group,
    conversation_group,
    conversation_shopper_state,
    queue_position_now,
    staff_group,
)
from chat.services.agents import (
    agent_capacity_set,
    agent_connect,
    agent_disconnect,
    agent_heartbeat,
    agent_message_post,
    agent_presence_set,
)
from chat.services.conversations import (
    HandOff,
    ShopperPost,
    bot_respond,
    conversation_hand_off,
    conversation_page_view,
    conversation_reopen,
    conversation_resolve,
    conversation_start,
    csat_record,
    offline_message_leave,
    shopper_hand_off_request,
    shopper_message_post,
)
from chat.services.identity import (
    SETTINGS_TTL,
    TOKEN_MAX_AGE,
    TOKEN_SALT,
    ChatIdentity,
    business_hours_open,
    chat_identify,
    chat_settings_get,
    chat_settings_invalidate,
    conversation_for_shopper,
    customer_hash,
    shopper_token_issue,
    shopper_token_verify,
)
from chat.services.language import (
    conversation_language,
    conversation_language_detected,
    language_fallback,
    language_normalise,
    translate,
)
from chat.services.messages import (
    Outcome,
    StoredRow,
    conversations_wake_on_reply,
    message_event,
    message_post,
    message_post_many,
    message_post_one,
    messages_store,
)
from chat.services.organising import (
    conversation_label_add,
    conversation_label_remove,
    conversation_snooze,
    conversation_unsnooze,
    conversations_wake_due,
    label_clean,
)
from chat.services.post_rules import (
    STATES_FOR,
    PostedMessage,
    PostRequest,
    bot_answers,
    clean_body,
    clean_client_id,
    may_post,
    post_rejected,
    post_request,
    reply_assigns,
)
from chat.services.routing import (
    conversation_assign,
    conversation_route,
    conversation_transfer,
    queue_drain,
)
from chat.services.transcripts import (
    follow_up_email_fire,
    offline_emails_fire,
    transcript_agent_rate_limit,
    transcript_send,
)

__all__ = [
    "CLIENT_ID_RE",
    "CONSOLE_GROUP",
    "MAX_BODY",
    "SETTINGS_TTL",
    "STATES_FOR",
    "TOKEN_MAX_AGE",
    "TOKEN_SALT",
    "Author",
    "ChatIdentity",
    "HandOff",
    "Outcome",
    "PostRequest",
    "PostedMessage",
    "ShopperPost",
    "State",
    "StoredRow",
    "agent_capacity_set",
    "agent_connect",
    "agent_disconnect",
    "agent_group",
    "agent_heartbeat",
    "agent_message_post",
    "agent_presence_set",
    "bot_answers",
    "bot_respond",
    "business_hours_open",
    "chat_identify",
    "chat_settings_get",
    "chat_settings_invalidate",
    "clean_body",
    "clean_client_id",
    "conversation_assign",
    "conversation_for_shopper",
    "conversation_group",
    "conversation_hand_off",
    "conversation_label_add",
    "conversation_label_remove",
    "conversation_language",
    "conversation_language_detected",
    "conversation_page_view",
    "conversation_reopen",
    "conversation_resolve",
    "conversation_route",
    "conversation_shopper_state",
    "conversation_snooze",
    "conversation_start",
    "conversation_transfer",
    "conversation_unsnooze",
    "conversations_wake_due",
    "conversations_wake_on_reply",
    "csat_record",
    "customer_hash",
    "follow_up_email_fire",
    "label_clean",
    "language_fallback",
    "language_normalise",
    "may_post",
    "message_event",
    "message_post",
    "message_post_many",
    "message_post_one",
    "messages_store",
    "offline_emails_fire",
    "offline_message_leave",
    "post_rejected",
    "post_request",
    "queue_drain",
    "queue_position_now",
    "reply_assigns",
    "shopper_hand_off_request",
    "shopper_message_post",
    "shopper_token_issue",
    "shopper_token_verify",
    "staff_group",
    "transcript_agent_rate_limit",
    "transcript_send",
    "translate",
]
