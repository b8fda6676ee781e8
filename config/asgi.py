"""ASGI entry point: HTTP through Django, WebSockets through Channels routing."""

import gc
import os

from django.core.asgi import get_asgi_application

from config import embedded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# A serving process starts the embedded servers it needs (a no-op with both URLs set).
embedded.start_missing()

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (Django must be set up before these import models)

from chat.origins import OriginPolicy  # noqa: E402  (Django must be set up before these import models)
from config.routing import websocket_urlpatterns  # noqa: E402  (Django must be set up before these import models)
from core.websocket_auth import HandshakeAuthMiddleware  # noqa: E402  (Django must be set up before these import models)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Same-host Origin check at the handshake for every socket except the shopper's
        # /ws/chat/, which the widget opens from other shops' domains: its consumer checks the
        # Origin against the write key in hello (chat/origins.py, docs/chat-protocol.md).
        "websocket": OriginPolicy(HandshakeAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

# Everything imported so far lives as long as the process: move it out of the cyclic garbage
# collector's reach, so that its full collections, which pause every socket of the process,
# walk only what requests and frames allocate (bench/chat.py: p99 delivery latency).
gc.collect()
gc.freeze()
