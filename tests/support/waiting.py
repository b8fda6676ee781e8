"""Waiting for what real processes (a Celery worker, a server) do, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.utils import timezone


def wait_until(
    condition: Callable[[], bool], *, what: str = "", timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Return once ``condition()`` is true; poll every ``interval`` seconds.

    Raises ``TimeoutError`` naming ``what`` (or the condition) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what or condition}")


def outbox_settled() -> bool:
    """No outbox message is due and still scheduled or being sent."""
    from engagement.models import Message

    return not Message.objects.filter(
        state__in=[Message.State.SCHEDULED, Message.State.SENDING], due_at__lte=timezone.now()
    ).exists()
