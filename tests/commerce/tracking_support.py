"""Helpers for the tracking API tests: a client that speaks like Segment's libraries."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from django.test import Client
from django.test.client import Client as DjangoClient

SENT_AT = "2024-05-01T12:00:00.000Z"


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def post(
    client: DjangoClient | Client,
    path: str,
    body: Any,
    *,
    key: str | None,
    compress: bool = False,
    content_type: str = "application/json",
    raw: bytes | None = None,
) -> Any:
    data = raw if raw is not None else json.dumps(body).encode()
    headers: dict[str, str] = {}
    if key is not None:
        headers["Authorization"] = basic_auth(key)
    if compress:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    return client.post(path, data=data, content_type=content_type, headers=headers)


def track(message_id: str, *, event: str = "Product Viewed", **fields: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": "track",
        "event": event,
        "messageId": message_id,
        "anonymousId": "anon-1",
        "timestamp": "2024-05-01T11:59:00.000Z",
        "properties": {"product_id": "SKU-1", "price": 12.5},
    }
    call.update(fields)
    return call


def batch_sender(client: DjangoClient | Client, capture: Any, *, server_side: bool) -> Any:
    """A function that sends calls as one ``/v1/batch`` with a new write key (server-side or
    browser) and runs what the request queued on commit; ``capture`` is pytest-django's
    ``django_capture_on_commit_callbacks``."""
    from commerce.models import WriteKey

    key = WriteKey.objects.create(name="shop", server_side=server_side).key

    def send(*calls: dict[str, Any]) -> None:
        with capture(execute=True):
            response = post(client, "/v1/batch", {"batch": list(calls)}, key=key)
        assert response.status_code == 200, response.content

    return send
