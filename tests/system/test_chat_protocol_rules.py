"""Chat protocol conformance, part 1: the general rules of docs/chat-protocol.md §1 and §2's
"Reconnect and resume", through real ``websockets`` clients against one real uvicorn server.

Covered here: binary and malformed frames and their close codes, the hello deadline, unknown
fields, ``ref`` echoes, ``rate_limited``, ping and its catch-up, history paging by ``last_seq``,
and the "subscribe, then read the history" order (pinned with a server checkpoint, not a sleep).
The other parts: ``test_chat_protocol_shopper.py`` and ``test_chat_protocol_console.py``; the
test in tests/chat/test_protocol_document.py checks that every frame the document lists is
covered by one of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models import F

from chat.consumers import CLOSE_HELLO, CLOSE_PROTOCOL, CLOSE_TOO_LARGE
from chat.models import Conversation, Message
from commerce.models import Shopper, WriteKey
from tests.chat.conftest import make_agent
from tests.chat.wsclient import ChatClient
from tests.support.chat_protocol import (
    console_socket,
    covers,
    hand_off_assigned,
    session_cookie,
    shopper_socket,
)
from tests.support.checkpoints import Checkpoint
from tests.support.processes import asgi_server_fixture
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM

HELLO_TIMEOUT_MS = 1000
FRAMES_PER_SECOND = 2
FRAMES_BURST = 30  # per socket: no other test here sends that many frames on one socket
SUBSCRIBED = Checkpoint("chat.subscribed")


server = asgi_server_fixture(
    PATRON_CHAT_HELLO_TIMEOUT_MS=str(HELLO_TIMEOUT_MS),
    PATRON_CHAT_FRAMES_PER_SECOND=str(FRAMES_PER_SECOND),
    PATRON_CHAT_FRAMES_BURST=str(FRAMES_BURST),
    PATRON_RATE_CHAT_CONVERSATIONS="1000/600",
    PATRON_TEST_CHECKPOINTS=SUBSCRIBED.name,
)


@pytest.fixture
def subscribed() -> Iterator[Checkpoint]:
    yield SUBSCRIBED
    SUBSCRIBED.disarm()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def lose_a_message(conversation_id: int, body: str) -> int:
    """Store a message whose event never goes out, as when Redis restarted meanwhile."""
    Conversation.objects.filter(pk=conversation_id).update(last_seq=F("last_seq") + 1)
    seq = Conversation.objects.values_list("last_seq", flat=True).get(pk=conversation_id)
    Message.objects.create(conversation_id=conversation_id, seq=seq, author_kind="bot", body=body)
    return int(seq)


# --- Frames the server refuses -------------------------------------------------------------

HELLO = "HELLO"


REFUSED: dict[str, tuple[list[str | bytes], int, str]] = {
    "binary-first": ([b"\x00\x01binary"], CLOSE_PROTOCOL, "protocol_error"),
    "binary-after-hello": ([HELLO, b'{"type": "ping"}'], CLOSE_PROTOCOL, "protocol_error"),
    "not-json": (["not json"], CLOSE_PROTOCOL, "protocol_error"),
    "not-an-object": ([HELLO, '["a list"]'], CLOSE_PROTOCOL, "protocol_error"),
    "unknown-type": ([HELLO, '{"type": "nope"}'], CLOSE_PROTOCOL, "protocol_error"),
    "wrong-field-type": ([HELLO, '{"type": "read", "seq": "7"}'], CLOSE_PROTOCOL, "protocol_error"),
    "ref-too-long": (
        [HELLO, '{"type": "ping", "ref": "' + "r" * 65 + '"}'],
        CLOSE_PROTOCOL,
        "protocol_error",
    ),
    "second-hello": (
        [HELLO, '{"type": "hello", "write_key": "k", "anonymous_id": "b"}'],
        CLOSE_PROTOCOL,
        "protocol_error",
    ),
    "first-frame-not-hello": (['{"type": "ping"}'], CLOSE_HELLO, "hello_required"),
    "over-16-KiB": (
        [HELLO, '{"type": "ping", "pad": "' + "x" * 16_400 + '"}'],
        CLOSE_TOO_LARGE,
        "frame_too_large",
    ),
}


@covers("shopper<error")
def test_a_refused_frame_gets_one_error_frame_then_its_close_code(server, key):
    """Each case on its own socket; one test, so the database is reset once for all."""

    async def refused(frames: list[str | bytes]) -> tuple[list[tuple[str, str]], int | None]:
        client = await ChatClient(server, "/ws/chat/").connect()
        for frame in frames:
            if frame == HELLO:
                await client.send({"type": "hello", "write_key": key.key, "anonymous_id": "a-1"})
                assert (await client.recv())["type"] == "welcome"
            else:
                assert client.ws is not None
                await client.ws.send(frame)
        received, closed = await client.closed_with()
        return [(f["type"], f["code"]) for f in received], closed

    async def scenario() -> dict[str, tuple[list[tuple[str, str]], int | None]]:
        return {case: await refused(frames) for case, (frames, _, _) in REFUSED.items()}

    outcomes = run(scenario())

    assert outcomes == {
        case: ([("error", code)], close_code) for case, (_, close_code, code) in REFUSED.items()
    }
    assert not Message.objects.exists()


@covers("shopper<error", "shopper>hello", "shopper>ping", "shopper<pong")
def test_no_hello_within_the_deadline_closes_with_4001_and_a_hello_in_time_keeps_the_socket(
    server, key
):
    async def scenario() -> tuple[list[dict[str, Any]], int | None, float, list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # The greeted socket first: its deadline passes before the silent one's.
        greeted, _ = await shopper_socket(server, key, anonymous_id="a-1")
        silent = await ChatClient(server, "/ws/chat/").connect()
        frames, closed = await silent.closed_with(timeout=HELLO_TIMEOUT_MS / 1000 + 5)
        waited = loop.time() - started
        # The deadline has passed for the greeted socket too: its hello cancelled the timer.
        after_deadline = await greeted.settle()
        await greeted.close()
        return frames, closed, waited, after_deadline

    frames, closed, waited, after_deadline = run(scenario())

    assert frames == [{"type": "error", "code": "hello_required", "message": "Send hello first."}]
    assert closed == CLOSE_HELLO
    assert waited >= HELLO_TIMEOUT_MS / 1000 * 0.9
    assert after_deadline == []
    assert Shopper.objects.count() == 1  # the greeted one; nothing for the silent socket


# --- Unknown fields, refs ------------------------------------------------------------------


@covers(
    "shopper>hello",
    "shopper<welcome",
    "shopper>message.send",
    "shopper<message.ack",
    "shopper>typing",
    "shopper>read",
    "shopper>page.view",
    "shopper>ping",
    "shopper<pong",
    "console>inbox.query",
    "console<inbox.snapshot",
    "console>ping",
    "console<pong",
)
def test_unknown_fields_in_client_frames_are_ignored(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    extra = {"x-unknown": {"nested": [1, 2]}, "version": 99}

    async def scenario() -> None:
        client = await ChatClient(server, "/ws/chat/").connect()
        await client.send({"type": "hello", "write_key": key.key, "anonymous_id": "a-1", **extra})
        assert (await client.recv())["type"] == "welcome"
        await client.send({"type": "message.send", "client_id": "c1", "body": "hi", **extra})
        ack = await client.expect("message.ack")
        assert (ack["client_id"], ack["message"]["body"]) == ("c1", "hi")
        for frame in (
            {"type": "typing", "active": True},
            {"type": "read", "seq": 1},
            {"type": "page.view", "url": "https://shop.example/"},
        ):
            await client.send({**frame, **extra})
        frames = await client.settle()
        assert [f for f in frames if f["type"] == "error"] == []
        await client.send({"type": "ping", "ref": "p", **extra})
        assert await client.recv() == {"type": "pong", "ref": "p"}
        await client.close()

        console, _ = await console_socket(server, cookie)
        await console.send({"type": "inbox.query", "view": "all", "ref": "q", **extra})
        snapshot = await console.expect("inbox.snapshot", ref="q")
        assert snapshot["view"] == "all"
        await console.send({"type": "ping", "ref": "cp", **extra})
        assert await console.expect("pong") == {"type": "pong", "ref": "cp"}
        await console.close()

    run(scenario())
    assert Message.objects.filter(author_kind="shopper").count() == 1


@covers(
    "shopper>message.send",
    "shopper<message.ack",
    "shopper<error",
    "shopper>ping",
    "shopper<pong",
    "shopper>transcript.request",
    "shopper<transcript.queued",
)
def test_the_direct_answer_to_a_frame_echoes_its_ref(server, key):
    async def scenario() -> dict[str, dict[str, Any]]:
        client, _ = await shopper_socket(server, key, anonymous_id="a-1")
        answers = {}
        await client.send({"type": "message.send", "client_id": "c1", "body": "hi", "ref": "r1"})
        answers["message.ack"] = await client.expect("message.ack")
        await client.send({"type": "message.send", "client_id": "c2", "body": "  ", "ref": "r2"})
        answers["error"] = await client.expect("error")
        await client.send({"type": "ping", "ref": "r3"})
        answers["pong"] = await client.expect("pong")
        await client.send({"type": "transcript.request", "email": "ref@example.com", "ref": "r4"})
        answers["transcript.queued"] = await client.expect("transcript.queued")
        await client.close()
        return answers

    answers = run(scenario())

    assert {kind: frame.get("ref") for kind, frame in answers.items()} == {
        "message.ack": "r1",
        "error": "r2",
        "pong": "r3",
        "transcript.queued": "r4",
    }
    assert (answers["error"]["code"], answers["error"]["message"]) == (
        "invalid",
        "body must not be empty",
    )


# --- rate_limited ----------------------------------------------------------------------------


@covers("shopper<error", "shopper>ping", "shopper<pong")
def test_frames_over_the_rate_are_dropped_with_rate_limited_and_the_socket_stays_open(server, key):
    sent = FRAMES_BURST + 5

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        client, _ = await shopper_socket(server, key, anonymous_id="a-1")  # hello: one token
        for n in range(sent):
            await client.send({"type": "ping", "ref": f"p{n}"})
        answers = [await client.recv() for _ in range(sent)]
        wait_ms = max(a.get("retry_after_ms", 0) for a in answers)
        await asyncio.sleep(wait_ms / 1000)  # what the server asked for, then it listens again
        await client.send({"type": "ping", "ref": "after"})
        later = await client.recv()
        await client.close()
        return answers, later

    answers, later = run(scenario())

    pongs = [a for a in answers if a["type"] == "pong"]
    limited = [a for a in answers if a["type"] == "error"]
    # The burst left after hello, plus at most a token that came back while they were sent.
    assert FRAMES_BURST - 1 <= len(pongs) <= FRAMES_BURST
    assert [a["ref"] for a in pongs] == [f"p{n}" for n in range(len(pongs))]
    assert [a["ref"] for a in limited] == [f"p{n}" for n in range(len(pongs), sent)]
    assert {(a["code"], a["message"]) for a in limited} == {
        ("rate_limited", "Too many frames; slow down.")
    }
    assert all(0 < a["retry_after_ms"] <= 1000 / FRAMES_PER_SECOND for a in limited)
    assert later == {"type": "pong", "ref": "after"}


# --- ping and its catch-up -----------------------------------------------------------------


@covers("shopper>ping", "shopper<pong", "shopper<message.new", "console>ping", "console<pong")
def test_ping_first_sends_what_the_socket_missed_then_pong(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        client, _ = await shopper_socket(server, key, anonymous_id="a-1")
        await client.send({"type": "message.send", "client_id": "c1", "body": "hello"})
        cid = (await client.expect("message.ack"))["message"]["conversation_id"]
        await client.expect("conversation.state")
        console, _ = await console_socket(server, cookie)
        await console.send({"type": "conversation.open", "conversation_id": cid, "ref": "o"})
        await console.expect("conversation.opened", ref="o")
        await client.settle()  # the bot's answer
        await console.settle()

        lost = await asyncio.to_thread(lose_a_message, cid, "said while Redis was away")
        shopper_frames = await client.settle()
        console_frames = await console.settle()
        await client.close()
        await console.close()
        return shopper_frames, console_frames, lost

    shopper_frames, console_frames, lost = run(scenario())

    for frames in (shopper_frames, console_frames):
        assert [(f["type"], f["message"]["seq"], f["message"]["body"]) for f in frames] == [
            ("message.new", lost, "said while Redis was away")
        ]


# --- History: paging by last_seq, and subscribe-then-read ----------------------------------


def _conversation_with_history(server: str, key: WriteKey, cookie: str) -> Any:
    """A conversation with shopper, bot, system and agent messages and one internal note."""

    async def scenario() -> tuple[int, str]:
        console, _ = await console_socket(server, cookie)
        client, welcome = await shopper_socket(server, key, anonymous_id="a-h")
        await client.send({"type": "message.send", "client_id": "s1", "body": "returns?"})
        await client.expect("message.new", message__author__kind="bot")
        cid = await hand_off_assigned(client, console)
        for n, internal in ((1, False), (2, True), (3, False)):
            await console.send(
                {
                    "type": "message.send",
                    "conversation_id": cid,
                    "client_id": f"a{n}",
                    "body": f"answer {n}",
                    "internal": internal,
                }
            )
            await console.expect("message.ack", client_id=f"a{n}")
        await client.expect("message.new", message__client_id="a3")
        await client.close()
        await console.close()
        return cid, welcome["token"]

    return run(scenario())


@covers(
    "shopper>hello", "shopper<welcome", "console>conversation.open", "console<conversation.opened"
)
def test_history_pages_from_last_seq_on_both_sockets(server, key):
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    cid, token = _conversation_with_history(server, key, cookie)
    stored = list(
        Message.objects.filter(conversation_id=cid).order_by("seq").values_list("seq", "internal")
    )
    every = [seq for seq, _ in stored]
    public = [seq for seq, internal in stored if not internal]
    assert len(every) == len(public) + 1 >= 7

    async def scenario() -> tuple[dict[Any, list[int]], dict[Any, list[int]]]:
        shopper_pages: dict[Any, list[int]] = {}
        console_pages: dict[Any, list[int]] = {}
        console, _ = await console_socket(server, cookie)
        for last_seq in [None, *range(0, every[-1] + 2)]:
            hello: dict[str, Any] = {"token": token, "conversation_id": cid}
            if last_seq is not None:
                hello["last_seq"] = last_seq
            client, welcome = await shopper_socket(server, key, **hello)
            shopper_pages[last_seq] = [m["seq"] for m in welcome["messages"]]
            assert {m["internal"] for m in welcome["messages"]} <= {False}
            await client.close()
            await console.send(
                {"type": "conversation.open", "conversation_id": cid, "last_seq": last_seq}
            )
            opened = await console.expect("conversation.opened")
            console_pages[last_seq] = [m["seq"] for m in opened["messages"]]
        await console.close()
        return shopper_pages, console_pages

    shopper_pages, console_pages = run(scenario())

    assert shopper_pages == {
        last_seq: [s for s in public if s > (last_seq or 0)] for last_seq in shopper_pages
    }
    assert console_pages == {
        last_seq: [s for s in every if s > (last_seq or 0)] for last_seq in console_pages
    }


@covers("shopper>hello", "shopper<welcome", "shopper<message.new", "console>message.send")
def test_a_resuming_shopper_subscribes_before_reading_history(server, key, subscribed):
    """A message stored after the socket joined its conversation's group but before it read
    the history arrives exactly once. Read first and subscribe second, and it never arrives
    (not in the history read before it, its event sent before the socket listened)."""
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)
    cid, token = _conversation_with_history(server, key, cookie)
    last_seq = Conversation.objects.get(pk=cid).last_seq

    async def scenario() -> tuple[list[int], list[dict[str, Any]]]:
        console, _ = await console_socket(server, cookie)
        subscribed.arm()
        client = await ChatClient(server, "/ws/chat/").connect()
        await client.send(
            {
                "type": "hello",
                "write_key": key.key,
                "token": token,
                "conversation_id": cid,
                "last_seq": last_seq,
            }
        )
        await subscribed.reached()
        # Between the two steps: an agent's reply is stored and published.
        await console.send(
            {"type": "message.send", "conversation_id": cid, "client_id": "mid", "body": "now"}
        )
        await console.expect("message.ack", client_id="mid")
        await subscribed.release()
        welcome = await client.recv()
        assert welcome["type"] == "welcome"
        in_history = [m["client_id"] for m in welcome["messages"]]
        live = [] if "mid" in in_history else [await client.expect("message.new")]
        rest = await client.settle()
        await client.close()
        await console.close()
        return [m["seq"] for m in welcome["messages"]], live + rest

    history, after = run(scenario())

    mid = Message.objects.get(conversation_id=cid, client_id="mid").seq
    assert mid == last_seq + 1
    delivered = history + [f["message"]["seq"] for f in after if f["type"] == "message.new"]
    assert delivered == [mid]


@covers(
    "console>conversation.open",
    "console<conversation.opened",
    "console<message.new",
    "console>presence.set",
)
def test_an_opening_console_subscribes_before_reading_history(server, key, subscribed):
    """The same order on ``conversation.open`` of a conversation the console did not follow
    (queued: no bot answer follows the message, whose seq would make the console fetch it)."""
    agent = make_agent("anna", online=False)
    cookie = session_cookie(agent)

    async def scenario() -> tuple[int, list[int]]:
        console, _ = await console_socket(server, cookie)
        await console.send({"type": "presence.set", "status": "away"})
        await console.expect("presence", status="away")  # routing skips her: it stays queued
        shopper, _ = await shopper_socket(server, key, anonymous_id="a-o")
        await shopper.send({"type": "handoff.request"})
        state = await shopper.expect("conversation.state", conversation__state="queued")
        cid, last_seq = state["conversation"]["id"], state["conversation"]["last_seq"]
        await shopper.settle()

        subscribed.arm()
        await console.send(
            {"type": "conversation.open", "conversation_id": cid, "last_seq": last_seq}
        )
        await subscribed.reached()
        # Between the two steps: the shopper writes (stored, published, acknowledged).
        await shopper.send({"type": "message.send", "client_id": "mid", "body": "anyone?"})
        await shopper.expect("message.ack", client_id="mid")
        await subscribed.release()
        opened = await console.expect("conversation.opened")
        seqs = [m["seq"] for m in opened["messages"]]
        if not seqs:
            seqs.append((await console.expect("message.new"))["message"]["seq"])
        rest = await console.settle()
        seqs += [f["message"]["seq"] for f in rest if f["type"] == "message.new"]
        await shopper.close()
        await console.close()
        return cid, seqs

    cid, seqs = run(scenario())

    assert seqs == [Message.objects.get(conversation_id=cid, client_id="mid").seq]
