"""Test set-up shared by every folder.

Tests run against real PostgreSQL and Redis: the ones named by DATABASE_URL/REDIS_URL, or the
embedded servers when those are unset. Under CI (``CI=true``) an unreachable service fails the
run instead of skipping anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("PATRON_TESTING", "1")

_STARTED_SERVERS = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PATRON_TESTING", "1")
    # The settings start nothing; a test run without DATABASE_URL/REDIS_URL uses the embedded
    # servers, started here before anything connects.
    from config import embedded

    config.stash[_STARTED_SERVERS] = embedded.start_missing()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the embedded servers this run started, so `make test` leaves no server running
    (servers that were running before, say for `make run`, stay)."""
    started = config.stash.get(_STARTED_SERVERS, [])
    if started:
        from config import embedded

        embedded.servers_stop(names=started)


@pytest.fixture(scope="session", autouse=True)
def _services_reachable() -> None:
    """Stop the whole run with a clear message when PostgreSQL or Redis does not answer."""
    import redis
    from django.conf import settings

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis at {settings.REDIS_URL} is unreachable: {exc}", returncode=3)


@pytest.fixture(autouse=True)
def _celery_eager() -> Iterator[None]:
    """Unit tests run Celery tasks inline; system tests start real workers instead."""
    from config.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    from django.core.cache import cache

    yield
    cache.clear()
