"""Segment's own browser library (analytics-next, Analytics 2.0) sends to Patron unchanged.

The library's bundle comes from the npm registry at the version pinned in
``tests/e2e/segment/package-lock.json`` (``npm ci`` on first use, no CDN at run time). A page
on another origin (a second local HTTP server) loads it and points it at Patron with
``apiHost``, as a shop would, with each delivery strategy: ``standard`` (one request per call,
to ``/v1/t``, ``/v1/p``, ...) and ``batching`` (``/v1/b``, ``credentials: "include"``). A proxy
in front of Patron answers the first call 503, as a restarting server would; the library
retries it with an ``X-Retry-Count`` header, which the preflight must allow. Every event the
page sent is stored exactly once, by ``messageId``, and the page never reached any host but the
two local ones.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from commerce.models import Event, WriteKey

pytestmark = [pytest.mark.e2e]

SEGMENT_DIR = Path(__file__).resolve().parent / "segment"
PACKAGE_DIR = SEGMENT_DIR / "node_modules" / "@segment" / "analytics-next"
BUNDLE_DIR = PACKAGE_DIR / "dist" / "umd"


def _pinned_version() -> str:
    lock = json.loads((SEGMENT_DIR / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/@segment/analytics-next"]["version"])


@pytest.fixture(scope="session")
def segment_bundle() -> Path:
    """The folder of analytics-next's browser bundles, installed by ``npm ci`` when missing."""
    wanted = _pinned_version()
    installed = PACKAGE_DIR / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        npm = shutil.which("npm")
        if npm is None:
            reason = "npm is needed to install Segment's browser library (apt-get install npm)"
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=SEGMENT_DIR,
            check=True,
            timeout=600,
        )
    bundle = BUNDLE_DIR / "index.js"
    assert bundle.exists(), f"{bundle} missing from @segment/analytics-next {wanted}"
    return BUNDLE_DIR


# --- The shop's page, on its own origin --------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shop</title>
<script>
  // Lazily loaded chunks come from this origin too, never from Segment's CDN.
  window.analytics = {_cdn: location.origin};
</script>
<script src="/analytics-next/bundles/index.js"></script>
</head><body><h1>Shop</h1></body></html>
"""


def _page_server(bundle_dir: Path) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlparse(self.path).path
            if path == "/":
                body, kind = PAGE.encode(), "text/html; charset=utf-8"
            elif path.startswith("/analytics-next/bundles/"):
                name = path.removeprefix("/analytics-next/bundles/")
                target = (bundle_dir / name).resolve()
                if bundle_dir.resolve() not in target.parents or not target.is_file():
                    self.send_error(404)
                    return
                body, kind = target.read_bytes(), "text/javascript"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


# --- A proxy in front of Patron that fails the first call --------------------------------


@dataclass
class ProxyLog:
    failures_left: int = 1
    calls: list[tuple[str, int, str | None]] = field(default_factory=list)  # path, status, retry
    preflights: list[tuple[str, int, str]] = field(default_factory=list)  # path, status, headers
    lock: threading.Lock = field(default_factory=threading.Lock)


def _proxy(upstream: str, log: ProxyLog) -> ThreadingHTTPServer:
    target = urlparse(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = urlparse(self.path).path
            if self.command == "POST" and not path.endswith("/m"):
                with log.lock:
                    fail = log.failures_left > 0
                    log.failures_left -= int(fail)
                if fail:
                    # What Patron itself answers to a transient failure, CORS included.
                    payload = b'{"success": false, "code": "service_unavailable"}'
                    self.send_response(503)
                    origin = self.headers.get("Origin")
                    self.send_header("Access-Control-Allow-Origin", origin or "*")
                    self.send_header("Access-Control-Allow-Credentials", "true")
                    self.send_header("Access-Control-Expose-Headers", "Retry-After")
                    self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    with log.lock:
                        log.calls.append((path, 503, self.headers.get("X-Retry-Count")))
                    return
            connection = http.client.HTTPConnection(
                target.hostname or "127.0.0.1", target.port, timeout=30
            )
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            connection.close()
            with log.lock:
                if self.command == "POST":
                    log.calls.append((path, response.status, self.headers.get("X-Retry-Count")))
                else:
                    requested = self.headers.get("Access-Control-Request-Headers", "")
                    log.preflights.append((path, response.status, requested.lower()))

        do_POST = _relay
        do_OPTIONS = _relay

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@contextlib.contextmanager
def _serving(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# --- The test ----------------------------------------------------------------------------

SCRIPT = """
async ({key, apiHost, strategy}) => {
  const errors = [];
  const segment = {apiKey: key, apiHost, protocol: "http"};
  if (strategy === "batching") {
    segment.deliveryStrategy = {
      strategy: "batching",
      config: {size: 4, timeout: 300, credentials: "include"},
    };
  }
  const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load(
    {
      writeKey: key,
      // Given here, so the library never asks Segment's CDN for the source's settings.
      cdnSettings: {
        integrations: {"Segment.io": segment},
        metrics: {host: apiHost, protocol: "http", sampleRate: 1, flushTimer: 500},
      },
    },
    // The documented way to point the library at another host: its metrics follow it.
    {retryQueue: true, integrations: {"Segment.io": {apiHost, protocol: "http"}}},
  );
  analytics.on("error", (error) => errors.push(String(error && error.code)));
  const sent = await Promise.all([
    analytics.page("Home", {path: "/"}),
    analytics.track("Product Viewed", {product_id: "MUG", price: 9.5}),
    analytics.track("Product Added", {product_id: "MUG", quantity: 2}),
    analytics.identify({plan: "guest", locale: "tr"}),
    analytics.group("acme", {name: "Acme"}),
    analytics.track("Checkout Started", {revenue: 19}),
  ]);
  return {
    messageIds: sent.map((ctx) => ctx.event.messageId),
    types: sent.map((ctx) => ctx.event.type),
    anonymousId: analytics.user().anonymousId(),
    errors,
  };
}
"""


def _wait_for(page: Any, predicate: Any, timeout: float = 90.0) -> bool:
    """Poll ``predicate`` while the page runs. Waiting through Playwright (not ``time.sleep``)
    matters: the sync API runs route handlers only inside its own calls, so a sleeping test
    would hold every request the page makes after ``evaluate`` returned (the retries)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        page.wait_for_timeout(250)
    return bool(predicate())


@pytest.mark.parametrize("strategy", ["standard", "batching"])
def test_segment_browser_library_events_are_stored_exactly_once(
    segment_bundle: Path, live_server_url: str, new_context: Any, strategy: str
) -> None:
    key = WriteKey.objects.create(name=f"shop ({strategy})")
    log = ProxyLog()
    outside: list[str] = []
    with (
        _serving(_proxy(live_server_url, log)) as patron,
        _serving(_page_server(segment_bundle)) as shop,
    ):
        # A browser key serves Patron's own pages and the origins it lists: the shop's.
        key.allowed_origins = [shop]
        key.save(update_fields=["allowed_origins"])
        context = new_context()

        def only_local(request: Any) -> None:
            # Observed, not intercepted: Playwright's interception answers CORS preflights
            # itself, and the preflights are part of what this test checks.
            if not request.url.startswith((patron, shop)):
                outside.append(request.url)

        context.on("request", only_local)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(shop + "/")
        api_host = patron.removeprefix("http://") + "/v1"
        result = page.evaluate(SCRIPT, {"key": key.key, "apiHost": api_host, "strategy": strategy})
        message_ids = result["messageIds"]

        def all_stored() -> bool:
            return Event.objects.filter(source=key, message_id__in=message_ids).count() == len(
                message_ids
            )

        stored_in_time = _wait_for(page, all_stored)
        page.close()

    calls = list(log.calls)
    assert stored_in_time, (calls, console)
    assert len(set(message_ids)) == 6
    events = list(
        Event.objects.filter(source=key).order_by("message_id").values_list("message_id", "type")
    )
    # Exactly once: nothing else, nothing twice.
    assert events == sorted(zip(message_ids, result["types"], strict=True))
    assert sorted({t for _, t in events}) == ["group", "identify", "page", "track"]
    anonymous_ids = Event.objects.filter(source=key).values_list("anonymous_id", flat=True)
    assert sorted(set(anonymous_ids)) == [result["anonymousId"]]
    # The forced failure happened, and the retry (with X-Retry-Count) went through CORS.
    assert [status for _, status, _ in calls].count(503) == 1, calls
    if strategy == "standard":
        assert any(retry is not None and status == 200 for _, status, retry in calls), calls
    else:
        # The batching dispatcher numbers its retries only while no new event starts a fresh
        # flush (batched-dispatcher.js resets its count then): the events of the refused batch
        # may go out again in the next batch without the header. They must still arrive.
        refused_at = [status for _, status, _ in calls].index(503)
        assert any(status == 200 for _, status, _ in calls[refused_at + 1 :]), calls
    event_paths = {path for path, status, _ in calls if not path.endswith("/m")}
    if strategy == "batching":
        assert event_paths == {"/v1/b"}
    else:
        assert event_paths == {"/v1/p", "/v1/t", "/v1/i", "/v1/g"}
    assert all(status in (200, 503) for _, status, _ in calls), calls
    # Real preflights reached Patron and allowed the retry's X-Retry-Count (the browser caches
    # the allowed headers, so the retry itself is not always preflighted again).
    assert log.preflights, calls
    assert all(status == 204 for _, status, _ in log.preflights), log.preflights
    assert result["errors"] == []
    assert outside == []
