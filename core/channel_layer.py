"""A Channels layer on Redis pub/sub that is pushed to, never polls.

channels-redis's ``RedisPubSubChannelLayer`` reads its subscription with ``get_message(timeout=
0.1)`` in a loop, through redis-py's locks and retry wrappers: under load that loop, not Redis,
was the chat's bottleneck. This layer keeps, per process (per event loop that has consumers),

- one subscriber connection whose bytes go straight from the socket into a ``hiredis`` parser,
  and from there, in the same callback, into the receiving consumers' ``asyncio.Queue``\\s: no
  polling task, no timeouts, no extra task switch per message;
- one pipelined publisher connection (replies resolve futures in order);
- one Redis channel per *group* (subscribed while at least one local consumer is a member) and
  one per *process* for every consumer's specific channel (``new_channel`` names carry the
  process's inbox id, so 500 sockets cost one subscription, not 500).

Synchronous code (services in worker threads, Celery tasks) publishes through a thread-local
blocking client: ``group_send_sync`` publishes in the calling thread instead of hopping to the
event loop and back as ``async_to_sync(layer.group_send)`` does.

Pub/sub keeps nothing for absent subscribers: a message published while this process is
disconnected from Redis is not delivered. The subscriber reconnects with backoff and
re-subscribes everything; while it is down, ``group_add`` and ``new_channel`` raise
``redis.exceptions.ConnectionError`` and publishing raises too, so callers (the chat consumers)
close their sockets with 1011 and clients resume from their last ``seq`` (stored in PostgreSQL).

Settings (``CHANNEL_LAYERS["default"]["CONFIG"]``): ``address`` (``redis://``, ``rediss://``
(TLS) or ``unix://`` URL, with the password (and ACL user name) in it as redis-py reads them:
``rediss://user:password@host:6380/0``; the db number is irrelevant to pub/sub, so isolate
deployments by ``prefix``), the TLS options redis-py takes, in the URL's query or in CONFIG:
``ssl_ca_certs`` (CA bundle file; default: the system's), ``ssl_cert_reqs`` (``required``, the
default, ``optional`` or ``none``), ``ssl_check_hostname`` (default: on when certificates are
required), ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate), ``prefix``,
``capacity`` (per-channel queue bound; overflow is dropped with a warning),
``socket_connect_timeout``, ``socket_timeout`` (blocking publishes), ``health_check_interval``
(seconds between subscriber PINGs; a PING unanswered for ``socket_timeout`` drops the
connection so it is re-made).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import threading
import uuid
from collections import deque
from typing import Any, cast

import hiredis
import msgpack
import redis
from channels.layers import BaseChannelLayer, get_channel_layer
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.retry import Retry

logger = logging.getLogger(__name__)

PUSH_MESSAGE = b"message"
PUSH_SUBSCRIBE = b"subscribe"
PUSH_PONG = b"pong"
RESUBSCRIBE_CHUNK = 500
# Marks a group message that one member channel must not get (``group_send_many``): msgpack
# output never starts with "!", and channel names never contain a newline.
EXCLUDING = b"!"


def _pack(*args: bytes) -> bytes:
    """One RESP command."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _serialize(message: Any) -> bytes:
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def _deserialize(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


class _Connection(asyncio.Protocol):
    """One Redis connection. In command mode, each reply resolves the oldest waiting future; in
    push mode (``on_push`` set, after SUBSCRIBE) every reply goes to ``on_push``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Any = None):
        self.loop = loop
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        # One entry per command sent, in order: its reply's future, or None for a pipelined
        # command whose reply only the last command of its pipeline reports.
        self.waiters: deque[asyncio.Future[Any] | None] = deque()
        self.on_push: Any = None
        self.on_lost = on_lost
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if self.on_push is not None:
                self.on_push(reply)
            elif self.waiters:
                waiter = self.waiters.popleft()
                if waiter is not None and not waiter.done():
                    if isinstance(reply, ResponseError):
                        waiter.set_exception(reply)
                    else:
                        waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiters:
            waiter = self.waiters.popleft()
            if waiter is not None and not waiter.done():
                waiter.set_exception(RedisConnectionError("Connection to Redis lost."))
        if self.on_lost is not None:
            self.on_lost(self)

    def write(self, *commands: tuple[bytes, ...]) -> None:
        """Send ``commands`` (each a tuple of arguments) in one write, expecting no replies."""
        if self.lost or self.transport is None or self.transport.is_closing():
            raise RedisConnectionError("Not connected to Redis.")
        self.transport.write(b"".join(_pack(*command) for command in commands))

    def command(self, *args: bytes) -> asyncio.Future[Any]:
        return self.pipeline([args])

    def pipeline(self, commands: list[tuple[bytes, ...]]) -> asyncio.Future[Any]:
        """Send ``commands`` in one write; the future has the last one's reply (Redis answers in
        order, so it also means every earlier command was answered)."""
        self.write(*commands)
        self.waiters.extend([None] * (len(commands) - 1))
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self.transport.abort()


SSL_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_check_hostname", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS context for a ``rediss://`` address, from redis-py's option names (see the module
    docstring); raises ValueError for an unknown ``ssl_cert_reqs``."""
    reqs_name = str(options.get("ssl_cert_reqs") or "required").lower()
    if reqs_name not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}, not {reqs_name!r}")
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    check_hostname = options.get("ssl_check_hostname")
    if check_hostname is None:
        check_hostname = reqs_name == "required"
    if isinstance(check_hostname, str):
        check_hostname = check_hostname.lower() in {"1", "true", "yes", "on"}
    context.check_hostname = bool(check_hostname)  # before verify_mode: CERT_NONE needs it off
    context.verify_mode = _CERT_REQS[reqs_name]
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    return context


async def _connect(options: dict[str, Any], *, timeout: float, on_lost: Any = None) -> _Connection:
    """A connected (TLS when ``options["ssl_context"]``), authenticated ``_Connection``."""
    loop = asyncio.get_running_loop()
    connection = _Connection(loop, on_lost)
    try:
        if "path" in options:
            coro = loop.create_unix_connection(lambda: connection, options["path"])
        else:
            context = options.get("ssl_context")
            coro = loop.create_connection(
                lambda: connection,
                options.get("host", "localhost"),
                options.get("port", 6379),
                ssl=context,
                ssl_handshake_timeout=timeout if context is not None else None,
            )
        await asyncio.wait_for(coro, timeout)
    except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
        raise RedisConnectionError(f"Cannot connect to Redis: {exc!r}") from exc
    password = options.get("password")
    if password:
        username = options.get("username")
        auth = (username.encode(), password.encode()) if username else (password.encode(),)
        try:
            await asyncio.wait_for(connection.command(b"AUTH", *auth), timeout)
        except BaseException:
            connection.close()
            raise
    return connection


class _LoopState:
    """Everything bound to one event loop: connections, local channels and group membership."""

    def __init__(self, layer: PushPubSubChannelLayer, loop: asyncio.AbstractEventLoop):
        self.layer = layer
        self.loop = loop
        self.inbox_id = uuid.uuid4().hex[:16]
        self.inbox = layer.redis_name("p", self.inbox_id)
        self.counter = itertools.count(1)
        self.queues: dict[str, asyncio.Queue[bytes]] = {}
        self.members: dict[bytes, set[str]] = {}  # group's Redis name -> local channels
        self.memberships: dict[str, set[bytes]] = {}  # local channel -> groups' Redis names
        self.wanted: set[bytes] = set()  # Redis channels this loop must be subscribed to
        self.pending: dict[bytes, deque[asyncio.Future[None]]] = {}  # SUBSCRIBEs unanswered
        self.subscriber: _Connection | None = None
        self.publisher: _Connection | None = None
        self.publisher_lock = asyncio.Lock()
        self.connect_lock = asyncio.Lock()
        self.connecting: asyncio.Task[None] | None = None
        self.health: asyncio.Task[None] | None = None
        self.pong: asyncio.Future[None] | None = None
        self.plain_prefix = layer.redis_name("c", "")
        self.down = False  # lost the subscriber connection and not yet back
        self.closed = False
        self.dropped = 0

    # --- the subscriber ---------------------------------------------------------------------

    def on_push(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == PUSH_MESSAGE:
            name, data = reply[1], reply[2]
            if name == self.inbox:
                target, payload = _deserialize(data)
                self.deliver(target, _serialize(payload))
            else:
                skip = None
                if data[:1] == EXCLUDING:  # b"!" channel b"\n" payload: not to that channel
                    cut = data.index(b"\n")
                    skip, data = data[1:cut].decode(), data[cut + 1 :]
                for channel in self.members.get(name, ()):
                    if channel != skip:
                        self.deliver(channel, data)
                if name.startswith(self.plain_prefix):
                    self.deliver(self.layer.plain_channel(name), data)
        elif kind == PUSH_SUBSCRIBE:
            waiters = self.pending.get(reply[1])
            if waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                if not waiters:
                    del self.pending[reply[1]]
        elif kind == PUSH_PONG and self.pong is not None and not self.pong.done():
            self.pong.set_result(None)

    def deliver(self, channel: str, data: bytes) -> None:
        queue = self.queues.get(channel)
        if queue is None:
            return
        try:
            queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # the 1st, 2nd, 4th, 8th... drop
                logger.warning(
                    "channel layer: %s is full (%d messages); message dropped (%d so far)",
                    channel,
                    queue.maxsize,
                    self.dropped,
                )

    def on_lost(self, connection: _Connection) -> None:
        if connection is not self.subscriber:
            return
        self.subscriber = None
        self.down = True
        failure = RedisConnectionError("Connection to Redis lost.")
        for waiters in self.pending.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
                    waiter.exception()  # retrieved: nobody may be awaiting it any more
        self.pending.clear()
        if not self.closed and self.wanted:
            logger.warning("channel layer: lost the Redis subscriber connection; reconnecting")
            self.start_connecting()

    def start_connecting(self) -> None:
        if self.connecting is None or self.connecting.done():
            self.connecting = self.loop.create_task(self.reconnect())

    async def reconnect(self) -> None:
        """Retry with backoff until the subscriber is back (runs only while ``down``)."""
        delay = 0.05
        while not self.closed and self.down:
            try:
                await self.attach()
            except (RedisConnectionError, ResponseError) as exc:
                logger.info("channel layer: Redis not reachable (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                logger.warning("channel layer: reconnected to Redis and re-subscribed")

    async def attach(self) -> None:
        """Connect the subscriber and subscribe to everything wanted (and the inbox)."""
        connection = await _connect(
            self.layer.options, timeout=self.layer.connect_timeout, on_lost=self.on_lost
        )
        if self.closed:
            connection.close()
            return
        connection.on_push = self.on_push
        self.subscriber = connection
        self.down = False
        self.wanted.add(self.inbox)
        names = sorted(self.wanted)
        for start in range(0, len(names), RESUBSCRIBE_CHUNK):
            chunk = names[start : start + RESUBSCRIBE_CHUNK]
            connection.write((b"SUBSCRIBE", *chunk))
            for name in chunk:
                self.pending.setdefault(name, deque()).append(self.loop.create_future())
        if self.health is None or self.health.done():
            self.health = self.loop.create_task(self.check_health())

    async def check_health(self) -> None:
        interval = self.layer.health_check_interval
        while not self.closed and interval > 0:
            await asyncio.sleep(interval)
            connection = self.subscriber
            if connection is None:
                continue
            self.pong = self.loop.create_future()
            try:
                connection.write((b"PING",))
                await asyncio.wait_for(asyncio.shield(self.pong), self.layer.socket_timeout)
            except (TimeoutError, RedisConnectionError):
                logger.warning("channel layer: Redis did not answer PING; reconnecting")
                connection.close()

    async def ready(self) -> _Connection:
        """The subscriber connection, connecting first if needed; raises
        ``redis.exceptions.ConnectionError`` at once while Redis is down."""
        if self.subscriber is None:
            async with self.connect_lock:
                if self.subscriber is None and not self.down:
                    try:
                        await self.attach()
                    except RedisConnectionError:
                        self.down = True
                        self.start_connecting()
                        raise
        if self.subscriber is None:
            raise RedisConnectionError("Redis is unavailable (reconnecting).")
        await self.confirmed(self.inbox)
        return self.subscriber

    async def confirmed(self, name: bytes) -> None:
        waiters = self.pending.get(name)
        if waiters:
            await asyncio.shield(waiters[-1])

    async def subscribe(self, name: bytes) -> None:
        connection = await self.ready()
        if name not in self.wanted:
            connection.write((b"SUBSCRIBE", name))
            self.wanted.add(name)
            self.pending.setdefault(name, deque()).append(self.loop.create_future())
        await self.confirmed(name)

    def unsubscribe(self, name: bytes) -> None:
        if name not in self.wanted:
            return
        self.wanted.discard(name)
        if self.subscriber is not None:
            with contextlib.suppress(RedisConnectionError):
                self.subscriber.write((b"UNSUBSCRIBE", name))

    # --- local channels and groups ----------------------------------------------------------

    def new_channel(self, prefix: str) -> str:
        channel = f"{prefix}{self.inbox_id}!{next(self.counter)}"
        self.queues[channel] = asyncio.Queue(self.layer.capacity)
        return channel

    def forget(self, channel: str) -> None:
        """Drop a local channel and its memberships (its consumer has exited)."""
        self.queues.pop(channel, None)
        for name in self.memberships.pop(channel, set()):
            self.leave(name, channel)
        plain = self.layer.redis_name("c", channel)
        if "!" not in channel and plain in self.wanted:
            self.unsubscribe(plain)

    def join(self, name: bytes, channel: str) -> bool:
        """Record membership; True when this is the group's first local member."""
        members = self.members.setdefault(name, set())
        first = not members
        members.add(channel)
        self.memberships.setdefault(channel, set()).add(name)
        return first

    def leave(self, name: bytes, channel: str) -> None:
        members = self.members.get(name)
        if members is None or channel not in members:
            return
        members.discard(channel)
        groups = self.memberships.get(channel)
        if groups is not None:
            groups.discard(name)
        if not members:
            del self.members[name]
            self.unsubscribe(name)

    # --- publishing -------------------------------------------------------------------------

    async def connected_publisher(self) -> _Connection:
        connection = self.publisher
        if connection is None or connection.lost:
            async with self.publisher_lock:
                connection = self.publisher
                if connection is None or connection.lost:
                    connection = await _connect(
                        self.layer.options, timeout=self.layer.connect_timeout
                    )
                    self.publisher = connection
        return connection

    async def publish(self, name: bytes, data: bytes) -> None:
        await self.publish_many([(name, data)])

    async def publish_many(self, items: list[tuple[bytes, bytes]]) -> None:
        connection = await self.connected_publisher()
        await connection.pipeline([(b"PUBLISH", name, data) for name, data in items])

    def close(self) -> None:
        self.closed = True
        for task in (self.connecting, self.health):
            if task is not None and not task.done():
                with contextlib.suppress(RuntimeError):
                    task.cancel()
        for connection in (self.subscriber, self.publisher):
            if connection is not None:
                connection.on_lost = None
                connection.close()
        self.subscriber = self.publisher = None


class PushPubSubChannelLayer(BaseChannelLayer):  # type: ignore[misc]  # channels ships no type information
    """The Channels layer API (``send``, ``receive``, ``new_channel``, ``group_add``,
    ``group_discard``, ``group_send``, ``flush``) on Redis pub/sub, pushed, not polled."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        address: str = "redis://localhost:6379/0",
        prefix: str = "asgi",
        capacity: int = 10_000,
        socket_connect_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        health_check_interval: float = 15.0,
        **kwargs: Any,
    ):
        ssl_config = {name: kwargs.pop(name) for name in SSL_OPTIONS if name in kwargs}
        super().__init__(capacity=capacity, **kwargs)
        if not address.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"channel layer address must be redis://, rediss:// or unix://, not {address!r}"
            )
        self.address = address
        self.options = parse_url(address)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        # TLS options from CONFIG and the URL's query (which wins, as in redis-py's from_url)
        # reach both clients: the asyncio connections through one SSLContext, redis-py's
        # blocking client by name.
        self.ssl_options: dict[str, Any] = {}
        if address.startswith("rediss://"):
            self.ssl_options = {
                name: value
                for name, value in {**ssl_config, **self.options}.items()
                if name in SSL_OPTIONS
            }
            self.options["ssl_context"] = ssl_context(self.ssl_options)
        elif ssl_config:
            raise ValueError(f"TLS options {sorted(ssl_config)} need a rediss:// address")
        self.prefix = prefix
        self.connect_timeout = float(socket_connect_timeout)
        self.socket_timeout = float(socket_timeout)
        self.health_check_interval = float(health_check_interval)
        self._states: dict[asyncio.AbstractEventLoop, _LoopState] = {}
        self._local = threading.local()

    # --- naming -----------------------------------------------------------------------------

    def redis_name(self, kind: str, name: str) -> bytes:
        # ":" is not allowed in channel or group names, so the kinds never collide.
        return f"{self.prefix}:{kind}:{name}".encode()

    def plain_channel(self, name: bytes) -> str:
        return name.decode().split(":", 2)[2]

    def _state(self, *, create: bool) -> _LoopState | None:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None and create:
            for old_loop in [old for old in self._states if old.is_closed()]:
                self._states.pop(old_loop).close()
            state = self._states[loop] = _LoopState(self, loop)
        return state

    # --- channels ---------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        state = self._state(create=True)
        assert state is not None
        await state.ready()
        return state.new_channel(prefix)

    async def receive(self, channel: str) -> Any:
        """The next message on ``channel``. Cancelling a receive means its consumer exited (that
        is how Channels stops one): the channel and its group memberships are forgotten."""
        self.require_valid_channel_name(channel)
        state = self._state(create=True)
        assert state is not None
        queue = state.queues.get(channel)
        if queue is None:
            if "!" in channel:
                raise RuntimeError(f"{channel} is not a channel of this process")
            queue = state.queues[channel] = asyncio.Queue(self.capacity)
            try:
                await state.subscribe(self.redis_name("c", channel))
            except BaseException:
                state.forget(channel)
                raise
        try:
            data = await queue.get()
        except asyncio.CancelledError:
            # Channels cancels the receive of a consumer that exits: forget its channel.
            state.forget(channel)
            raise
        return _deserialize(data)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self.require_valid_channel_name(channel)
        if "!" in channel:
            inbox_id = channel.split("!", 1)[0].rsplit(".", 1)[-1]
            state = self._state(create=False)
            if state is not None and inbox_id == state.inbox_id:
                state.deliver(channel, _serialize(message))
                return
            await self._publish(self.redis_name("p", inbox_id), _serialize([channel, message]))
        else:
            await self._publish(self.redis_name("c", channel), _serialize(message))

    # --- groups -----------------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        state = self._state(create=True)
        assert state is not None
        if channel not in state.queues:
            raise RuntimeError(f"group_add({group!r}) needs a channel of this process")
        name = self.redis_name("g", group)
        state.join(name, channel)
        try:
            await state.subscribe(name)
        except BaseException:
            state.leave(name, channel)
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        state = self._state(create=False)
        if state is not None:
            state.leave(self.redis_name("g", group), channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        await self._publish(self.redis_name("g", group), _serialize(message))

    async def group_send_many(self, messages: list[tuple[str, dict[str, Any], str | None]]) -> None:
        """``group_send`` of several messages, in order, in one write and one round trip. Each
        is ``(group, message, excluded)``: ``excluded``, when not None, is a member channel
        that does not get that message (the sender's own, which already has it): the process
        that holds it then drops it on arrival instead of waking its consumer."""
        items = []
        for group, message, excluded in messages:
            self.require_valid_group_name(group)
            data = _serialize(message)
            if excluded is not None:
                self.require_valid_channel_name(excluded)
                data = EXCLUDING + excluded.encode() + b"\n" + data
            items.append((self.redis_name("g", group), data))
        state = self._state(create=False)
        if state is None:
            for name, data in items:
                self._publish_sync(name, data)
            return
        if items:
            await state.publish_many(items)

    def group_send_sync(self, group: str, message: dict[str, Any]) -> None:
        """``group_send`` for synchronous code, in the calling thread (no event-loop hop)."""
        self.require_valid_group_name(group)
        self._publish_sync(self.redis_name("g", group), _serialize(message))

    # --- publishing -------------------------------------------------------------------------

    async def _publish(self, name: bytes, data: bytes) -> None:
        state = self._state(create=False)
        if state is None:
            # A loop without consumers (async_to_sync in a sync thread makes one per call):
            # a connection of its own would outlive the loop; publish synchronously instead.
            self._publish_sync(name, data)
            return
        await state.publish(name, data)

    def _publish_sync(self, name: bytes, data: bytes) -> None:
        client = getattr(self._local, "client", None)
        if client is None:
            client = redis.Redis.from_url(
                self.address,
                socket_timeout=self.socket_timeout,
                socket_connect_timeout=self.connect_timeout,
                socket_keepalive=True,
                # One immediate retry (a connection that died with a Redis restart), then fail
                # fast: the caller's client reconnects; redis-py's default backs off for seconds.
                retry=Retry(NoBackoff(), 1),
                **self.ssl_options,
            )
            self._local.client = client
        client.publish(name, data)

    async def flush(self) -> None:
        """Forget every channel and group of this process and close its connections."""
        for state in self._states.values():
            state.close()
        self._states.clear()
        client = getattr(self._local, "client", None)
        if client is not None:
            client.close()
            self._local.client = None

    async def close(self) -> None:
        await self.flush()


def group_send_sync(group: str, message: dict[str, Any]) -> None:
    """Send to a group from synchronous code: in this thread when the layer can, else through
    ``async_to_sync``. Call after commit (``transaction.on_commit``), never inside a transaction.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    # Looked up on the class: channels-redis's pub/sub layer forwards unknown attributes to a
    # per-event-loop object, which fails outside a loop.
    send = getattr(type(layer), "group_send_sync", None)
    if send is not None:
        send(layer, group, message)
        return
    from asgiref.sync import async_to_sync

    async_to_sync(layer.group_send)(group, message)
