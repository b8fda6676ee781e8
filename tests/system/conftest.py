"""Fixtures the system tests share: a real Celery (not eager), an SMTP sink, an ASGI server.

A module that needs a server with other settings defines its own ``server``, which overrides
this one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import asgi_server_fixture
from tests.support.smtp import SMTPSink
from tests.system.chat_fixtures import (  # noqa: F401  (fixtures the chat system tests use)
    browser_key,
    chat_settings,
    consoles_disconnected,
)


@pytest.fixture
def real_celery() -> Iterator[None]:
    """Tasks go through Redis to real workers; nothing left queued before or after."""
    from config.celery import app

    app.conf.task_always_eager = False
    app.control.purge()
    yield
    app.control.purge()


@pytest.fixture
def sink() -> Iterator[SMTPSink]:
    server = SMTPSink()
    server.start()
    yield server
    server.stop()


# One real ASGI server (uvicorn) per module, with the suite's settings.
server = asgi_server_fixture()
