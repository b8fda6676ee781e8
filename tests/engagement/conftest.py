"""Builders for engagement tests: shoppers, campaigns with steps, tracked events."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils import timezone

from commerce import services as commerce_services
from commerce.models import Event, Shopper, WriteKey
from engagement.models import Campaign, CampaignStep
from tests.support.identity import identity_secret  # noqa: F401  (a fixture, registered here)

_ids = itertools.count(1)


def make_shopper(**fields: Any) -> Shopper:
    n = next(_ids)
    defaults: dict[str, Any] = {
        "customer_id": f"cust-{n}",
        "email": f"shopper{n}@example.com",
        "first_name": f"Ann{n}",
        "email_consent": True,
        "time_zone": "UTC",
    }
    defaults.update(fields)
    return Shopper.objects.create(**defaults)


def make_campaign(
    trigger: str = "welcome",
    *,
    steps: list[dict[str, Any]] | None = None,
    **fields: Any,
) -> Campaign:
    campaign = Campaign.objects.create(
        name=fields.pop("name", f"{trigger} campaign"),
        trigger=trigger,
        status=fields.pop("status", Campaign.Status.ACTIVE),
        **fields,
    )
    for position, step in enumerate(
        steps or [{"subject": "Hello {{ first_name }}", "body": "<p>Welcome!</p>"}], start=1
    ):
        CampaignStep.objects.create(
            campaign=campaign,
            position=position,
            delay=step.pop("delay", dt.timedelta(0)),
            channel=step.pop("channel", "email"),
            subject=step.pop("subject", "Subject"),
            body=step.pop("body", "<p>Body</p>"),
            **step,
        )
    return campaign


def track(
    write_key: WriteKey,
    shopper: Shopper,
    name: str,
    *,
    type: str = "track",
    properties: dict[str, Any] | None = None,
    user_id: str | None = "",
    at: dt.datetime | None = None,
) -> Event:
    return Event.objects.create(
        source=write_key,
        message_id=f"msg-{next(_ids)}",
        type=type,
        name=name,
        shopper=shopper,
        user_id=user_id or "",
        properties=properties or {},
        timestamp=at or timezone.now(),
    )


def html_of(email: EmailMessage) -> str:
    """The HTML alternative of a sent email."""
    assert isinstance(email, EmailMultiAlternatives)
    content = email.alternatives[0][0]
    assert isinstance(content, str)
    return content


def search(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, pattern
    return found.group(1)


def process(*events: Event) -> int:
    return commerce_services.events_process(event_ids=[e.pk for e in events])


@pytest.fixture
def write_key(db: None) -> WriteKey:
    return WriteKey.objects.create(name="shop")


@pytest.fixture
def sms_outbox() -> Iterator[list[dict[str, Any]]]:
    from engagement.channels.sms import MemorySMSBackend

    MemorySMSBackend.outbox.clear()
    yield MemorySMSBackend.outbox
    MemorySMSBackend.outbox.clear()
