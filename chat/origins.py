"""Which web pages may open chat sockets: the origin policy (docs/chat-protocol.md §2, Origin).

Patron's own pages (hosts in ``ALLOWED_HOSTS``) may open every socket. The shopper socket
``/ws/chat/`` is also opened by the widget embedded in shops on other domains: its handshake is
accepted whatever the Origin, and the consumer checks the Origin against the write key in
``hello`` before anything is created (``services.chat_identify``). Every other WebSocket path,
``/ws/console/`` included, keeps the strict same-host check at the handshake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator

# Paths whose consumer checks the Origin itself, against the write key the client presents.
KEY_CHECKED_PATHS = frozenset({"/ws/chat/"})


def scope_origin(scope: dict[str, Any]) -> str | None:
    """The handshake's Origin header, or None when the client sent none."""
    for name, value in scope.get("headers", []):
        if name == b"origin":
            try:
                return str(value.decode("latin1"))
            except UnicodeDecodeError:
                return None
    return None


def is_own_origin(origin: str | None) -> bool:
    """Whether ``origin`` is one of Patron's own hosts: exactly what Channels'
    ``AllowedHostsOriginValidator`` accepts (``ALLOWED_HOSTS``; "*" accepts anything)."""
    validator = AllowedHostsOriginValidator(None)
    assert isinstance(validator, OriginValidator)
    try:
        parsed = urlparse(origin) if origin is not None else None
        return bool(validator.valid_origin(parsed))
    except ValueError:  # a malformed port or IPv6 literal
        return False


class OriginPolicy:
    """ASGI middleware for the WebSocket router: the same-host Origin check everywhere except
    on ``key_checked_paths``, whose consumers check the Origin against a write key."""

    def __init__(self, application: Any, *, key_checked_paths: Iterable[str] = KEY_CHECKED_PATHS):
        self.application = application
        self.strict = AllowedHostsOriginValidator(application)
        self.key_checked_paths = frozenset(key_checked_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") == "websocket" and scope.get("path") in self.key_checked_paths:
            return await self.application(scope, receive, send)
        return await self.strict(scope, receive, send)
