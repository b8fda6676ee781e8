"""The chat protocol conformance suite covers the whole document: every client and server
frame docs/chat-protocol.md lists has a test through a real socket
(tests/system/test_chat_protocol_*.py, each test naming its frames with ``@covers``)."""

from __future__ import annotations

from tests.support.chat_protocol import covered_frames, documented_frames


def test_the_document_parser_finds_frames_of_every_kind():
    frames = documented_frames()
    assert {
        "shopper>hello",
        "shopper>ping",
        "shopper<welcome",
        "shopper<pong",
        "console>inbox.query",
        "console>ping",
        "console<inbox.snapshot",
        "console<presence",
        "console<transcript.queued",
    } <= frames
    assert "console<csat.request" not in frames  # "the shopper gets `csat.request`"
    assert len(frames) >= 50


def test_every_documented_frame_has_a_test():
    from tests.system import (
        test_chat_labels_snooze,
        test_chat_protocol_console,
        test_chat_protocol_rules,
        test_chat_protocol_shopper,
    )

    covered = covered_frames(
        test_chat_protocol_rules,
        test_chat_protocol_shopper,
        test_chat_protocol_console,
        test_chat_labels_snooze,
    )
    documented = documented_frames()
    assert sorted(documented - covered) == [], "these frames have no conformance test"
    assert sorted(covered - documented) == [], "a test covers a frame the document lacks"
