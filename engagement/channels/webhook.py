"""Outbound webhooks, signed so the receiver can trust them and deduplicate retries.

Each POST carries ``X-Patron-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``
(keyed with the endpoint's secret) and ``X-Patron-Delivery: <id>``, the same id on every retry
of one message: receivers deduplicate by it, which makes this channel ``idempotent``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx
from django.conf import settings

from engagement.channels.base import ChannelBackend, DeliveryError, Handing, Outbound


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def signature_verify(
    secret: str, header: str, body: bytes, *, tolerance: int = 300, now: float | None = None
) -> bool:
    """What a receiver does: check the HMAC and that the timestamp is recent."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookBackend(ChannelBackend):
    idempotent = True

    def __init__(self) -> None:
        self.client: httpx.Client | None = None

    def open(self) -> None:
        if self.client is None:
            self.client = httpx.Client(timeout=settings.PATRON_WEBHOOK_TIMEOUT_SECONDS)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        self.open()
        assert self.client is not None
        body = json.dumps(outbound.payload, separators=(",", ":"), default=str).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Patron-Webhooks/1",
            "X-Patron-Delivery": outbound.delivery_id,
            "X-Patron-Signature": signature(outbound.endpoint_secret, timestamp, body),
        }
        handing()
        try:
            response = self.client.post(outbound.endpoint_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"webhook request failed: {exc}", transient=True, maybe_delivered=True
            ) from exc
        if 200 <= response.status_code < 300:
            return f"{response.status_code}"
        transient = response.status_code >= 500 or response.status_code in (408, 429)
        raise DeliveryError(
            f"webhook answered {response.status_code}: {response.text[:200]}", transient=transient
        )
