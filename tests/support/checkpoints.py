"""The test's side of ``core.checkpoints``: arm a server's checkpoint, see it reached, release it.

The server must run with the checkpoint's name in ``PATRON_TEST_CHECKPOINTS``.
"""

from __future__ import annotations

import redis
import redis.asyncio
from django.conf import settings

from core.checkpoints import checkpoint_key


class Checkpoint:
    def __init__(self, name: str):
        self.name = name

    def arm(self) -> None:
        """The next pass through the checkpoint (in any process of the server) pauses."""
        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            client.delete(*(checkpoint_key(self.name, p) for p in ("armed", "reached", "release")))
            client.rpush(checkpoint_key(self.name, "armed"), "1")
        finally:
            client.close()

    async def reached(self, timeout: float = 10.0) -> None:
        """Wait until a server pass paused at the checkpoint; fail after ``timeout``."""
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        try:
            got = await client.blpop([checkpoint_key(self.name, "reached")], timeout=timeout)
        finally:
            await client.aclose()
        assert got is not None, f"the server never reached checkpoint {self.name}"

    async def release(self) -> None:
        """Let the paused pass go on."""
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        try:
            await client.rpush(checkpoint_key(self.name, "release"), "1")
        finally:
            await client.aclose()

    def disarm(self) -> None:
        """Drop an arm no pass used (a test that failed before the server got there)."""
        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            client.delete(checkpoint_key(self.name, "armed"))
        finally:
            client.close()
