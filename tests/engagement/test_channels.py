"""Channels against real local servers: a webhook receiver and a push service stand-in."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email
import email.policy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from engagement import services
from engagement.channels.base import Outbound
from engagement.channels.email import compose
from engagement.channels.webhook import signature, signature_verify
from engagement.management.commands.engagement_vapid_keys import generate_keys
from engagement.models import Message, PushSubscription, WebhookEndpoint
from tests.engagement.conftest import make_campaign, make_shopper

pytestmark = pytest.mark.django_db


class _RecordingServer(ThreadingHTTPServer):
    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.requests: list[dict[str, Any]] = []
        self.statuses = statuses


class _Recorder(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        status = self.server.statuses.pop(0) if self.server.statuses else 201
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(statuses: list[int]) -> Iterator[_RecordingServer]:
    server = _RecordingServer(statuses)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: _RecordingServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_webhook_is_signed_and_keeps_its_delivery_id_across_retries(settings):
    settings.PATRON_OUTBOX_RETRY_BASE_SECONDS = 0
    shopper = make_shopper()
    with http_server([503, 200]) as server:
        endpoint = WebhookEndpoint.objects.create(
            name="crm", url=_url(server, "/hook"), secret="s3cret"
        )
        make_campaign(
            steps=[
                {
                    "channel": "webhook",
                    "webhook_endpoint": endpoint,
                    "body": '{"tag": "welcomed", "email": "{{ shopper.email }}"}',
                }
            ]
        )
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

        services.outbox_deliver_batch()
        message = Message.objects.get()
        assert (message.state, message.attempts) == ("scheduled", 1)
        assert "503" in message.last_error
        Message.objects.filter(pk=message.pk).update(due_at=timezone.now())
        services.outbox_deliver_batch()

    message.refresh_from_db()
    assert (message.state, message.attempts, message.confirmed) == ("sent", 2, True)
    first, second = server.requests
    assert (
        first["headers"]["x-patron-delivery"]
        == second["headers"]["x-patron-delivery"]
        == str(message.delivery_id)
    )
    for request in (first, second):
        assert signature_verify("s3cret", request["headers"]["x-patron-signature"], request["body"])
        assert not signature_verify(
            "wrong", request["headers"]["x-patron-signature"], request["body"]
        )
    payload = json.loads(second["body"])
    assert payload["type"] == "campaign.message"
    assert payload["data"] == {"tag": "welcomed", "email": shopper.email}
    assert payload["shopper"]["id"] == shopper.pk


def test_webhook_signature_rejects_stale_timestamps_and_changed_bodies():
    header = signature("k", 1_000, b'{"a":1}')
    assert signature_verify("k", header, b'{"a":1}', now=1_100)
    assert not signature_verify("k", header, b'{"a":1}', now=2_000)
    assert not signature_verify("k", header, b'{"a":2}', now=1_100)
    assert not signature_verify("k", "garbage", b"", now=1_100)


def test_webhook_client_errors_fail_without_retry():
    shopper = make_shopper()
    with http_server([400]) as server:
        endpoint = WebhookEndpoint.objects.create(name="crm", url=_url(server, "/hook"), secret="s")
        make_campaign(steps=[{"channel": "webhook", "webhook_endpoint": endpoint}])
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
        services.outbox_deliver_batch()
    message = Message.objects.get()
    assert message.state == "failed"
    assert message.reason.startswith("webhook answered 400")
    assert len(server.requests) == 1


def _browser_subscription(
    endpoint: str,
) -> tuple[ec.EllipticCurvePrivateKey, bytes, dict[str, str]]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    auth = b"0123456789abcdef"
    keys = {
        "endpoint": endpoint,
        "p256dh": base64.urlsafe_b64encode(public).decode().rstrip("="),
        "auth": base64.urlsafe_b64encode(auth).decode().rstrip("="),
    }
    return private, auth, keys


def test_web_push_is_encrypted_for_the_browser_and_signed_with_vapid(settings):
    private_key, public_key = generate_keys()
    settings.PATRON_VAPID_PRIVATE_KEY = private_key
    settings.PATRON_VAPID_PUBLIC_KEY = public_key
    settings.PATRON_PUSH_BACKEND = "engagement.channels.push.WebPushBackend"
    shopper = make_shopper(push_consent=True)
    with http_server([201, 410]) as server:
        browser, auth, keys = _browser_subscription(_url(server, "/push/abc"))
        _, _, gone_keys = _browser_subscription(_url(server, "/push/gone"))
        for sub in (keys, gone_keys):
            PushSubscription.objects.create(
                shopper=shopper, endpoint=sub["endpoint"], p256dh=sub["p256dh"], auth=sub["auth"]
            )
        make_campaign(
            steps=[
                {
                    "channel": "push",
                    "subject": "Back in stock",
                    "body": "Your lamp, {{ first_name }}",
                    "link_url": "https://shop.example/lamp",
                }
            ]
        )
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")

        services.outbox_deliver_batch()

    message = Message.objects.get()
    assert (message.state, message.provider_message_id) == ("sent", "push:1")
    delivered = server.requests[0]
    assert delivered["path"] == "/push/abc"
    assert delivered["headers"]["authorization"].startswith("vapid t=")
    assert f"k={public_key}" in delivered["headers"]["authorization"]
    assert delivered["headers"]["topic"] == f"m{message.pk}"
    assert delivered["headers"]["content-encoding"] == "aes128gcm"
    plain = http_ece.decrypt(
        delivered["body"], private_key=browser, auth_secret=auth, version="aes128gcm"
    )
    assert json.loads(plain) == {
        "title": "Back in stock",
        "body": f"Your lamp, {shopper.first_name}",
        "url": "https://shop.example/lamp",
        "id": str(message.delivery_id),
    }
    assert PushSubscription.objects.get(endpoint=gone_keys["endpoint"]).active is False
    assert PushSubscription.objects.get(endpoint=keys["endpoint"]).active is True


def test_push_without_consent_or_subscription_is_skipped():
    shopper = make_shopper(push_consent=False)
    subscribed = make_shopper(push_consent=True)
    make_campaign(steps=[{"channel": "push", "body": "x"}])
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")
    services.trigger_fire(trigger="welcome", shopper=subscribed, occurrence_key="w")
    services.outbox_deliver_batch()
    assert sorted(Message.objects.values_list("reason", flat=True)) == [
        "no push address",
        "no push address",
    ]


def test_sms_goes_through_the_configured_backend(settings, sms_outbox):
    settings.PATRON_SMS_BACKEND = "engagement.channels.sms.MemorySMSBackend"
    shopper = make_shopper(phone="+37120000000", sms_consent=True)
    no_consent = make_shopper(phone="+37120000001", sms_consent=False)
    make_campaign(steps=[{"channel": "sms", "body": "Hi {{ first_name }}, 10% off today"}])
    for s in (shopper, no_consent):
        services.trigger_fire(trigger="welcome", shopper=s, occurrence_key="w")

    services.outbox_deliver_batch()

    assert sms_outbox == [
        {
            "to": "+37120000000",
            "body": f"Hi {shopper.first_name}, 10% off today",
            "id": str(Message.objects.get(shopper=shopper).delivery_id),
        }
    ]
    assert Message.objects.get(shopper=no_consent).reason == "no consent"


def test_onsite_message_waits_for_the_widget():
    shopper = make_shopper()
    make_campaign(
        steps=[{"channel": "onsite", "subject": "Welcome back", "body": "Free shipping today"}]
    )
    services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="w")
    services.outbox_deliver_batch()
    message = Message.objects.get()
    assert (message.state, message.subject, message.body, message.seen_at) == (
        "sent",
        "Welcome back",
        "Free shipping today",
        None,
    )


def test_composed_email_parses_with_both_parts_and_non_ascii_subject():
    outbound = Outbound(
        message_id=1,
        delivery_id="d-1",
        idempotency_key="<msg-1.x@patron>",
        channel="email",
        recipient="liga@example.com",
        subject="Sveika, Līga — 15% atlaide",
        html="<p>Čau <b>Līga</b></p>\n.dot at line start\n" + "x" * 200,
        text="Čau Līga\n.dot at line start\n",
        headers={
            "List-Unsubscribe": "<https://shop.example/e/unsubscribe/t>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    data = compose(outbound, from_email="Patron Shop <shop@patron.localhost>")
    parsed = email.message_from_bytes(data, policy=email.policy.default)

    assert all(len(line) <= 78 for line in data.split(b"\r\n"))
    assert parsed["Subject"] == "Sveika, Līga — 15% atlaide"
    assert parsed["Message-ID"] == "<msg-1.x@patron>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content() == "Čau Līga\r\n.dot at line start\r\n"
    assert "<b>Līga</b>" in html.get_content()
    assert dt.datetime.now(dt.UTC) - parsed["Date"].datetime < dt.timedelta(minutes=1)
