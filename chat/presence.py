"""Which agents have a live console: per-connection heartbeats in Redis.

Each open console socket is a member ``"<user id>:<connection id>"`` of one Redis sorted set,
scored by the time of its last heartbeat (the socket's opening and every ``ping`` the console
sends, every 25 s). A connection is live while its last heartbeat is younger than
``PATRON_AGENT_PRESENCE_SECONDS``; older members are pruned whenever presence is read. A web
process that dies (``SIGKILL``, a crashed host) leaves members nobody refreshes, so its agents
drop out within that window: unlike a connection counter, nothing has to run on the way down.

Redis's db number (``REDIS_URL``) keeps two Patrons on one Redis apart. Presence is read by
``chat.services`` (routing, the console's ``presence`` frames) and ``chat.selectors``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import lru_cache
from typing import cast

import redis
from django.conf import settings

KEY = "patron-chat:presence"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def _redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


def _member(user_id: int, connection_id: str) -> str:
    return f"{user_id}:{connection_id}"


def presence_beat(*, user_id: int, connection_id: str, now: float | None = None) -> bool:
    """Record a heartbeat of one console connection (its opening, or a ``ping``); True when
    the connection was not recorded before (new, or forgotten: aged out, Redis restarted).

    ``now``: Unix seconds (default: the clock). Raises ``redis.RedisError`` when Redis is down.
    """
    member = _member(user_id, connection_id)
    added = _redis().zadd(KEY, {member: time.time() if now is None else now})
    return bool(added)


def presence_end(*, user_id: int, connection_id: str) -> None:
    """Forget a console connection that closed cleanly."""
    _redis().zrem(KEY, _member(user_id, connection_id))


def live_connections(*, now: float | None = None) -> dict[int, int]:
    """Live console connections per agent user id (agents with none are absent).

    Prunes connections whose last heartbeat is older than ``PATRON_AGENT_PRESENCE_SECONDS``.
    """
    cutoff = (time.time() if now is None else now) - settings.PATRON_AGENT_PRESENCE_SECONDS
    pipe = _redis().pipeline(transaction=False)
    pipe.zremrangebyscore(KEY, "-inf", f"({cutoff}")
    pipe.zrange(KEY, 0, -1)
    _, members = pipe.execute()
    counts: dict[int, int] = {}
    for member in members:
        user_part = member.split(b":", 1)[0]
        if user_part.isdigit():
            counts[int(user_part)] = counts.get(int(user_part), 0) + 1
    return counts


def live_agent_ids() -> set[int]:
    """User ids of agents with at least one live console connection."""
    return set(live_connections())


def members() -> list[bytes]:
    """Every recorded connection, live or not yet pruned, as ``b"<user id>:<connection id>"``."""
    return cast(list[bytes], _redis().zrange(KEY, 0, -1))


def presence_clear(user_ids: Iterable[int]) -> None:
    """Forget every connection of these agents (tests, and support staff resetting one)."""
    wanted = {str(user_id).encode() for user_id in user_ids}
    found = [m for m in members() if m.split(b":", 1)[0] in wanted]
    if found:
        _redis().zrem(KEY, *found)
