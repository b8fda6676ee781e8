"""Helpers shared by the engagement services: quiet hours, control groups, worker names, the outbox kick."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import validate_email
from django.db import transaction

from commerce.models import Shopper
from core.exceptions import ValidationError
from core.transactions import on_commit
from engagement.models import Campaign, Channel, Message

_CONSENT_FIELD: dict[str, str] = {
    Channel.EMAIL: "email_consent",
    Channel.SMS: "sms_consent",
    Channel.PUSH: "push_consent",
}
# Quiet hours and frequency caps concern messages that reach the shopper's devices.
_INTRUSIVE = {Channel.EMAIL, Channel.SMS, Channel.PUSH}


def _json(data: Mapping[str, Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(dict(data or {}), cls=DjangoJSONEncoder))
    return result


_process_tokens: dict[int, str] = {}


def worker_name() -> str:
    """This process's name on its claims: host, pid and a token drawn once per process.

    The token keeps a new process that reuses a killed one's pid (common in containers) from
    renewing or finishing the dead process's claims.
    """
    pid = os.getpid()
    token = _process_tokens.get(pid)
    if token is None:
        token = _process_tokens[pid] = secrets.token_hex(4)
    return f"{socket.gethostname()[:150]}:{pid}:{token}"


# --- Quiet hours and control groups ------------------------------------------------------


def shopper_zone(shopper: Shopper) -> ZoneInfo:
    try:
        return ZoneInfo(shopper.time_zone or settings.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def quiet_hours_release(
    *, when: dt.datetime, zone: ZoneInfo, start: dt.time | None, end: dt.time | None
) -> dt.datetime | None:
    """When quiet hours that contain ``when`` end (aware, UTC), or None outside them."""
    if start is None or end is None or start == end:
        return None
    local = when.astimezone(zone)
    now_time = local.time().replace(tzinfo=None)
    if start < end:
        if not start <= now_time < end:
            return None
        day = local.date()
    else:  # spans midnight, e.g. 21:00-08:00
        if end <= now_time < start:
            return None
        day = local.date() if now_time < end else local.date() + dt.timedelta(days=1)
    release = dt.datetime.combine(day, end, tzinfo=zone)
    return release.astimezone(dt.UTC)


def in_control_group(*, campaign: Campaign, shopper_id: int, occurrence_key: str) -> bool:
    """A stable draw: the same shopper and occurrence always land in the same group."""
    if campaign.transactional:
        return False
    percent = Decimal(campaign.control_percent)
    if percent <= 0:
        return False
    digest = hashlib.sha256(f"{campaign.pk}:{shopper_id}:{occurrence_key}".encode()).hexdigest()
    return int(digest[:8], 16) % 10_000 < int(percent * 100)


# --- Enrolment ---------------------------------------------------------------------------


def email_address_clean(value: str, *, field: str) -> str:
    """A plain mailbox address, stripped and lower-cased (as suppressions are), or ``""``.

    Refuses display names, lists and anything else that is not one address (a header could
    be smuggled through it).
    """
    address = (value or "").strip().lower()
    if not address:
        return ""
    try:
        validate_email(address)
    except DjangoValidationError:
        raise ValidationError(f"{field} is not a valid email address", code="invalid") from None
    if len(address) > 254:
        raise ValidationError(f"{field} is longer than 254 characters", code="invalid")
    return address


class _Kick:
    """One after-commit callback per transaction, however many enrolments it made."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.ran = False

    def __call__(self) -> None:
        from engagement import tasks

        self.ran = True

        batches = math.ceil(self.count / settings.PATRON_OUTBOX_BATCH_SIZE)
        for _ in range(min(batches, settings.PATRON_OUTBOX_PARALLELISM)):
            tasks.outbox_deliver.delay()


def outbox_kick(*, count: int) -> None:
    """After commit, start enough delivery tasks for ``count`` messages that may be due now."""
    if count <= 0:
        return
    db = transaction.get_connection()
    if db.in_atomic_block:
        for _, callback, _ in db.run_on_commit:
            # One that already ran (a test's captured callbacks) cannot carry more work.
            if isinstance(callback, _Kick) and not callback.ran:
                callback.count += count
                return
    on_commit(_Kick(count))


@dataclass
class _Approved:
    message: Message
    recipient: str
    push_subscriptions: tuple[Mapping[str, str], ...] = ()
