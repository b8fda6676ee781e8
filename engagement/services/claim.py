"""The outbox's claim: due messages taken in batches and put through the send-time checks."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from engagement import registry
from engagement.models import (
    SUBSCRIBABLE_CHANNELS,
    Campaign,
    CampaignStep,
    Channel,
    Message,
    Preference,
    PushSubscription,
    Run,
    Suppression,
    Unsubscribe,
)
from engagement.services._common import (
    _CONSENT_FIELD,
    _INTRUSIVE,
    _Approved,
    quiet_hours_release,
    shopper_zone,
)
from engagement.services.enrolment import _occurrence, run_stop
from engagement.services.offers import _offer_coupons_issue

_LOCK_CLASS = {channel: 0x454E0 + index for index, channel in enumerate(Channel.values)}


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
