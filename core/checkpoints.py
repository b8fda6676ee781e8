"""Test checkpoints: named points where a server pauses while a system test acts.

A system test that must act *between* two steps of a server (a message posted after a socket
subscribed but before it read its history) cannot do it with a sleep: whichever side is slower
wins the race. Instead the server calls ``await checkpoint("name")`` between the steps. The call
returns at once unless

1. the server was started with the name in ``PATRON_TEST_CHECKPOINTS`` (accepted only with
   ``PATRON_TESTING=1`` and DEBUG on: production servers never pause), and
2. the test armed the checkpoint (``tests/support/checkpoints.py``): one arm pauses one pass.

A paused pass tells the test it arrived (a Redis list), then waits until the test releases it
(another list), at most ``RELEASE_TIMEOUT`` seconds. Everything goes through the Redis of
``REDIS_URL``, so the test and the server meet whatever process each runs in.
"""

from __future__ import annotations

import logging

import redis.asyncio
from django.conf import settings

logger = logging.getLogger(__name__)

RELEASE_TIMEOUT = 30


def checkpoint_key(name: str, part: str) -> str:
    """The Redis key of a checkpoint's ``armed``, ``reached`` or ``release`` list."""
    return f"patron-checkpoint:{name}:{part}"


async def checkpoint(name: str) -> None:
    """Pause here if a test armed checkpoint ``name`` (see the module docstring)."""
    if name not in settings.PATRON_TEST_CHECKPOINTS:
        return
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    try:
        if await client.lpop(checkpoint_key(name, "armed")) is None:
            return
        await client.rpush(checkpoint_key(name, "reached"), "1")
        released = await client.blpop([checkpoint_key(name, "release")], timeout=RELEASE_TIMEOUT)
        if released is None:
            logger.warning("checkpoint %s was not released within %ss", name, RELEASE_TIMEOUT)
    finally:
        await client.aclose()
