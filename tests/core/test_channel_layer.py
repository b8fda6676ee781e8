"""core.channel_layer.PushPubSubChannelLayer against a real Redis: two layer instances stand for
two server processes (each has its own subscriber connection, as each process would)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import pytest
from django.conf import settings

from core.channel_layer import PushPubSubChannelLayer, group_send_sync
from tests.support.processes import free_port, redis_server, stop


def make_layer(address: str | None = None, prefix: str | None = None) -> PushPubSubChannelLayer:
    return PushPubSubChannelLayer(
        address=address or settings.REDIS_URL,
        prefix=prefix or f"test-layer-{uuid.uuid4().hex[:8]}",
        health_check_interval=0,
    )


async def nothing_within(layer: PushPubSubChannelLayer, channel: str, seconds: float) -> bool:
    """Nothing queued for ``channel`` after ``seconds``. (Not a receive with a timeout: a
    cancelled receive means the consumer exited, and the layer forgets its channel.)"""
    await asyncio.sleep(seconds)
    state = layer._states[asyncio.get_running_loop()]
    return state.queues[channel].empty()


def test_group_send_reaches_every_member_in_both_processes_once():
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[Any], list[Any], list[Any], bool, bool]:
        one, two = make_layer(prefix=prefix), make_layer(prefix=prefix)
        a1, a2 = await one.new_channel(), await one.new_channel()
        b1 = await two.new_channel()
        outsider = await two.new_channel()
        for layer, channel in ((one, a1), (one, a2), (two, b1)):
            await layer.group_add("chat.c.1", channel)
        await one.group_add("chat.c.2", a1)  # another group: must not leak into chat.c.1

        await two.group_send("chat.c.1", {"type": "chat.event", "n": 1, "raw": b"\x00\xff"})
        await one.group_send("chat.c.1", {"type": "chat.event", "n": 2})
        got_a1 = [await one.receive(a1), await one.receive(a1)]
        got_a2 = [await one.receive(a2), await one.receive(a2)]
        got_b1 = [await two.receive(b1), await two.receive(b1)]
        quiet_a1 = await nothing_within(one, a1, 0.3)
        quiet_outsider = await nothing_within(two, outsider, 0.1)
        await one.flush()
        await two.flush()
        return got_a1, got_a2, got_b1, quiet_a1, quiet_outsider

    got_a1, got_a2, got_b1, quiet_a1, quiet_outsider = asyncio.run(scenario())

    expected = [{"type": "chat.event", "n": 1, "raw": b"\x00\xff"}, {"type": "chat.event", "n": 2}]
    assert got_a1 == expected  # in publish order, bytes intact
    assert got_a2 == expected
    assert got_b1 == expected
    assert quiet_a1  # exactly once: no third message
    assert quiet_outsider  # a channel in no group hears nothing


def test_send_to_a_specific_channel_of_another_process():
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[Any, Any, bool]:
        one, two = make_layer(prefix=prefix), make_layer(prefix=prefix)
        target, neighbour = await one.new_channel(), await one.new_channel()
        await one.send(target, {"type": "direct", "to": "target", "local": True})
        await two.send(target, {"type": "direct", "to": "target"})
        first, second = await one.receive(target), await one.receive(target)
        quiet = await nothing_within(one, neighbour, 0.2)
        await one.flush()
        await two.flush()
        return first, second, quiet

    first, second, quiet = asyncio.run(scenario())

    assert first == {"type": "direct", "to": "target", "local": True}  # from its own process
    assert second == {"type": "direct", "to": "target"}  # through Redis
    assert quiet  # the process's other channels do not get it


def test_group_discard_stops_delivery_to_that_channel_only():
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[bool, Any, bool]:
        one, two = make_layer(prefix=prefix), make_layer(prefix=prefix)
        leaving, staying = await one.new_channel(), await one.new_channel()
        await one.group_add("room", leaving)
        await one.group_add("room", staying)
        await one.group_discard("room", leaving)
        await one.group_discard("room", leaving)  # twice: no error
        await two.group_send("room", {"type": "after.discard"})
        staying_got = await one.receive(staying)
        leaving_quiet = await nothing_within(one, leaving, 0.3)
        # The last local member leaving unsubscribes the process from the group.
        await one.group_discard("room", staying)
        await two.group_send("room", {"type": "nobody.left"})
        staying_quiet = await nothing_within(one, staying, 0.3)
        await one.flush()
        await two.flush()
        return leaving_quiet, staying_got, staying_quiet

    leaving_quiet, staying_got, staying_quiet = asyncio.run(scenario())

    assert leaving_quiet
    assert staying_got == {"type": "after.discard"}
    assert staying_quiet


def test_group_send_sync_from_a_thread_without_an_event_loop():
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"

    async def scenario() -> Any:
        layer = make_layer(prefix=prefix)
        publisher = make_layer(prefix=prefix)
        channel = await layer.new_channel()
        await layer.group_add("chat.c.9", channel)
        # As chat.services does after commit, in a worker thread.
        await asyncio.to_thread(publisher.group_send_sync, "chat.c.9", {"type": "from.thread"})
        got = await layer.receive(channel)
        await layer.flush()
        await publisher.flush()
        return got

    assert asyncio.run(scenario()) == {"type": "from.thread"}


def test_group_send_sync_helper_uses_the_configured_layer(settings):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "core.channel_layer.PushPubSubChannelLayer",
            "CONFIG": {"address": settings.REDIS_URL, "prefix": f"t{uuid.uuid4().hex[:8]}"},
        }
    }
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert isinstance(layer, PushPubSubChannelLayer)

    async def scenario() -> Any:
        channel = await layer.new_channel()
        await layer.group_add("chat.c.3", channel)
        await asyncio.to_thread(group_send_sync, "chat.c.3", {"type": "via.helper"})
        got = await layer.receive(channel)
        await layer.flush()
        return got

    assert asyncio.run(scenario()) == {"type": "via.helper"}


def test_a_channel_receives_again_after_its_connection_drops():
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[Any, Any, Any]:
        one, two = make_layer(prefix=prefix), make_layer(prefix=prefix)
        channel = await one.new_channel()
        await one.group_add("chat.c.5", channel)
        await two.group_send("chat.c.5", {"type": "before"})
        before = await one.receive(channel)
        # The network drops the subscriber connection (Redis itself stays up).
        state = next(iter(one._states.values()))
        assert state.subscriber is not None
        state.subscriber.close()
        for _ in range(100):
            await asyncio.sleep(0.05)
            if state.subscriber is not None and not state.pending:
                break
        await two.group_send("chat.c.5", {"type": "after", "to": "group"})
        await two.send(channel, {"type": "after", "to": "channel"})
        after_group = await asyncio.wait_for(one.receive(channel), 5)
        after_channel = await asyncio.wait_for(one.receive(channel), 5)
        await one.flush()
        await two.flush()
        return before, after_group, after_channel

    before, after_group, after_channel = asyncio.run(scenario())

    assert before == {"type": "before"}
    assert after_group == {"type": "after", "to": "group"}  # the group was re-subscribed
    assert after_channel == {"type": "after", "to": "channel"}  # and the process inbox


@pytest.mark.system
def test_redis_restart_fails_fast_while_down_then_recovers(tmp_path):
    from redis.exceptions import ConnectionError as RedisConnectionError

    port = free_port()
    address = f"redis://127.0.0.1:{port}/0"
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"

    async def scenario(server: subprocess.Popen[bytes]) -> dict[str, Any]:
        one, two = make_layer(address, prefix), make_layer(address, prefix)
        member = await one.new_channel()
        await one.group_add("chat.c.7", member)
        await two.group_send("chat.c.7", {"type": "before"})
        outcome: dict[str, Any] = {"before": await one.receive(member)}

        stop(server)  # Redis goes away...
        await asyncio.sleep(0.3)
        failures = []
        for call in (
            lambda: one.group_add("chat.c.8", member),
            one.new_channel,
            lambda: two.group_send("chat.c.7", {"type": "lost"}),
        ):
            try:
                await asyncio.wait_for(call(), 2)
            except RedisConnectionError:
                failures.append("ConnectionError")
        outcome["failures_while_down"] = failures

        with redis_server(port, tmp_path):  # ...and comes back on the same port
            for _ in range(100):
                await asyncio.sleep(0.05)
                state = next(iter(one._states.values()))
                if state.subscriber is not None and not state.pending:
                    break
            await two.group_send("chat.c.7", {"type": "after"})
            outcome["after"] = await asyncio.wait_for(one.receive(member), 5)
            outcome["quiet"] = await nothing_within(one, member, 0.3)
            late = await one.new_channel()
            await one.group_add("chat.c.7", late)
            await two.group_send("chat.c.7", {"type": "both"})
            outcome["both"] = [
                await asyncio.wait_for(one.receive(member), 5),
                await asyncio.wait_for(one.receive(late), 5),
            ]
            await one.flush()
            await two.flush()
        return outcome

    with redis_server(port, tmp_path) as server:
        outcome = asyncio.run(scenario(server))

    assert outcome["before"] == {"type": "before"}
    # While Redis is down, joining, new channels and publishing fail at once (the chat
    # consumers then close with 1011 and clients resume from their last seq).
    assert outcome["failures_while_down"] == ["ConnectionError"] * 3
    # After the restart the existing member is re-subscribed without doing anything; the
    # message published while down is gone (pub/sub), nothing arrives twice.
    assert outcome["after"] == {"type": "after"}
    assert outcome["quiet"]
    assert outcome["both"] == [{"type": "both"}, {"type": "both"}]


def test_group_send_many_keeps_order_and_skips_only_the_excluded_channel():
    prefix = f"test-layer-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[Any], list[Any], list[Any], bool]:
        one, two = make_layer(prefix=prefix), make_layer(prefix=prefix)
        sender, other_tab = await one.new_channel(), await one.new_channel()
        agent = await two.new_channel()
        for layer, channel in ((one, sender), (one, other_tab), (two, agent)):
            await layer.group_add("chat.c.1", channel)
        await one.group_send_many(
            [
                ("chat.c.1", {"type": "chat.event", "n": 1}, sender),
                ("chat.c.1", {"type": "chat.event", "n": 2}, None),
                ("chat.c.1", {"type": "chat.event", "n": 3}, sender),
            ]
        )
        got_sender = [await one.receive(sender)]
        got_other_tab = [await one.receive(other_tab) for _ in range(3)]
        got_agent = [await two.receive(agent) for _ in range(3)]
        quiet_sender = await nothing_within(one, sender, 0.3)
        await one.flush()
        await two.flush()
        return got_sender, got_other_tab, got_agent, quiet_sender

    got_sender, got_other_tab, got_agent, quiet_sender = asyncio.run(scenario())
    assert [m["n"] for m in got_sender] == [2]
    assert quiet_sender
    assert [m["n"] for m in got_other_tab] == [1, 2, 3]
    assert [m["n"] for m in got_agent] == [1, 2, 3]
