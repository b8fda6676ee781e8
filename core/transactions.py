"""Work that must only happen once the surrounding transaction has committed.

Queueing a Celery task or sending a channel-layer event before commit lets a worker or a
client read state that may yet be rolled back. Tasks are queued with Celery's own
``task.delay_on_commit(...)`` / ``task.apply_async_on_commit(...)`` (Celery's Django task class,
which the Django fix-up makes the default); channel-layer events go through here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction


def group_send_on_commit(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to a channel-layer group after commit (from synchronous code)."""

    def send() -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(group, message)

    transaction.on_commit(send)


def on_commit(func: Callable[[], Any]) -> None:
    transaction.on_commit(func)
