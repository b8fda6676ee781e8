"""Engagement's business operations: enrolment, the outbox, consent, tracking, the triggers' work.

Reading guide:

- ``trigger_fire`` (the service other apps call) and ``broadcast_send`` enrol shoppers in
  campaigns and write every step's message into the outbox in the same transaction; the unique
  key (campaign, step, shopper, occurrence) makes a second firing a no-op.
- ``runs_end_for_events`` stops running sequences when a trigger's end event arrives.
- ``outbox_deliver`` claims due messages in batches (``FOR UPDATE SKIP LOCKED``), re-checks
  suppression, consent, pause, topics, quiet hours and frequency caps under a per-shopper
  channel lock, then hands each message to its channel over one reused connection, committing
  ``handed_at`` immediately before the point of no return and ``sent`` right after.
  Transactional campaigns (receipts, replies) skip the shopper's marketing choices (consent,
  unsubscribe, pause, topics, caps) but never a suppressed address; a run's ``email_to``
  replaces the shopper's address for its email steps.
- ``outbox_sweep`` resolves what a dead worker left in ``sending``: never handed over -> sent
  again; possibly handed over -> sent again only on channels whose provider deduplicates
  (webhooks by delivery id, web push by Topic), otherwise marked sent without confirmation
  (at most once: a shopper never gets the same email twice).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import random
import re
import secrets
import socket
import threading
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import validate_email
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Max, Q
from django.template import TemplateSyntaxError
from django.utils import timezone

from commerce import services as commerce_services
from commerce.models import Coupon, Event, Order, OrderLine, Product, Shopper
from core.exceptions import NotFound, ValidationError
from core.transactions import on_commit
from engagement import registry, selectors, tokens
from engagement.channels import backend_for
from engagement.channels.base import DeliveryError, Outbound
from engagement.models import (
    SUBSCRIBABLE_CHANNELS,
    Broadcast,
    Campaign,
    CampaignStep,
    Channel,
    Message,
    NpsResponse,
    Preference,
    ProductChange,
    ProductSnapshot,
    ProductView,
    ProductWatch,
    PushSubscription,
    Run,
    SegmentMembership,
    Suppression,
    Topic,
    Unsubscribe,
)
from engagement.registry import Occurrence
from engagement.rendering import Rendered, message_render

if TYPE_CHECKING:
    from engagement.channels.base import ChannelBackend

logger = logging.getLogger(__name__)

_CONSENT_FIELD: dict[str, str] = {
    Channel.EMAIL: "email_consent",
    Channel.SMS: "sms_consent",
    Channel.PUSH: "push_consent",
}
# Quiet hours and frequency caps concern messages that reach the shopper's devices.
_INTRUSIVE = {Channel.EMAIL, Channel.SMS, Channel.PUSH}
_LOCK_CLASS = {channel: 0x454E0 + index for index, channel in enumerate(Channel.values)}


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


def trigger_has_active_campaigns(*, trigger: str) -> bool:
    """Whether any campaign of ``trigger`` is active (a cheap guard before per-event work)."""
    return Campaign.objects.filter(trigger=trigger, status=Campaign.Status.ACTIVE).exists()


def _active_campaigns(trigger: str, when: dt.datetime) -> list[Campaign]:
    return list(
        Campaign.objects.filter(trigger=trigger, status=Campaign.Status.ACTIVE)
        .filter(Q(starts_at__isnull=True) | Q(starts_at__lte=when))
        .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=when))
        .select_related("segment")
        .prefetch_related("steps")
        .order_by("pk")
    )


def _step_messages(
    *, run: Run, campaign: Campaign, shopper: Shopper, now: dt.datetime
) -> list[Message]:
    messages = []
    due = now
    zone = shopper_zone(shopper)
    for step in sorted(campaign.steps.all(), key=lambda s: s.position):
        due = due + step.delay
        due_at = due
        if step.channel in _INTRUSIVE:
            due_at = (
                quiet_hours_release(
                    when=due,
                    zone=zone,
                    start=campaign.quiet_hours_start,
                    end=campaign.quiet_hours_end,
                )
                or due
            )
        messages.append(
            Message(
                campaign=campaign,
                step=step,
                run=run,
                shopper=shopper,
                occurrence_key=run.occurrence_key,
                channel=step.channel,
                due_at=due_at,
            )
        )
    return messages


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


@transaction.atomic
def trigger_fire(
    *,
    trigger: str,
    shopper: Shopper,
    occurrence_key: str,
    data: Mapping[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
    campaign_ids: Collection[int] | None = None,
    email_to: str = "",
    email_reply_to: str = "",
) -> list[Run]:
    """Enrol ``shopper`` in every active campaign of ``trigger`` whose audience includes them.

    Call inside the transaction that decided the trigger fired: the runs and the outbox rows
    commit with it. Idempotent per (campaign, shopper, ``occurrence_key``): firing again
    returns no new runs and writes no message. Control-group shoppers get a held-out run and
    no messages. ``data`` (JSON-serialisable) is kept on the run and given to the templates.
    ``email_to`` sends the email steps of these runs to that address instead of the
    shopper's (other channels are unaffected); ``email_reply_to`` is their Reply-To. Both must
    be plain addresses (``ValidationError`` otherwise). Suppressions apply to the address
    actually sent to. Returns the runs created now.
    """
    trigger_type = registry.trigger_get(trigger)
    if trigger_type is None:
        raise ValidationError(f"unknown trigger {trigger!r}", code="unknown_trigger")
    occurrence_key = occurrence_key.strip()
    if not occurrence_key or len(occurrence_key) > 200:
        raise ValidationError("occurrence_key must be 1-200 characters")
    email_to = email_address_clean(email_to, field="email_to")
    email_reply_to = email_address_clean(email_reply_to, field="email_reply_to")
    now = timezone.now()
    shopper = commerce_services.shopper_current(shopper)
    payload = _json(data)
    created: list[Run] = []
    scheduled = 0
    for campaign in _active_campaigns(trigger, now):
        if campaign_ids is not None and campaign.pk not in campaign_ids:
            continue
        if not selectors.audience_includes(campaign=campaign, shopper=shopper):
            continue
        held_out = in_control_group(
            campaign=campaign, shopper_id=shopper.pk, occurrence_key=occurrence_key
        )
        try:
            with transaction.atomic():
                run = Run.objects.create(
                    campaign=campaign,
                    shopper=shopper,
                    occurrence_key=occurrence_key,
                    data=payload,
                    email_to=email_to,
                    email_reply_to=email_reply_to,
                    state=Run.State.HELD_OUT if held_out else Run.State.ACTIVE,
                    started_at=now,
                    occurred_at=occurred_at or now,
                )
        except IntegrityError:  # this occurrence already enrolled this shopper
            continue
        created.append(run)
        if held_out:
            continue
        messages = _step_messages(run=run, campaign=campaign, shopper=shopper, now=now)
        Message.objects.bulk_create(messages, ignore_conflicts=True)
        scheduled += sum(1 for m in messages if m.due_at <= now + dt.timedelta(seconds=5))
    outbox_kick(count=scheduled)
    return created


def _offer_coupons_issue(approved: Sequence[_Approved], now: dt.datetime) -> None:
    """Issue the offer coupon of each approved broadcast message whose run has none yet.

    Call inside the claim transaction, after the send-time checks: a coupon exists only for a
    shopper whose message is about to go. The coupon is kept on the run (``data["coupon"]``,
    what templates read), so a later step or a retry reuses it.
    """
    by_campaign: dict[int, list[Message]] = defaultdict(list)
    for item in approved:
        message = item.message
        if "broadcast_id" in message.run.data and "coupon" not in message.run.data:
            by_campaign[message.campaign_id].append(message)
    for messages in by_campaign.values():
        runs = {m.run_id: m.run for m in messages}
        owners = [run.shopper for run in runs.values()]
        coupons = _coupon_for_offer(messages[0].campaign, owners, now)
        for run, coupon in zip(runs.values(), coupons, strict=True):
            run.data = {
                **run.data,
                "coupon": {
                    "code": coupon.code,
                    "kind": coupon.kind,
                    "value": str(coupon.value),
                    "valid_until": coupon.valid_until.isoformat() if coupon.valid_until else None,
                },
            }
            Run.objects.filter(pk=run.pk).update(data=run.data)


def _offer_coupon_withdraw(message: Message) -> None:
    """A broadcast message failed for good: its coupon goes unless the run sent another one."""
    code = (message.run.data.get("coupon") or {}).get("code")
    if not code:
        return
    sent = Message.objects.filter(run_id=message.run_id, state=Message.State.SENT).exists()
    if not sent:
        Coupon.objects.filter(code=code, owner_id=message.shopper_id, times_used=0).update(
            active=False
        )


def _coupon_for_offer(
    campaign: Campaign, owners: Sequence[Shopper], now: dt.datetime
) -> list[Coupon]:
    options = campaign.trigger_options.get("coupon") if campaign.trigger_options else None
    if not options or not owners:
        return []
    hours = int(options.get("valid_hours", 48))
    return commerce_services.coupons_issue(
        kind=str(options.get("kind", Coupon.Kind.PERCENT)),
        value=commerce_services.money(options.get("value", "10"), field="coupon value"),
        source=Coupon.Source.CAMPAIGN,
        owners=owners,
        prefix=str(options.get("prefix", "")),
        valid_until=now + dt.timedelta(hours=hours),
        min_spend=commerce_services.money(options.get("min_spend", "0"), field="min spend"),
    )


@transaction.atomic
def _broadcast_chunk(*, broadcast: Broadcast, campaign: Campaign, shopper_ids: list[int]) -> int:
    now = timezone.now()
    occurrence_key = f"broadcast:{broadcast.pk}"
    done = set(
        Run.objects.filter(
            campaign=campaign, occurrence_key=occurrence_key, shopper_id__in=shopper_ids
        ).values_list("shopper_id", flat=True)
    )
    shoppers = [s for s in Shopper.objects.filter(pk__in=shopper_ids).order_by("pk")]
    shoppers = [s for s in shoppers if s.pk not in done]
    if not shoppers:
        return 0
    held = {
        s.pk
        for s in shoppers
        if in_control_group(campaign=campaign, shopper_id=s.pk, occurrence_key=occurrence_key)
    }
    # The offer's coupons are issued at send time, to the shoppers whose message is approved
    # (consent, unsubscribes, suppressions and caps decided), not to everyone enrolled here.
    runs = []
    for shopper in shoppers:
        data: dict[str, Any] = {"broadcast_id": broadcast.pk}
        runs.append(
            Run(
                campaign=campaign,
                shopper=shopper,
                occurrence_key=occurrence_key,
                data=data,
                state=Run.State.HELD_OUT if shopper.pk in held else Run.State.ACTIVE,
                started_at=now,
                occurred_at=broadcast.send_at,
            )
        )
    Run.objects.bulk_create(runs)
    by_shopper = {s.pk: s for s in shoppers}
    messages: list[Message] = []
    for run in runs:
        if run.state == Run.State.ACTIVE:
            messages += _step_messages(
                run=run, campaign=campaign, shopper=by_shopper[run.shopper_id], now=now
            )
    Message.objects.bulk_create(messages, ignore_conflicts=True)
    Broadcast.objects.filter(pk=broadcast.pk).update(enrolled=F("enrolled") + len(runs))
    outbox_kick(count=sum(1 for m in messages if m.due_at <= now))
    return len(runs)


def broadcast_send(*, broadcast_id: int, chunk_size: int = 1000) -> int:
    """Enrol a broadcast campaign's whole audience, once (resumable after a crash).

    Claimed with a conditional update; each chunk of shoppers commits with its runs, messages
    and coupons, so a resumed broadcast skips the shoppers already enrolled.
    """
    now = timezone.now()
    claimed = (
        Broadcast.objects.filter(pk=broadcast_id, finished_at__isnull=True, send_at__lte=now)
        .filter(
            Q(started_at__isnull=True)
            | Q(started_at__lt=now - dt.timedelta(seconds=settings.PATRON_BROADCAST_LEASE_SECONDS))
        )
        .update(started_at=now)
    )
    if not claimed:
        return 0
    broadcast = Broadcast.objects.select_related("campaign__segment").get(pk=broadcast_id)
    campaign = broadcast.campaign
    if campaign.status != Campaign.Status.ACTIVE:
        raise ValidationError("only an active campaign can be broadcast", code="inactive")
    campaign = (
        Campaign.objects.prefetch_related("steps").select_related("segment").get(pk=campaign.pk)
    )
    enrolled = 0
    ids = selectors.audience_shoppers(campaign).order_by("pk").values_list("pk", flat=True)
    chunk: list[int] = []
    for shopper_id in ids.iterator(chunk_size=chunk_size):
        chunk.append(shopper_id)
        if len(chunk) >= chunk_size:
            enrolled += _broadcast_chunk(broadcast=broadcast, campaign=campaign, shopper_ids=chunk)
            chunk = []
    if chunk:
        enrolled += _broadcast_chunk(broadcast=broadcast, campaign=campaign, shopper_ids=chunk)
    Broadcast.objects.filter(pk=broadcast_id).update(finished_at=timezone.now())
    return enrolled


def broadcasts_due_send() -> int:
    ids = list(
        Broadcast.objects.filter(
            finished_at__isnull=True,
            send_at__lte=timezone.now(),
            campaign__status=Campaign.Status.ACTIVE,
        ).values_list("pk", flat=True)
    )
    return sum(broadcast_send(broadcast_id=pk) for pk in ids)


# --- Ending sequences --------------------------------------------------------------------


def _occurrence(run: Run) -> Occurrence:
    return Occurrence(
        key=run.occurrence_key,
        data=run.data,
        fired_at=run.occurred_at,
        campaign_id=run.campaign_id,
        run_id=run.pk,
        email_to=run.email_to,
        email_reply_to=run.email_reply_to,
    )


def run_stop(*, run: Run, reason: str) -> int:
    """Stop a run and cancel its scheduled messages; returns how many were cancelled.

    Call inside a transaction holding the run's row lock (or on a run no one else updates).
    """
    Run.objects.filter(pk=run.pk, state=Run.State.ACTIVE).update(
        state=Run.State.STOPPED, stop_reason=reason[:200], stopped_at=timezone.now()
    )
    return Message.objects.filter(run_id=run.pk, state=Message.State.SCHEDULED).update(
        state=Message.State.CANCELLED, reason=f"sequence ended: {reason}"[:200]
    )


def runs_end_for_events(events: Sequence[Event]) -> None:
    """Commerce event handler: stop the running sequences these events end. Idempotent."""
    runs_end(events=events)


def runs_end(*, events: Sequence[Event]) -> int:
    """Stop the running sequences these events end; returns how many stopped."""
    if not events:
        return 0
    key = commerce_services.event_handler_key(events[0])
    triggers = {t.key: t for t in registry.triggers_ended_by(key)}
    if not triggers:
        return 0
    by_shopper: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        if event.shopper_id is not None:
            by_shopper[event.shopper_id].append(event)
    if not by_shopper:
        return 0
    runs = (
        Run.objects.select_for_update()
        .filter(
            state=Run.State.ACTIVE,
            shopper_id__in=list(by_shopper),
            campaign__trigger__in=list(triggers),
        )
        .select_related("campaign")
        .order_by("pk")
    )
    stopped = 0
    for run in runs:
        trigger = triggers[run.campaign.trigger]
        occurrence = _occurrence(run)
        for event in by_shopper[run.shopper_id]:
            if event.timestamp < run.occurred_at:
                continue
            if trigger.ends_on_match is not None and not trigger.ends_on_match(event, occurrence):
                continue
            run_stop(run=run, reason=f"{key} received")
            stopped += 1
            break
    return stopped


# --- The outbox: claiming and send-time checks -------------------------------------------


_CLAIM_SQL = """
UPDATE engagement_message SET state = 'sending', claimed_by = %s, claimed_at = %s,
       attempts = attempts + 1, handed_at = NULL
WHERE id IN (
    SELECT m.id FROM engagement_message m
    WHERE m.state = 'scheduled' AND m.due_at <= %s
      AND NOT EXISTS (
          SELECT 1 FROM engagement_campaign c
          WHERE c.id = m.campaign_id AND c.status IN ('paused', 'draft'))
    ORDER BY m.due_at, m.id
    LIMIT %s
    FOR UPDATE OF m SKIP LOCKED)
RETURNING id
"""


@dataclass
class _Approved:
    message: Message
    recipient: str
    push_subscriptions: tuple[Mapping[str, str], ...] = ()


def _lock_shopper_channels(messages: Sequence[Message]) -> None:
    """Serialise send-time checks per (shopper, channel), in a fixed order (no deadlocks)."""
    keys = sorted({(_LOCK_CLASS[m.channel], m.shopper_id % 2_147_483_647) for m in messages})
    if not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock(a, b)) FROM unnest(%s::int[], %s::int[]) AS t(a, b)",
            [[k[0] for k in keys], [k[1] for k in keys]],
        )


def _recipient(message: Message, push: Mapping[int, list[PushSubscription]]) -> str:
    shopper = message.shopper
    if message.channel == Channel.EMAIL:
        address = (message.run.email_to or shopper.email).strip().lower()
        try:
            validate_email(address)
        except DjangoValidationError:
            return ""  # none, or one that could not be a mailbox (or smuggle headers)
        return address
    if message.channel == Channel.SMS:
        return shopper.phone.strip()
    if message.channel == Channel.PUSH:
        subs = push.get(shopper.pk, [])
        return subs[0].endpoint if subs else ""
    if message.channel == Channel.WEBHOOK:
        endpoint = message.step.webhook_endpoint
        return endpoint.url if endpoint is not None else ""
    return f"shopper:{shopper.pk}"


def _set_outcome(message: Message, *, state: str, reason: str, **fields: Any) -> None:
    Message.objects.filter(pk=message.pk).update(state=state, reason=reason[:200], **fields)


@transaction.atomic
def outbox_claim(*, worker: str, limit: int) -> list[_Approved]:
    """Claim up to ``limit`` due messages and run the send-time checks on them.

    Returns the messages approved for delivery (left in ``sending``, claimed by ``worker``);
    the others are skipped, cancelled or postponed in this same transaction. The per-shopper
    channel locks make the frequency cap exact under concurrent workers.
    """
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [worker, now, now, limit])
        ids = [row[0] for row in cursor.fetchall()]
    if not ids:
        return []
    messages = list(
        Message.objects.filter(pk__in=ids).select_related("run", "shopper").order_by("due_at", "pk")
    )
    # A batch spans few campaigns and steps: load each once rather than once per row.
    campaigns = Campaign.objects.select_related("topic").in_bulk({m.campaign_id for m in messages})
    steps = CampaignStep.objects.select_related("webhook_endpoint").in_bulk(
        {m.step_id for m in messages}
    )
    for message in messages:
        message.campaign = campaigns[message.campaign_id]
        message.step = steps[message.step_id]
    _lock_shopper_channels(messages)

    shopper_ids = {m.shopper_id for m in messages}
    unsubscribed = set(
        Unsubscribe.objects.filter(shopper_id__in=shopper_ids).values_list("shopper_id", "channel")
    )
    preferences = {
        p.shopper_id: p
        for p in Preference.objects.filter(shopper_id__in=shopper_ids).prefetch_related(
            "topics_opted_out"
        )
    }
    addresses = {(m.channel, _recipient(m, {})) for m in messages if m.channel in _INTRUSIVE}
    suppressed = {
        (s.channel, s.address): s.reason
        for s in Suppression.objects.filter(
            channel__in={a[0] for a in addresses}, address__in={a[1] for a in addresses}
        )
    }
    push: dict[int, list[PushSubscription]] = defaultdict(list)
    if any(m.channel == Channel.PUSH for m in messages):
        for sub in PushSubscription.objects.filter(
            shopper_id__in=shopper_ids, active=True
        ).order_by("pk"):
            push[sub.shopper_id].append(sub)

    capped = [
        m for m in messages if m.campaign.frequency_cap is not None and not m.campaign.transactional
    ]
    recent: dict[tuple[int, str], list[dt.datetime]] = defaultdict(list)
    if capped:
        longest = max(m.campaign.frequency_cap_hours for m in capped)
        cutoff = now - dt.timedelta(hours=longest)
        rows = (
            Message.objects.filter(
                shopper_id__in={m.shopper_id for m in capped},
                channel__in={m.channel for m in capped},
            )
            .filter(
                Q(state=Message.State.SENT, sent_at__gte=cutoff)
                | Q(state=Message.State.SENDING, claimed_at__gte=cutoff, handed_at__isnull=False)
                | Q(state=Message.State.SENDING, claimed_at__gte=cutoff, claimed_by__gt="")
            )
            .exclude(pk__in=ids)
            # Receipts and replies do not use up the shopper's allowance of marketing.
            .exclude(campaign__transactional=True)
            .values_list("shopper_id", "channel", "sent_at", "claimed_at")
        )
        for shopper_id, channel, sent_at, claimed_at in rows:
            when = sent_at or claimed_at
            if when is not None:
                recent[(shopper_id, channel)].append(when)

    approved: list[_Approved] = []
    for message in messages:
        campaign, run, shopper = message.campaign, message.run, message.shopper
        channel = message.channel
        if run.state == Run.State.STOPPED:
            _set_outcome(
                message,
                state=Message.State.CANCELLED,
                reason=f"sequence ended: {run.stop_reason}",
            )
            continue
        if campaign.status == Campaign.Status.ARCHIVED:
            _set_outcome(message, state=Message.State.CANCELLED, reason="campaign archived")
            continue
        trigger = registry.trigger_get(campaign.trigger)
        ended = (
            trigger is not None
            and trigger.ends_when is not None
            and trigger.ends_when(shopper, _occurrence(run))
        )
        if ended and trigger is not None:
            run_stop(run=run, reason=f"end condition of {trigger.label}")
            _set_outcome(
                message,
                state=Message.State.CANCELLED,
                reason=f"sequence ended: end condition of {trigger.label}",
            )
            continue
        recipient = _recipient(message, push)
        if not recipient:
            _set_outcome(message, state=Message.State.SKIPPED, reason=f"no {channel} address")
            continue
        if channel in SUBSCRIBABLE_CHANNELS:
            # An address that bounced or complained is never sent to, whatever the message.
            if (channel, recipient) in suppressed:
                _set_outcome(
                    message,
                    state=Message.State.SKIPPED,
                    reason=f"suppressed ({suppressed[(channel, recipient)]})",
                )
                continue
            # The shopper's marketing choices (consent, unsubscribe, pause, topics) do not
            # stop a transactional message: a receipt or a reply they asked for.
            if campaign.transactional:
                pass
            elif (shopper.pk, channel) in unsubscribed:
                _set_outcome(message, state=Message.State.SKIPPED, reason="unsubscribed")
                continue
            elif campaign.requires_consent and not getattr(shopper, _CONSENT_FIELD[channel]):
                _set_outcome(message, state=Message.State.SKIPPED, reason="no consent")
                continue
            preference = None if campaign.transactional else preferences.get(shopper.pk)
            if preference is not None:
                if preference.paused_until and preference.paused_until > now:
                    _set_outcome(message, state=Message.State.SKIPPED, reason="paused by shopper")
                    continue
                if campaign.topic_id is not None and any(
                    t.pk == campaign.topic_id for t in preference.topics_opted_out.all()
                ):
                    _set_outcome(
                        message,
                        state=Message.State.SKIPPED,
                        reason=f"opted out of {campaign.topic}",
                    )
                    continue
        if channel == Channel.WEBHOOK:
            endpoint = message.step.webhook_endpoint
            if endpoint is None or not endpoint.active:
                _set_outcome(message, state=Message.State.SKIPPED, reason="endpoint inactive")
                continue
        if channel in _INTRUSIVE:
            release = quiet_hours_release(
                when=now,
                zone=shopper_zone(shopper),
                start=campaign.quiet_hours_start,
                end=campaign.quiet_hours_end,
            )
            if release is not None:
                Message.objects.filter(pk=message.pk).update(
                    state=Message.State.SCHEDULED,
                    due_at=release,
                    postponed=F("postponed") + 1,
                    attempts=F("attempts") - 1,
                    claimed_by="",
                    claimed_at=None,
                    reason=f"quiet hours: postponed to {release.isoformat()}",
                )
                continue
            if campaign.frequency_cap is not None and not campaign.transactional:
                window_start = now - dt.timedelta(hours=campaign.frequency_cap_hours)
                sent_recently = [t for t in recent[(shopper.pk, channel)] if t >= window_start]
                if len(sent_recently) >= campaign.frequency_cap:
                    _set_outcome(message, state=Message.State.SKIPPED, reason="frequency cap")
                    continue
            if not campaign.transactional:
                recent[(shopper.pk, channel)].append(now)
        approved.append(
            _Approved(
                message=message,
                recipient=recipient,
                push_subscriptions=tuple(
                    {"endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth}
                    for s in push.get(shopper.pk, [])
                ),
            )
        )
    _offer_coupons_issue(approved, now)
    return approved


# --- The outbox: delivery ----------------------------------------------------------------


def _retry_delay(attempts: int) -> dt.timedelta:
    base = min(settings.PATRON_OUTBOX_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0), 3600)
    return dt.timedelta(seconds=base * (1 + random.random() * 0.2))


def _render(message: Message) -> Rendered:
    return message_render(
        message_id=message.pk,
        shopper=message.shopper,
        campaign=message.campaign,
        step=message.step,
        trigger=registry.trigger_get(message.campaign.trigger),
        occurrence=_occurrence(message.run),
    )


def _outbound(item: _Approved, rendered: Rendered) -> Outbound:
    message = item.message
    endpoint = message.step.webhook_endpoint
    payload: dict[str, Any] = {}
    if message.channel == Channel.WEBHOOK:
        try:
            body = json.loads(rendered.text) if rendered.text.strip().startswith("{") else None
        except ValueError:
            body = None
        payload = {
            "type": "campaign.message",
            "delivery_id": str(message.delivery_id),
            "campaign": {"id": message.campaign_id, "name": message.campaign.name},
            "step": message.step.position,
            "trigger": message.campaign.trigger,
            "occurrence_key": message.occurrence_key,
            "shopper": {
                "id": message.shopper_id,
                "customer_id": message.shopper.customer_id,
                "email": message.shopper.email,
            },
            "data": body if body is not None else {"text": rendered.text},
        }
    return Outbound(
        message_id=message.pk,
        delivery_id=str(message.delivery_id),
        idempotency_key=message.message_id_header,
        channel=message.channel,
        recipient=item.recipient,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        link_url=rendered.link_url,
        headers=rendered.headers,
        payload=payload,
        shopper_id=message.shopper_id,
        endpoint_url=endpoint.url if endpoint is not None else "",
        endpoint_secret=endpoint.secret if endpoint is not None else "",
        push_subscriptions=item.push_subscriptions,
    )


def _delivery_failed(
    message: Message, error: DeliveryError, *, idempotent: bool, worker: str
) -> str:
    mine = Message.objects.filter(pk=message.pk, claimed_by=worker, state=Message.State.SENDING)
    if error.maybe_delivered and not idempotent:
        mine.update(
            state=Message.State.SENT,
            sent_at=timezone.now(),
            confirmed=False,
            reason="outcome unknown after hand-over; not sent again",
            last_error=str(error)[:2000],
        )
        return Message.State.SENT
    if error.transient and message.attempts < settings.PATRON_OUTBOX_MAX_ATTEMPTS:
        mine.update(
            state=Message.State.SCHEDULED,
            due_at=timezone.now() + _retry_delay(message.attempts),
            claimed_by="",
            claimed_at=None,
            handed_at=None,
            reason=f"retrying after attempt {message.attempts}",
            last_error=str(error)[:2000],
        )
        return Message.State.SCHEDULED
    if mine.update(
        state=Message.State.FAILED, reason=str(error)[:200], last_error=str(error)[:2000]
    ):
        _offer_coupon_withdraw(message)
    return Message.State.FAILED


_HANDED_SQL = """
UPDATE engagement_message AS m
SET handed_at = %s, recipient = v.recipient, subject = v.subject, body = v.body
FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS v(id, recipient, subject, body)
WHERE m.id = v.id AND m.state = 'sending' AND m.claimed_by = %s
RETURNING m.id
"""

_SENT_SQL = """
UPDATE engagement_message AS m
SET state = 'sent', sent_at = %s, confirmed = true, reason = '', provider_message_id = v.provider_id
FROM unnest(%s::bigint[], %s::text[]) AS v(id, provider_id)
WHERE m.id = v.id AND m.claimed_by = %s AND m.state IN ('sending', 'sent')
"""


def _mark_handed(worker: str, prepared: Sequence[tuple[_Approved, Rendered, Outbound]]) -> set[int]:
    """Commit that these messages are about to be handed over; the ids still ours come back.

    Runs in its own (autocommit) transaction: the commit must precede the hand-over.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _HANDED_SQL,
            [
                timezone.now(),
                [o.message_id for _, _, o in prepared],
                [o.recipient[:500] for _, _, o in prepared],
                [r.subject[:300] for _, r, _ in prepared],
                [(r.text or r.html)[:20_000] for _, r, _ in prepared],
                worker,
            ],
        )
        return {row[0] for row in cursor.fetchall()}


def _mark_sent(worker: str, sent: Sequence[tuple[int, str]]) -> None:
    if not sent:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            _SENT_SQL,
            [timezone.now(), [i for i, _ in sent], [p[:255] for _, p in sent], worker],
        )


def _deliver_channel(channel: str, items: Sequence[_Approved], worker: str) -> dict[str, int]:
    """Deliver approved messages of one channel, a group at a time.

    Each group's hand-over commit also records the previous group's successes (one commit per
    group): a worker killed in between leaves those handed over and unrecorded, which the
    sweeper resolves as for any other possibly-delivered message, without sending them again.
    """
    outcome: dict[str, int] = defaultdict(int)
    backend: ChannelBackend = backend_for(channel)
    size = max(1, backend.group_size)
    unrecorded: list[tuple[int, str]] = []
    try:
        for start in range(0, len(items), size):
            prepared: dict[int, tuple[_Approved, Rendered, Outbound]] = {}
            for item in items[start : start + size]:
                message = item.message
                try:
                    rendered = _render(message)
                except (
                    TemplateSyntaxError,
                    LookupError,
                    AttributeError,
                    TypeError,
                    ValueError,
                ) as exc:
                    _set_outcome(
                        message,
                        state=Message.State.FAILED,
                        reason=f"template error: {exc}",
                        last_error=repr(exc)[:2000],
                    )
                    outcome["failed"] += 1
                    continue
                prepared[message.pk] = (item, rendered, _outbound(item, rendered))
            if not prepared:
                continue

            def handing(
                outbounds: Sequence[Outbound],
                prepared: dict[int, tuple[_Approved, Rendered, Outbound]] = prepared,
            ) -> set[int]:
                with transaction.atomic():
                    _mark_sent(worker, unrecorded)
                    ours = _mark_handed(worker, [prepared[o.message_id] for o in outbounds])
                unrecorded.clear()
                return ours

            results = backend.send_many([p[2] for p in prepared.values()], handing=handing)
            for (item, _, _), result in zip(prepared.values(), results, strict=True):
                if result is None:
                    outcome["lost"] += 1
                elif isinstance(result, DeliveryError):
                    state = _delivery_failed(
                        item.message, result, idempotent=backend.idempotent, worker=worker
                    )
                    outcome[state] += 1
                else:
                    unrecorded.append((item.message.pk, result))
                    outcome["sent"] += 1
        _mark_sent(worker, unrecorded)
    finally:
        backend.close()
        gone = getattr(backend, "gone", None)
        if gone:
            PushSubscription.objects.filter(endpoint__in=gone).update(active=False)
    return outcome


def outbox_deliver_batch(*, worker: str | None = None, limit: int | None = None) -> dict[str, int]:
    """Claim one batch of due messages and deliver the approved ones, channel by channel."""
    worker = worker or worker_name()
    approved = outbox_claim(worker=worker, limit=limit or settings.PATRON_OUTBOX_BATCH_SIZE)
    by_channel: dict[str, list[_Approved]] = defaultdict(list)
    for item in approved:
        by_channel[item.message.channel].append(item)
    totals: dict[str, int] = defaultdict(int, claimed=len(approved))
    for channel, items in by_channel.items():
        for key, value in _deliver_channel(channel, items, worker).items():
            totals[key] += value
    return dict(totals)


class LeaseKeeper:
    """Renews the lease on the messages ``worker`` has claimed, from a thread, while it lives.

    Every ``PATRON_OUTBOX_LEASE_SECONDS / 3`` seconds it sets ``claimed_at`` to now on this
    worker's ``sending`` rows, on its own database connection. A worker that is killed stops
    renewing, and ``outbox_sweep`` (beat, every 15 s) takes its messages back once the lease
    has run out: a SIGKILLed worker's messages go out again within about lease + 15 s, while a
    live worker waiting on a slow server keeps them. Use as a context manager around delivery.
    """

    def __init__(self, worker: str, *, interval: float | None = None) -> None:
        self.worker = worker
        self.interval = (
            interval if interval is not None else max(settings.PATRON_OUTBOX_LEASE_SECONDS / 3, 0.5)
        )
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="outbox-lease", daemon=True)
        self.renewals = 0

    def renew(self) -> int:
        """Extend this worker's leases now; returns how many messages it holds."""
        return Message.objects.filter(claimed_by=self.worker, state=Message.State.SENDING).update(
            claimed_at=timezone.now()
        )

    def _run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                try:
                    self.renew()
                    self.renewals += 1
                except DatabaseError:  # the database is away: try again at the next beat
                    logger.warning("outbox lease renewal for %s failed", self.worker, exc_info=True)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection

    def __enter__(self) -> LeaseKeeper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def outbox_deliver(*, max_seconds: float = 50.0, limit: int | None = None) -> int:
    """Deliver batches until nothing is due or ``max_seconds`` pass; returns messages sent.

    Holds a ``LeaseKeeper`` for this process's claims while it works.
    """
    worker = worker_name()
    deadline = timezone.now() + dt.timedelta(seconds=max_seconds)
    sent = 0
    with LeaseKeeper(worker):
        while timezone.now() < deadline:
            totals = outbox_deliver_batch(worker=worker, limit=limit)
            sent += totals.get("sent", 0)
            if not totals.get("claimed"):
                break
    return sent


def outbox_due_count() -> int:
    return Message.objects.filter(state=Message.State.SCHEDULED, due_at__lte=timezone.now()).count()


def outbox_sweep(*, lease_seconds: int | None = None, limit: int = 1000) -> dict[str, int]:
    """Resolve messages a dead worker left in ``sending``: their lease was not renewed in time.

    Live workers renew their leases (``LeaseKeeper``) every third of the lease, so a claim
    older than ``PATRON_OUTBOX_LEASE_SECONDS`` belongs to a worker that is gone.

    Never handed over (no ``handed_at``): back to ``scheduled``, sent again. Possibly handed
    over: sent again only on an idempotent channel (the provider deduplicates by our key);
    otherwise marked ``sent`` with ``confirmed=False``: at most once.
    """
    lease = settings.PATRON_OUTBOX_LEASE_SECONDS if lease_seconds is None else lease_seconds
    cutoff = timezone.now() - dt.timedelta(seconds=lease)
    result = {"requeued": 0, "unconfirmed": 0}
    idempotent: dict[str, bool] = {}
    with transaction.atomic():
        stuck = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(state=Message.State.SENDING, claimed_at__lt=cutoff)
            .order_by("pk")[:limit]
        )
        requeue: list[int] = []
        unconfirmed: list[int] = []
        for message in stuck:
            if message.channel not in idempotent:
                idempotent[message.channel] = backend_for(message.channel).idempotent
            if message.handed_at is None or idempotent[message.channel]:
                requeue.append(message.pk)
            else:
                unconfirmed.append(message.pk)
        if requeue:
            Message.objects.filter(pk__in=requeue).update(
                state=Message.State.SCHEDULED,
                due_at=timezone.now(),
                claimed_by="",
                claimed_at=None,
                handed_at=None,
                reason="requeued: its worker was lost",
            )
        if unconfirmed:
            Message.objects.filter(pk__in=unconfirmed).update(
                state=Message.State.SENT,
                sent_at=F("handed_at"),
                confirmed=False,
                reason="worker lost after hand-over; not sent again",
            )
        result = {"requeued": len(requeue), "unconfirmed": len(unconfirmed)}
        outbox_kick(count=len(requeue))
    return result


@transaction.atomic
def message_requeue(*, message: Message) -> bool:
    """Admin: send a failed, skipped or cancelled message again now."""
    updated = Message.objects.filter(
        pk=message.pk,
        state__in=[Message.State.FAILED, Message.State.SKIPPED, Message.State.CANCELLED],
    ).update(
        state=Message.State.SCHEDULED,
        due_at=timezone.now(),
        reason="requeued by staff",
        claimed_by="",
        handed_at=None,
    )
    outbox_kick(count=updated)
    return bool(updated)


@transaction.atomic
def message_cancel(*, message: Message, reason: str = "cancelled by staff") -> bool:
    return bool(
        Message.objects.filter(pk=message.pk, state=Message.State.SCHEDULED).update(
            state=Message.State.CANCELLED, reason=reason[:200]
        )
    )


# --- Opens, clicks, unsubscribes, preferences, NPS ---------------------------------------


# Link scanners: mail security gateways (Microsoft Defender Safe Links, Proofpoint URL
# Defense, Mimecast, Barracuda, Cisco/IronPort), image proxies and link previewers fetch every
# link of a message, usually within seconds of delivery and often with HEAD. The rule:
# a fetch records an open or a click only when it is a GET, from a browser-like user agent
# (``Mozilla/``) that names no known scanner, made more than PATRON_LINK_SCANNER_SECONDS after
# the message was handed to the provider (scanners fetch on delivery; people take longer).
# Any other fetch still gets its pixel or redirect, and records nothing. NPS answers are never
# recorded by a fetch at all: the score link opens a page the shopper confirms (POST).
_SCANNER_AGENTS = re.compile(
    r"bot\b|crawler|spider|preview|scanner|safelinks|safe links|microsoft office|"
    r"ms-office|outlook-|proofpoint|mimecast|barracuda|ironport|symantec|forcepoint|"
    r"trendmicro|sophos|fortiguard|zscaler|headless|python|curl|wget|go-http|java/|"
    r"okhttp|libwww|httpclient|axios|node-fetch|imageproxy|mailproxy",
    re.IGNORECASE,
)
# Gmail and Yahoo fetch images through their proxies when the reader opens the message, so
# for the open pixel these are people; they never fetch links.
_IMAGE_PROXIES = re.compile(r"GoogleImageProxy|YahooMailProxy", re.IGNORECASE)


def link_fetch_is_human(
    *, method: str, user_agent: str, handed_at: dt.datetime | None, image: bool = False
) -> bool:
    """Whether a fetch of a tracked link or pixel counts as the shopper's (see the rule above).

    ``handed_at`` is when the message went to the provider (None: unknown, no time test).
    """
    if method.upper() != "GET":
        return False
    if image and _IMAGE_PROXIES.search(user_agent):
        return True
    if not user_agent.startswith("Mozilla/") or _SCANNER_AGENTS.search(user_agent):
        return False
    if handed_at is not None:
        quiet = dt.timedelta(seconds=settings.PATRON_LINK_SCANNER_SECONDS)
        if timezone.now() < handed_at + quiet:
            return False
    return True


def message_open_record(*, token: str, method: str = "GET", user_agent: str = "") -> bool:
    """Record the first open of a message; returns whether this call recorded it.

    ``NotFound`` for a bad token. A fetch that ``link_fetch_is_human`` refuses records nothing.
    """
    message_id = tokens.read("open", token)
    if not isinstance(message_id, int):
        raise NotFound("this link is not valid", code="bad_token")
    message = Message.objects.filter(pk=message_id).only("pk", "handed_at", "sent_at").first()
    if message is None:
        raise NotFound("this link is not valid", code="bad_token")
    if not link_fetch_is_human(
        method=method,
        user_agent=user_agent,
        handed_at=message.handed_at or message.sent_at,
        image=True,
    ):
        return False
    return bool(
        Message.objects.filter(pk=message_id, opened_at__isnull=True).update(
            opened_at=timezone.now()
        )
    )


def message_click_record(*, token: str, method: str = "GET", user_agent: str = "") -> str:
    """Record the first click of a message (and its open); returns the URL to redirect to.

    ``NotFound`` for a bad token. The redirect is given to every fetch; the click is recorded
    only for one that ``link_fetch_is_human`` accepts.
    """
    value = tokens.read("click", token)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)):
        raise NotFound("this link is not valid", code="bad_token")
    message_id, url = value
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise NotFound("this link is not valid", code="bad_token")
    message = Message.objects.filter(pk=message_id).only("pk", "handed_at", "sent_at").first()
    if message is None or not link_fetch_is_human(
        method=method, user_agent=user_agent, handed_at=message.handed_at or message.sent_at
    ):
        return url
    now = timezone.now()
    Message.objects.filter(pk=message_id, clicked_at__isnull=True).update(
        clicked_at=now, clicked_url=url[:2000]
    )
    Message.objects.filter(pk=message_id, opened_at__isnull=True).update(opened_at=now)
    return url


@transaction.atomic
def shopper_unsubscribe(
    *, shopper: Shopper, channel: str, source: str, message: Message | None = None
) -> bool:
    """Stop ``channel`` for this shopper: record it, drop the consent, skip what is scheduled.

    Returns False when the shopper had already unsubscribed (nothing changes then).
    """
    if channel not in SUBSCRIBABLE_CHANNELS:
        raise ValidationError(f"cannot unsubscribe from {channel}")
    try:
        with transaction.atomic():
            Unsubscribe.objects.create(
                shopper=shopper, channel=channel, source=source[:32], message=message
            )
    except IntegrityError:
        return False
    Shopper.objects.filter(pk=shopper.pk).update(**{_CONSENT_FIELD[channel]: False})
    scheduled = Message.objects.filter(
        shopper=shopper, channel=channel, state=Message.State.SCHEDULED
    )
    # A receipt or a reply already on its way is not marketing: it still goes.
    scheduled.exclude(campaign__transactional=True).update(
        state=Message.State.SKIPPED, reason="unsubscribed"
    )
    return True


def unsubscribe_by_token(*, token: str, source: str) -> tuple[Shopper, str]:
    value = tokens.read("unsubscribe", token)
    if not (isinstance(value, list) and len(value) == 3):
        raise NotFound("this link is not valid", code="bad_token")
    message_id, shopper_id, channel = value
    shopper = Shopper.objects.filter(pk=shopper_id).first()
    if shopper is None:
        raise NotFound("this link is not valid", code="bad_token")
    shopper = commerce_services.shopper_current(shopper)
    message = Message.objects.filter(pk=message_id).first()
    shopper_unsubscribe(shopper=shopper, channel=channel, source=source, message=message)
    return shopper, channel


def shopper_for_preferences(*, token: str) -> Shopper:
    shopper_id = tokens.read("preferences", token)
    shopper = Shopper.objects.filter(pk=shopper_id).first() if isinstance(shopper_id, int) else None
    if shopper is None:
        raise NotFound("this link is not valid", code="bad_token")
    return commerce_services.shopper_current(shopper)


@transaction.atomic
def preferences_update(
    *,
    shopper: Shopper,
    channels: Mapping[str, bool],
    topics_opted_out: Iterable[str],
    pause_days: int | None = None,
) -> Preference:
    """Apply the preference centre: channels on or off, topics left, a pause (0 resumes)."""
    shopper = Shopper.objects.select_for_update().get(pk=shopper.pk)
    for channel, wanted in channels.items():
        if channel not in SUBSCRIBABLE_CHANNELS:
            raise ValidationError(f"unknown channel {channel!r}")
        if wanted:
            Unsubscribe.objects.filter(shopper=shopper, channel=channel).delete()
            Shopper.objects.filter(pk=shopper.pk).update(**{_CONSENT_FIELD[channel]: True})
        else:
            shopper_unsubscribe(shopper=shopper, channel=channel, source="preferences")
    preference, _ = Preference.objects.get_or_create(shopper=shopper)
    keys = set(topics_opted_out)
    topics = list(Topic.objects.filter(key__in=keys))
    if len(topics) != len(keys):
        raise ValidationError("unknown topic")
    preference.topics_opted_out.set(topics)
    if pause_days is not None:
        if pause_days < 0 or pause_days > 365:
            raise ValidationError("pause must be between 0 and 365 days")
        preference.paused_until = (
            timezone.now() + dt.timedelta(days=pause_days) if pause_days else None
        )
        preference.save(update_fields=["paused_until", "updated_at"])
    return preference


def nps_message(*, token: str) -> Message:
    message_id = tokens.read("nps", token)
    message = (
        Message.objects.select_related("campaign").filter(pk=message_id).first()
        if isinstance(message_id, int)
        else None
    )
    if message is None:
        raise NotFound("this link is not valid", code="bad_token")
    return message


@transaction.atomic
def nps_record(*, token: str, score: int, comment: str | None = None) -> NpsResponse:
    """Store (or change) the answer to an NPS message; the latest score counts."""
    if not 0 <= score <= 10:
        raise ValidationError("score must be between 0 and 10")
    message = nps_message(token=token)
    response, created = NpsResponse.objects.get_or_create(
        message=message,
        defaults={
            "shopper_id": message.shopper_id,
            "campaign_id": message.campaign_id,
            "score": score,
            "comment": comment or "",
        },
    )
    if not created:
        response.score = score
        fields = ["score", "answered_at"]
        if comment is not None:
            response.comment = comment
            fields.append("comment")
        response.answered_at = timezone.now()
        response.save(update_fields=fields)
    now = timezone.now()
    Message.objects.filter(pk=message.pk, clicked_at__isnull=True).update(clicked_at=now)
    Message.objects.filter(pk=message.pk, opened_at__isnull=True).update(opened_at=now)
    return response


@transaction.atomic
def suppression_add(*, channel: str, address: str, reason: str = Suppression.Reason.MANUAL) -> bool:
    address = address.strip().lower() if channel == Channel.EMAIL else address.strip()
    _, created = Suppression.objects.get_or_create(
        channel=channel, address=address, defaults={"reason": reason}
    )
    return created


# --- On-site and push --------------------------------------------------------------------


def onsite_mark_seen(*, shopper: Shopper, message_id: int) -> bool:
    if not 0 < message_id < 2**63:
        raise NotFound("no such message")
    updated = Message.objects.filter(
        pk=message_id, shopper=shopper, channel=Channel.ONSITE, state=Message.State.SENT
    ).update(seen_at=timezone.now())
    if (
        not updated
        and not Message.objects.filter(
            pk=message_id, shopper=shopper, channel=Channel.ONSITE
        ).exists()
    ):
        raise NotFound("no such message")
    return bool(updated)


@transaction.atomic
def push_subscription_save(
    *, shopper: Shopper, endpoint: str, p256dh: str, auth: str
) -> PushSubscription:
    if not endpoint.startswith("https://") and not settings.DEBUG:
        raise ValidationError("a push endpoint must be an https URL")
    subscription, _ = PushSubscription.objects.update_or_create(
        endpoint=endpoint,
        defaults={"shopper": shopper, "p256dh": p256dh, "auth": auth, "active": True},
    )
    return subscription


# --- Product views, "notify me", restocks and price drops ---------------------------------


def product_for_properties(properties: Mapping[str, Any]) -> Product | None:
    for key in ("sku", "product_id", "productId", "id"):
        value = properties.get(key)
        if value not in (None, ""):
            product = Product.objects.filter(sku=str(value)).first()
            if product is not None:
                return product
    return None


_PRODUCT_KEYS = ("sku", "product_id", "productId", "id")


def products_for_properties(
    properties: Sequence[Mapping[str, Any]],
) -> list[Product | None]:
    """``product_for_properties`` for many events in one query, in the same order."""
    wanted = {
        str(p.get(key)) for p in properties for key in _PRODUCT_KEYS if p.get(key) not in (None, "")
    }
    known = {product.sku: product for product in Product.objects.filter(sku__in=wanted)}
    found: list[Product | None] = []
    for p in properties:
        product = None
        for key in _PRODUCT_KEYS:
            value = p.get(key)
            if value not in (None, "") and str(value) in known:
                product = known[str(value)]
                break
        found.append(product)
    return found


_VIEWS_SQL = """
INSERT INTO engagement_productview (shopper_id, product_id, views, first_viewed_at, last_viewed_at)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::timestamptz[], %s::timestamptz[])
ON CONFLICT (shopper_id, product_id) DO UPDATE
SET views = engagement_productview.views + EXCLUDED.views,
    last_viewed_at = GREATEST(engagement_productview.last_viewed_at, EXCLUDED.last_viewed_at)
"""


def product_views_record_many(*, views: Sequence[tuple[int, int, dt.datetime]]) -> None:
    """Count many views, ``(shopper_id, product_id, at)`` each, in one statement.

    Rows are written in (shopper, product) order, so two workers recording overlapping views
    lock them in the same order (no deadlock).
    """
    totals: dict[tuple[int, int], list[Any]] = {}
    for shopper_id, product_id, at in views:
        row = totals.get((shopper_id, product_id))
        if row is None:
            totals[(shopper_id, product_id)] = [1, at, at]
        else:
            row[0] += 1
            row[1] = min(row[1], at)
            row[2] = max(row[2], at)
    if not totals:
        return
    keys = sorted(totals)
    with connection.cursor() as cursor:
        cursor.execute(
            _VIEWS_SQL,
            [
                [k[0] for k in keys],
                [k[1] for k in keys],
                [totals[k][0] for k in keys],
                [totals[k][1] for k in keys],
                [totals[k][2] for k in keys],
            ],
        )


def product_views_record(*, shopper: Shopper, product: Product, at: dt.datetime) -> None:
    """Count a view (kept for back-in-stock and price-drop audiences)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO engagement_productview (shopper_id, product_id, views, first_viewed_at, last_viewed_at)
            VALUES (%s, %s, 1, %s, %s)
            ON CONFLICT (shopper_id, product_id) DO UPDATE
            SET views = engagement_productview.views + 1,
                last_viewed_at = GREATEST(engagement_productview.last_viewed_at, EXCLUDED.last_viewed_at)
            """,
            [shopper.pk, product.pk, at, at],
        )


@transaction.atomic
def product_watch_create(
    *, shopper: Shopper, product: Product, kind: str
) -> tuple[ProductWatch, bool]:
    """A "notify me" request; asking again while one is pending changes nothing."""
    if kind not in ProductWatch.Kind.values:
        raise ValidationError(f"kind must be one of {ProductWatch.Kind.values}")
    watch, created = ProductWatch.objects.get_or_create(shopper=shopper, product=product, kind=kind)
    if not created and watch.notified_at is not None:
        watch.notified_at = None
        watch.created_at = timezone.now()
        watch.save(update_fields=["notified_at", "created_at"])
        created = True
    return watch, created


def _notify_product_change(change: ProductChange) -> int:
    now = timezone.now()
    watches = ProductWatch.objects.filter(
        product_id=change.product_id, kind=change.kind, notified_at__isnull=True
    )
    shopper_ids = set(watches.values_list("shopper_id", flat=True))
    since = now - dt.timedelta(days=settings.PATRON_PRODUCT_VIEW_WATCH_DAYS)
    shopper_ids |= set(
        ProductView.objects.filter(
            product_id=change.product_id, last_viewed_at__gte=since
        ).values_list("shopper_id", flat=True)
    )
    data = {
        "product_id": change.product_id,
        "old_price": str(change.old_price),
        "new_price": str(change.new_price),
        "change_id": change.pk,
    }
    fired = 0
    for shopper in Shopper.objects.filter(pk__in=shopper_ids, merged_into__isnull=True).order_by(
        "pk"
    ):
        fired += len(
            trigger_fire(
                trigger=change.kind,
                shopper=shopper,
                occurrence_key=f"change:{change.pk}",
                data=data,
            )
        )
    watches.update(notified_at=now)
    return fired


def product_changes_detect(*, product_ids: Collection[int] | None = None) -> list[ProductChange]:
    """Compare products with their last snapshot; record and announce restocks and price drops.

    Other code that changes stock or prices may call this with the product ids at once; beat
    runs it over every product periodically. Snapshot rows are locked, so two runs never
    announce one change twice.
    """
    products = Product.objects.filter(active=True).order_by("pk")
    if product_ids is not None:
        products = products.filter(pk__in=list(product_ids))
    changes: list[ProductChange] = []
    ids = list(products.values_list("pk", flat=True))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        with transaction.atomic():
            current = {p.pk: p for p in Product.objects.filter(pk__in=chunk)}
            ProductSnapshot.objects.bulk_create(
                [
                    ProductSnapshot(product_id=p.pk, stock=p.stock, price=p.price)
                    for p in current.values()
                ],
                ignore_conflicts=True,
            )
            snapshots = (
                ProductSnapshot.objects.select_for_update()
                .filter(product_id__in=chunk)
                .order_by("product_id")
            )
            for snapshot in snapshots:
                product = current[snapshot.product_id]
                kinds = []
                if snapshot.stock <= 0 < product.stock:
                    kinds.append(ProductChange.Kind.BACK_IN_STOCK)
                if product.price < snapshot.price:
                    kinds.append(ProductChange.Kind.PRICE_DROP)
                if snapshot.stock == product.stock and snapshot.price == product.price:
                    continue
                for kind in kinds:
                    change = ProductChange.objects.create(
                        product=product,
                        kind=kind,
                        old_price=snapshot.price,
                        new_price=product.price,
                        old_stock=snapshot.stock,
                        new_stock=product.stock,
                    )
                    changes.append(change)
                    _notify_product_change(change)
                ProductSnapshot.objects.filter(pk=snapshot.pk).update(
                    stock=product.stock, price=product.price, seen_at=timezone.now()
                )
    return changes


# --- Periodic triggers -------------------------------------------------------------------


def _campaigns_for(trigger: str) -> list[Campaign]:
    return _active_campaigns(trigger, timezone.now())


def win_back_scan() -> int:
    """Fire win-back for shoppers whose last order just passed ``days`` (option) ago."""
    fired = 0
    now = timezone.now()
    for campaign in _campaigns_for("win_back"):
        days = int(campaign.trigger_options.get("days", 90))
        lookback = int(campaign.trigger_options.get("lookback_days", 7))
        lapsed_before = now - dt.timedelta(days=days)
        rows = (
            Order.objects.filter(shopper__isnull=False)
            .exclude(status=Order.Status.CANCELLED)
            .values("shopper_id")
            .annotate(last=Max("placed_at"))
            .filter(last__lt=lapsed_before, last__gte=lapsed_before - dt.timedelta(days=lookback))
        )
        for row in rows:
            last_order = (
                Order.objects.filter(shopper_id=row["shopper_id"], placed_at=row["last"])
                .order_by("-pk")
                .first()
            )
            if last_order is None:
                continue
            shopper = Shopper.objects.get(pk=row["shopper_id"])
            fired += len(
                trigger_fire(
                    trigger="win_back",
                    shopper=shopper,
                    occurrence_key=f"lastorder:{last_order.number}",
                    data={"last_order_number": last_order.number, "days": days},
                    occurred_at=last_order.placed_at + dt.timedelta(days=days),
                    campaign_ids=[campaign.pk],
                )
            )
    return fired


def birthday_scan(*, today: dt.date | None = None) -> int:
    """Fire birthday for shoppers whose birthday is today (29 February: the 28th otherwise)."""
    today = today or timezone.now().date()
    if not _campaigns_for("birthday"):
        return 0
    q = Q(birthday__month=today.month, birthday__day=today.day)
    is_leap = today.year % 4 == 0 and (today.year % 100 != 0 or today.year % 400 == 0)
    if today.month == 2 and today.day == 28 and not is_leap:
        q |= Q(birthday__month=2, birthday__day=29)
    fired = 0
    for shopper in Shopper.objects.filter(q, merged_into__isnull=True).order_by("pk").iterator():
        fired += len(
            trigger_fire(
                trigger="birthday",
                shopper=shopper,
                occurrence_key=f"birthday:{today.year}",
                data={"year": today.year},
            )
        )
    return fired


def post_purchase_fire(*, order: Order) -> int:
    """Fire the review request and NPS survey triggers for a placed order (once per order)."""
    if order.shopper_id is None or order.status in (Order.Status.CANCELLED, Order.Status.REFUNDED):
        return 0
    shopper = Shopper.objects.get(pk=order.shopper_id)
    data = {"order_number": order.number}
    fired = 0
    for trigger in ("review_request", "nps_survey"):
        fired += len(
            trigger_fire(
                trigger=trigger,
                shopper=shopper,
                occurrence_key=f"order:{order.number}",
                data=data,
                occurred_at=order.placed_at,
            )
        )
    return fired


def post_purchase_scan(*, lookback_hours: int = 48) -> int:
    """Orders recorded without an Order Completed event (API, imports) still get asked."""
    if not (_campaigns_for("review_request") or _campaigns_for("nps_survey")):
        return 0
    since = timezone.now() - dt.timedelta(hours=lookback_hours)
    fired = 0
    for order in Order.objects.filter(placed_at__gte=since, shopper__isnull=False).order_by("pk"):
        fired += post_purchase_fire(order=order)
    return fired


def order_since(*, shopper: Shopper, since: dt.datetime) -> bool:
    return (
        Order.objects.filter(shopper=shopper, placed_at__gte=since)
        .exclude(status=Order.Status.CANCELLED)
        .exists()
    )


def product_bought_since(*, shopper: Shopper, product_id: int, since: dt.datetime) -> bool:
    return OrderLine.objects.filter(
        order__shopper=shopper, product_id=product_id, order__placed_at__gte=since
    ).exists()


# --- Admin: preview and test sends -------------------------------------------------------


def step_preview(*, step: CampaignStep, shopper: Shopper) -> Rendered:
    """The step rendered for a real shopper, with the trigger's preview data, untracked."""
    trigger = registry.trigger_get(step.campaign.trigger)
    data = dict(trigger.preview(shopper)) if trigger and trigger.preview else {}
    occurrence = Occurrence(key="preview", data=_json(data), fired_at=timezone.now())
    return message_render(
        message_id=0,
        shopper=shopper,
        campaign=step.campaign,
        step=step,
        trigger=trigger,
        occurrence=occurrence,
        track=False,
    )


def step_test_send(*, step: CampaignStep, shopper: Shopper, address: str) -> str:
    """Send the step rendered for ``shopper`` to ``address`` (not the shopper), outside the outbox."""
    if step.channel not in (Channel.EMAIL, Channel.SMS):
        raise ValidationError("test sends go to an email address or a phone number")
    address = address.strip()
    if not address:
        raise ValidationError("give an address to send the test to")
    rendered = step_preview(step=step, shopper=shopper)
    outbound = Outbound(
        message_id=0,
        delivery_id=f"test-{step.pk}-{timezone.now().timestamp()}",
        idempotency_key=f"<test-{step.pk}.{int(timezone.now().timestamp() * 1000)}@patron>",
        channel=step.channel,
        recipient=address,
        subject=f"[TEST] {rendered.subject}",
        html=rendered.html,
        text=rendered.text,
        headers=rendered.headers,
    )
    backend = backend_for(step.channel)
    try:
        return backend.send(outbound, handing=lambda: None)
    except DeliveryError as exc:
        raise ValidationError(f"test send failed: {exc}", code="send_failed") from exc
    finally:
        backend.close()


# --- Shopper merges ----------------------------------------------------------------------


def shopper_merge_fold(source: Shopper, target: Shopper) -> None:
    """Commerce merge handler: keep the outbox's unique keys valid when two shoppers become one.

    Rows of the source that the target already has (same campaign and occurrence) are renamed
    and cancelled, so the generic re-pointing cannot collide and nobody is messaged twice.
    """
    target_runs = set(
        Run.objects.filter(shopper=target).values_list("campaign_id", "occurrence_key")
    )
    for run in Run.objects.filter(shopper=source).order_by("pk"):
        if (run.campaign_id, run.occurrence_key) in target_runs:
            renamed = f"{run.occurrence_key}#merged-{source.pk}"[:200]
            run_stop(run=run, reason="shopper merged")
            Message.objects.filter(run=run).update(occurrence_key=renamed)
            Run.objects.filter(pk=run.pk).update(occurrence_key=renamed)
    taken_channels = set(
        Unsubscribe.objects.filter(shopper=target).values_list("channel", flat=True)
    )
    Unsubscribe.objects.filter(shopper=source, channel__in=taken_channels).delete()
    taken_segments = set(
        SegmentMembership.objects.filter(shopper=target).values_list("segment_id", flat=True)
    )
    SegmentMembership.objects.filter(shopper=source, segment_id__in=taken_segments).delete()
    if Preference.objects.filter(shopper=target).exists():
        Preference.objects.filter(shopper=source).delete()
    else:
        Preference.objects.filter(shopper=source).update(shopper=target)
    taken_views = set(
        ProductView.objects.filter(shopper=target).values_list("product_id", flat=True)
    )
    ProductView.objects.filter(shopper=source, product_id__in=taken_views).delete()
    taken_watches = set(
        ProductWatch.objects.filter(shopper=target).values_list("product_id", "kind")
    )
    for watch in ProductWatch.objects.filter(shopper=source):
        if (watch.product_id, watch.kind) in taken_watches:
            watch.delete()


# --- Campaign administration -------------------------------------------------------------


@transaction.atomic
def campaign_status_set(*, campaign: Campaign, status: str) -> int:
    """Activate, pause or archive; archiving cancels what is scheduled. Returns cancellations."""
    if status not in Campaign.Status.values:
        raise ValidationError(f"unknown status {status!r}")
    if status == Campaign.Status.ACTIVE and not campaign.steps.exists():
        raise ValidationError("a campaign needs at least one step before it can run")
    Campaign.objects.filter(pk=campaign.pk).update(status=status, updated_at=timezone.now())
    campaign.status = status
    if status != Campaign.Status.ARCHIVED:
        if status == Campaign.Status.ACTIVE:
            outbox_kick(count=1)
        return 0
    return Message.objects.filter(campaign=campaign, state=Message.State.SCHEDULED).update(
        state=Message.State.CANCELLED, reason="campaign archived"
    )


@transaction.atomic
def broadcast_schedule(*, campaign: Campaign, send_at: dt.datetime | None = None) -> Broadcast:
    """Schedule a broadcast of ``campaign`` (now by default); beat or the task sends it."""
    if campaign.status != Campaign.Status.ACTIVE:
        raise ValidationError("activate the campaign before broadcasting it", code="inactive")
    broadcast = Broadcast.objects.create(campaign=campaign, send_at=send_at or timezone.now())
    if broadcast.send_at <= timezone.now():
        from engagement import tasks

        on_commit(lambda: tasks.broadcast_send.delay(broadcast.pk))
    return broadcast
