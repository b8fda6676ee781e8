"""The chat WebSocket consumers: transport only.

Identity comes from the ``hello`` frame (shoppers) or the session in ``scope`` (agents);
permission is checked before a socket joins a conversation's groups; every write goes through
``chat.services``; handlers are named after the frame types of docs/chat-protocol.md.

Delivery guarantee per socket: every message of a subscribed conversation is sent once, in
``seq`` order. The socket remembers the highest seq it sent per conversation, drops events at or
below it, and when an event skips ahead it reads the skipped messages from PostgreSQL first (a
publisher that lost a race, or an event lost while Redis restarted).

The package (this module re-exports every public name, so ``chat.routing`` keeps
``from chat.consumers import AgentConsumer, ShopperConsumer``):

- ``frames``: close codes, the frame schemas, parsing a frame;
- ``base``: ``ChatSocket``, what both sockets share;
- ``shopper``: ``ShopperConsumer``;
- ``agent``: ``AgentConsumer``.
"""

from chat.consumers.agent import AgentConsumer
from chat.consumers.base import ChatSocket
from chat.consumers.frames import (
    AGENT_FRAMES,
    BOOL,
    CLOSE_FORBIDDEN,
    CLOSE_HELLO,
    CLOSE_PROTOCOL,
    CLOSE_TOO_LARGE,
    CLOSE_UNAVAILABLE,
    INT,
    MAX_FIELD_CHARS,
    MAX_FRAME_BYTES,
    OPT_INT,
    OPT_STR,
    SHOPPER_FRAMES,
    STR,
    ProtocolError,
    Schema,
    parse_frame,
)
from chat.consumers.shopper import ShopperConsumer

__all__ = [
    "AGENT_FRAMES",
    "BOOL",
    "CLOSE_FORBIDDEN",
    "CLOSE_HELLO",
    "CLOSE_PROTOCOL",
    "CLOSE_TOO_LARGE",
    "CLOSE_UNAVAILABLE",
    "INT",
    "MAX_FIELD_CHARS",
    "MAX_FRAME_BYTES",
    "OPT_INT",
    "OPT_STR",
    "SHOPPER_FRAMES",
    "STR",
    "AgentConsumer",
    "ChatSocket",
    "ProtocolError",
    "Schema",
    "ShopperConsumer",
    "parse_frame",
]
