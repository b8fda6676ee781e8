"""ASGI entry point: HTTP through Django, WebSockets through Channels routing."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chat.origins import OriginPolicy  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Same-host Origin check at the handshake for every socket except the shopper's
        # /ws/chat/, which the widget opens from other shops' domains: its consumer checks the
        # Origin against the write key in hello (chat/origins.py, docs/chat-protocol.md).
        "websocket": OriginPolicy(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
