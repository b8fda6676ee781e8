"""Rate limits for Patron's public entries: one mechanism, counted in Redis.

Each limit is a named *scope* with a rate (``settings.PATRON_RATE_LIMITS``, written
``COUNT/SECONDS`` in the environment, see ``config/settings.py``) and a key that says whose
calls are counted (a write key and a client address, a recipient's address, ...). Calls are
counted in fixed windows: a ``SET NX EX`` (the window's counter, made with its expiry once) and an
``INCRBY`` in a single round trip to the Redis that backs the cache (commands Redis has had since
2.6, so the embedded Redis 6.2 serves them too; ``EXPIRE NX`` needs Redis 7), so every process of every host shares the count. When a call goes over
the limit, ``rate_limit_hit`` raises ``RateLimited`` (HTTP 429, code ``rate_limited``), whose
``retry_after`` is the seconds until the window ends; the API error handler sends it as
``Retry-After`` (RFC 9110 §10.2.3), the chat socket as ``retry_after`` in its error frame.

The chat socket also limits frames per connection with an in-memory ``TokenBucket`` (no Redis
round trip per frame): a connection belongs to one process.

The client address behind a proxy comes from ``client_address``: ``X-Forwarded-For`` counts only
when the connection comes from one of ``PATRON_TRUSTED_PROXIES``, never blindly.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from django.utils.translation import gettext

from core.exceptions import ApplicationError


class RateLimited(ApplicationError):
    """Too many calls: try again after ``retry_after`` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, scope: str = "") -> None:
        super().__init__(message, extra={"retry_after": retry_after, "scope": scope})
        self.retry_after = retry_after
        self.scope = scope


@dataclass(frozen=True)
class Rate:
    """At most ``count`` calls per ``seconds``-second window."""

    count: int
    seconds: int


def rate_for(scope: str) -> Rate | None:
    """The configured rate of ``scope``, or None when that limit is switched off."""
    configured: Mapping[str, tuple[int, int] | None] = settings.PATRON_RATE_LIMITS
    if scope not in configured:
        raise KeyError(f"no rate limit named {scope!r} in PATRON_RATE_LIMITS")
    value = configured[scope]
    return None if value is None else Rate(count=value[0], seconds=value[1])


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


def _redis() -> redis.Redis:
    return _client(settings.REDIS_URL)


def _key_part(part: str) -> str:
    # Keys hold addresses and e-mail addresses: hash them so Redis never stores them in clear
    # and an odd character cannot collide with the separator.
    return hashlib.sha256(part.encode()).hexdigest()[:32]


def _counter(scope: str, rate: Rate, now: float, key: Iterable[str]) -> tuple[str, int]:
    """The Redis key of ``key``'s counter in the window ``now`` falls in, and that window."""
    window = int(now // rate.seconds)
    name = f"{settings.PATRON_RATE_LIMIT_PREFIX}:{scope}:{window}:" + ":".join(
        _key_part(part) for part in key
    )
    return name, window


def _refusal(scope: str, rate: Rate, now: float, window: int) -> RateLimited:
    retry_after = max(1, math.ceil((window + 1) * rate.seconds - now))
    return RateLimited(
        gettext("Too many requests. Try again in %(seconds)d seconds.") % {"seconds": retry_after},
        retry_after=retry_after,
        scope=scope,
    )


def rate_limit_hit(*, scope: str, key: Iterable[str], cost: int = 1) -> None:
    """Count one call (or ``cost`` calls) of ``key`` under ``scope``; raise when over the limit.

    ``key`` is a sequence of strings naming who is counted, e.g. ``(write_key, address)``.
    Raises ``RateLimited`` with the seconds to wait; the call that goes over is counted too,
    so a client that keeps hammering stays limited until the window ends.
    """
    rate = rate_for(scope)
    if rate is None:
        return
    now = time.time()
    name, window = _counter(scope, rate, now, key)
    pipe = _redis().pipeline(transaction=False)
    pipe.set(name, 0, ex=rate.seconds + 1, nx=True)
    pipe.incrby(name, cost)
    _, count = pipe.execute()
    if int(count) > rate.count:
        raise _refusal(scope, rate, now, window)


def rate_limit_peek(*, scope: str, key: Iterable[str]) -> None:
    """Raise ``RateLimited`` when ``key`` has used up ``scope``'s current window; count nothing.

    For limits that count only some outcomes (refused or failed callers): peek before the
    costly part (a password hash), then ``rate_limit_hit`` once the outcome is known.
    """
    rate = rate_for(scope)
    if rate is None:
        return
    now = time.time()
    name, window = _counter(scope, rate, now, key)
    count = _redis().get(name)
    if count is not None and int(count) >= rate.count:
        raise _refusal(scope, rate, now, window)


def rate_limit_reset(*, scope: str, key: Iterable[str]) -> None:
    """Forget the current window's count of ``key`` (for tests and support staff)."""
    rate = rate_for(scope)
    if rate is None:
        return
    name, _ = _counter(scope, rate, time.time(), key)
    _redis().delete(name)


class TokenBucket:
    """A per-connection limit: ``rate`` tokens a second, at most ``burst`` saved up.

    Not shared between processes (a socket lives in one); safe to use from one event loop.
    """

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token. Returns 0 when taken, else the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


# --- Client address ----------------------------------------------------------------------


@lru_cache(maxsize=8)
def _networks(
    entries: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(settings.PATRON_TRUSTED_PROXIES)))


def client_address(*, remote_addr: str | None, forwarded_for: str | None) -> str:
    """The client's IP address as Patron should count it.

    ``remote_addr`` is the peer of the TCP connection (``REMOTE_ADDR``, or the ASGI scope's
    ``client``). Only when that peer is a trusted proxy (``PATRON_TRUSTED_PROXIES``, addresses
    or CIDR networks) is ``X-Forwarded-For`` read, from the right: the first address that is not
    itself a trusted proxy is the client (each proxy appends the peer it saw, so anything
    further left may be forged by the client). Returns ``"unknown"`` when there is no peer.
    """
    address = (remote_addr or "").strip()
    if not address:
        return "unknown"
    if not forwarded_for or not _trusted(address):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not _trusted(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return address  # a forged or garbled entry: fall back to the proxy itself
        address = hop
    return address


def request_client_address(meta: Mapping[str, object]) -> str:
    """``client_address`` of a Django request's ``META``."""
    remote = meta.get("REMOTE_ADDR")
    forwarded = meta.get("HTTP_X_FORWARDED_FOR")
    return client_address(
        remote_addr=remote if isinstance(remote, str) else None,
        forwarded_for=forwarded if isinstance(forwarded, str) else None,
    )


def scope_client_address(scope: Mapping[str, object]) -> str:
    """``client_address`` of an ASGI (WebSocket) connection scope."""
    client = scope.get("client")
    remote = client[0] if isinstance(client, (list, tuple)) and client else None
    hops: list[str] = []
    headers = scope.get("headers")
    if isinstance(headers, (list, tuple)):
        # Several X-Forwarded-For headers count as one list, in order (RFC 9110 §5.3).
        hops.extend(value.decode("latin1") for name, value in headers if name == b"x-forwarded-for")
    return client_address(
        remote_addr=remote if isinstance(remote, str) else None,
        forwarded_for=", ".join(hops) or None,
    )
