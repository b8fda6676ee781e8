"""Fixtures the system tests share: a real Celery (not eager), an SMTP sink, an ASGI server.

A module that needs a server with other settings defines its own ``server``, which overrides
this one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.processes import asgi_server
from tests.support.smtp import SMTPSink


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


@pytest.fixture(scope="module")
def server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """One real ASGI server (uvicorn) per module, with the suite's settings."""
    with asgi_server() as url:
        yield url
