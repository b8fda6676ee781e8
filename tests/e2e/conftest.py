"""Real-browser fixtures: a uvicorn server on the test database and headless Chromium.

Playwright cannot download browsers here, so it drives Debian's ``chromium`` package. Without
it the browser tests skip (and fail under ``CI=true``, where a skip would hide a broken set-up).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import asgi_server, child_env

CHROMIUM = Path(os.environ.get("PATRON_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"headless Chromium not found at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread, which makes Django refuse ORM
    # calls (SynchronousOnlyOperation). The test's own ORM calls are plain synchronous code, so
    # lift the guard while the browser lives, and only then (module scope, restored after).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield chromium
            finally:
                chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def live_server_url(transactional_db: None) -> Iterator[str]:
    """Patron under uvicorn, seeing what the test commits (hence ``transactional_db``)."""
    # The browser tests touch the ORM while Playwright's loop exists in this thread; the child
    # server must not inherit the escape hatch that allows that here.
    env = child_env()
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with asgi_server(env=env) as url:
        yield url


@pytest.fixture
def dialogs() -> list[str]:
    """Every JavaScript dialog (alert, confirm, prompt) any page opened: must stay empty."""
    return []


@pytest.fixture
def csp_violations() -> list[str]:
    """Every Content-Security-Policy violation any page reported: must stay empty (#8 §3)."""
    return []


@pytest.fixture
def new_context(browser: Any, dialogs: list[str], csp_violations: list[str]) -> Iterator[Any]:
    """Factory for isolated browser contexts (separate cookies and localStorage)."""
    contexts: list[Any] = []

    def make(**options: Any) -> Any:
        options.setdefault("viewport", {"width": 1366, "height": 860})
        context = browser.new_context(**options)
        context.set_default_timeout(10_000)

        def watch(page: Any) -> None:
            def record(dialog: Any) -> None:
                dialogs.append(f"{dialog.type}: {dialog.message}")
                dialog.dismiss()

            page.on("dialog", record)

            def console(message: Any) -> None:
                # Chromium reports a blocked script, style, image or connection as a console
                # error naming the Content Security Policy.
                if "Content Security Policy" in message.text:
                    csp_violations.append(f"{page.url}: {message.text}")

            page.on("console", console)

        context.on("page", watch)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()
