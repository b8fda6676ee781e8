"""WebSocket routes of every app, gathered for the ASGI router."""

from typing import Any

websocket_urlpatterns: list[Any] = []

try:
    from chat.routing import websocket_urlpatterns as chat_patterns
except ImportError:  # chat routes land with the chat app
    chat_patterns = []
websocket_urlpatterns += chat_patterns
