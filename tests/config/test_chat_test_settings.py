"""The chat settings tests lean on: the hello deadline comes from the environment, and test
checkpoints are refused outside tests (a production server must never wait on one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _import_settings(expression: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in ("PATRON_TESTING", "CHANNEL_LAYER_PREFIX")
    }
    return subprocess.run(
        [sys.executable, "-c", f"import config.settings as s; print({expression})"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_test_checkpoints_are_refused_outside_tests():
    refused = _import_settings(
        "s.PATRON_TEST_CHECKPOINTS", PATRON_TEST_CHECKPOINTS="chat.subscribed"
    )
    accepted = _import_settings(
        "sorted(s.PATRON_TEST_CHECKPOINTS)",
        PATRON_TEST_CHECKPOINTS="chat.subscribed",
        PATRON_TESTING="1",
    )

    assert refused.returncode != 0
    assert "PATRON_TEST_CHECKPOINTS is only accepted with PATRON_TESTING=1" in refused.stderr
    assert (accepted.returncode, accepted.stdout.strip()) == (0, "['chat.subscribed']")


def test_test_checkpoints_are_refused_in_production_even_with_the_testing_flag():
    refused = _import_settings(
        "s.PATRON_TEST_CHECKPOINTS",
        PATRON_TEST_CHECKPOINTS="chat.subscribed",
        PATRON_TESTING="1",
        DEBUG="0",
        SECRET_KEY="a-production-secret-key-that-is-long-enough-0123456789",
        ALLOWED_HOSTS="patron.example.com",
    )

    assert refused.returncode != 0
    assert "PATRON_TEST_CHECKPOINTS is refused with DEBUG off" in refused.stderr


def test_the_hello_deadline_comes_from_the_environment():
    default = _import_settings("s.PATRON_CHAT_HELLO_TIMEOUT_MS")
    short = _import_settings("s.PATRON_CHAT_HELLO_TIMEOUT_MS", PATRON_CHAT_HELLO_TIMEOUT_MS="250")
    bad = _import_settings("s.PATRON_CHAT_HELLO_TIMEOUT_MS", PATRON_CHAT_HELLO_TIMEOUT_MS="0")

    assert (default.stdout.strip(), short.stdout.strip()) == ("10000", "250")
    assert bad.returncode != 0
    assert "PATRON_CHAT_HELLO_TIMEOUT_MS must be at least 1" in bad.stderr
