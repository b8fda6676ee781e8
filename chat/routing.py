"""WebSocket routes of chat; gathered by ``config/routing.py``."""

from django.urls import path

from chat.consumers import AgentConsumer, ShopperConsumer

websocket_urlpatterns = [
    path("ws/chat/", ShopperConsumer.as_asgi()),
    path("ws/console/", AgentConsumer.as_asgi()),
]
