"""Which web pages may open chat sockets: the origin policy (docs/chat-protocol.md §2, Origin).

One rule in every mode, ``ALLOWED_HOSTS = ["*"]`` (the development default) included:

- the shopper socket ``/ws/chat/`` is also opened by the widget embedded in shops on other
  domains, so its handshake is accepted whatever the Origin; the consumer asks
  ``commerce.selectors.write_key_origin_allowed`` when ``hello`` names the write key, before
  anything is created (``services.chat_identify``): Patron's own pages, or the origins the key
  lists;
- every other WebSocket path, ``/ws/console/`` included, accepts only Patron's own pages
  (``core.cors.origin_is_own``) and refuses the rest at the handshake (HTTP 403).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from channels.security.websocket import WebsocketDenier

from core import cors

# Paths whose consumer checks the Origin itself, against the write key the client presents.
KEY_CHECKED_PATHS = frozenset({"/ws/chat/"})


def _header(scope: dict[str, Any], wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            try:
                return str(value.decode("latin1"))
            except UnicodeDecodeError:
                return None
    return None


def scope_origin(scope: dict[str, Any]) -> str | None:
    """The handshake's Origin header, or None when the client sent none."""
    return _header(scope, b"origin")


def scope_host(scope: dict[str, Any]) -> str | None:
    """The handshake's Host header (the address the page connected to), or None."""
    return _header(scope, b"host")


def is_own_origin(scope: dict[str, Any]) -> bool:
    """Whether the handshake comes from one of Patron's own pages (``core.cors.origin_is_own``)."""
    return cors.origin_is_own(scope_origin(scope), host=scope_host(scope))


class OriginPolicy:
    """ASGI middleware for the WebSocket router: only Patron's own pages everywhere except on
    ``key_checked_paths``, whose consumers check the Origin against a write key."""

    def __init__(self, application: Any, *, key_checked_paths: Iterable[str] = KEY_CHECKED_PATHS):
        self.application = application
        self.key_checked_paths = frozenset(key_checked_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope.get("type") != "websocket" or scope.get("path") in self.key_checked_paths:
            return await self.application(scope, receive, send)
        if is_own_origin(scope):
            return await self.application(scope, receive, send)
        denier = WebsocketDenier()
        return await denier(scope, receive, send)
