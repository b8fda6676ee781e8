"""The outbox's claim: due messages taken in batches and put through the send-time checks."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from engagement import registry, selectors
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
from engagement.services.flows import (
    ab_variants_assign,
    branch_cancel_reason,
    flow_filter_failure,
    run_branch_decide,
)
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


@dataclass(frozen=True)
class _Outcome:
    """How a send-time check settled a message: its new state, why, and other fields to set."""

    state: str
    reason: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def _skip(reason: str) -> _Outcome:
    return _Outcome(state=Message.State.SKIPPED, reason=reason)


def _cancel(reason: str) -> _Outcome:
    return _Outcome(state=Message.State.CANCELLED, reason=reason)


@dataclass
class _Batch:
    """What the send-time checks read, loaded once for the whole claimed batch."""

    now: dt.datetime
    unsubscribed: set[tuple[int, str]]
    preferences: dict[int, Preference]
    suppressed: dict[tuple[str, str], str]
    push: dict[int, list[PushSubscription]]
    # Per (shopper, channel): when recent marketing went out (or was handed over) there, and
    # the run it belonged to; the batch's own approvals are added as they are made.
    recent: dict[tuple[int, str], list[tuple[dt.datetime, int]]]
    # The store's smart-sending window (0: off).
    smart_sending_hours: int = 0


def _claim_due(*, worker: str, limit: int, now: dt.datetime) -> list[Message]:
    """Claim up to ``limit`` due messages for ``worker`` (``FOR UPDATE SKIP LOCKED``).

    Rule: a message of a paused or draft campaign is not claimed at all; it stays scheduled
    (postponed until the campaign runs again). Returns the claimed messages in due order with
    their run, shopper, campaign (and topic) and step (and webhook endpoint, A/B test) loaded,
    each campaign and step once per batch.
    """
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
    steps = CampaignStep.objects.select_related("webhook_endpoint", "ab_test").in_bulk(
        {m.step_id for m in messages}
    )
    for message in messages:
        message.campaign = campaigns[message.campaign_id]
        message.step = steps[message.step_id]
    return messages


def _batch_load(messages: Sequence[Message], *, now: dt.datetime) -> _Batch:
    """Load what the checks need for the whole batch: a fixed number of queries, not per row.

    Call after ``_lock_shopper_channels``, so the frequency-cap history read here cannot change
    under the checks.
    """
    ids = [m.pk for m in messages]
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
    smart_hours = selectors.engagement_settings().smart_sending_hours
    smart = [m for m in messages if _smart_sending_applies(m, smart_hours)]
    recent: dict[tuple[int, str], list[tuple[dt.datetime, int]]] = defaultdict(list)
    if capped or smart:
        longest = max(
            [m.campaign.frequency_cap_hours for m in capped] + [smart_hours if smart else 0]
        )
        cutoff = now - dt.timedelta(hours=longest)
        rows = (
            Message.objects.filter(
                shopper_id__in={m.shopper_id for m in capped + smart},
                channel__in={m.channel for m in capped + smart},
            )
            .filter(
                Q(state=Message.State.SENT, sent_at__gte=cutoff)
                | Q(state=Message.State.SENDING, claimed_at__gte=cutoff, handed_at__isnull=False)
                | Q(state=Message.State.SENDING, claimed_at__gte=cutoff, claimed_by__gt="")
            )
            .exclude(pk__in=ids)
            # Receipts and replies do not use up the shopper's allowance of marketing.
            .exclude(campaign__transactional=True)
            .values_list("shopper_id", "channel", "sent_at", "claimed_at", "run_id")
        )
        for shopper_id, channel, sent_at, claimed_at, run_id in rows:
            when = sent_at or claimed_at
            if when is not None:
                recent[(shopper_id, channel)].append((when, run_id))
    return _Batch(
        now=now,
        unsubscribed=unsubscribed,
        preferences=preferences,
        suppressed=suppressed,
        push=push,
        recent=recent,
        smart_sending_hours=smart_hours,
    )


# --- The send-time checks ----------------------------------------------------------------
#
# One rule each, run in the order of ``_SEND_TIME_CHECKS``. A check returns the ``_Outcome``
# that settles the message (cancelled, skipped or postponed), and the later checks do not see
# it; None lets the message go on towards sending. None of them queries per message (but the
# end condition's own trigger rule, the flow filters of a campaign that has them, a split's
# decision once per run); ``outbox_claim`` writes the outcome.


def _check_run_stopped(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The run was stopped (its sequence ended): cancel, "sequence ended: <reason>"."""
    run = message.run
    if run.state == Run.State.STOPPED:
        return _cancel(f"sequence ended: {run.stop_reason}")
    return None


def _check_campaign_archived(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The campaign is archived: cancel, "campaign archived"."""
    if message.campaign.status == Campaign.Status.ARCHIVED:
        return _cancel("campaign archived")
    return None


def _check_end_condition(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The trigger's end condition holds for the shopper now: stop the run and cancel,
    "sequence ended: end condition of <trigger>"."""
    campaign, run, shopper = message.campaign, message.run, message.shopper
    trigger = registry.trigger_get(campaign.trigger)
    ended = (
        trigger is not None
        and trigger.ends_when is not None
        and trigger.ends_when(shopper, _occurrence(run))
    )
    if ended and trigger is not None:
        run_stop(run=run, reason=f"end condition of {trigger.label}")
        return _cancel(f"sequence ended: end condition of {trigger.label}")
    return None


def _check_flow_filters(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The campaign's flow filters no longer hold for the shopper (checked before every step):
    the run exits, "flow filter: <the filter that failed>", and this message is cancelled,
    "sequence ended: flow filter: ..." (the filters' own queries, when the campaign has any)."""
    failed = flow_filter_failure(
        run=message.run, campaign=message.campaign, shopper=message.shopper, now=batch.now
    )
    if failed:
        reason = f"flow filter: {failed}"
        run_stop(run=message.run, reason=reason)
        return _cancel(f"sequence ended: {reason}")
    return None


def _check_branch(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """A step on a branch of the conditional split that the run did not take: cancel, "split:
    the shopper took the <yes/no> branch". The run's first branch step decides the branch
    (the split condition read now, recorded on the run)."""
    step_branch = message.step.branch
    if not step_branch:
        return None
    branch = run_branch_decide(
        run=message.run, campaign=message.campaign, shopper=message.shopper, now=batch.now
    )
    if branch != step_branch:
        return _cancel(branch_cancel_reason(branch))
    return None


def _check_address_present(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """No address on the channel (none, or not a valid mailbox; no push subscription; no
    webhook endpoint): skip, "no <channel> address"."""
    if not recipient:
        return _skip(f"no {message.channel} address")
    return None


def _check_suppression(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """An address that bounced or complained is never sent to, whatever the message
    (transactional too): skip, "suppressed (<reason>)". Subscribable channels only."""
    channel = message.channel
    if channel in SUBSCRIBABLE_CHANNELS and (channel, recipient) in batch.suppressed:
        return _skip(f"suppressed ({batch.suppressed[(channel, recipient)]})")
    return None


def _marketing_choices_apply(message: Message) -> bool:
    """The shopper's marketing choices (consent, unsubscribe, pause, topics) concern
    subscribable channels, and do not stop a transactional message: a receipt or a reply they
    asked for."""
    return message.channel in SUBSCRIBABLE_CHANNELS and not message.campaign.transactional


def _check_unsubscribe(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The shopper unsubscribed from the channel: skip, "unsubscribed" (marketing only)."""
    if (
        _marketing_choices_apply(message)
        and (message.shopper.pk, message.channel) in batch.unsubscribed
    ):
        return _skip("unsubscribed")
    return None


def _check_consent(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The campaign requires consent and the shopper has not given it on the channel: skip,
    "no consent" (marketing only). Except the first message of a run the shopper requested
    ("notify me"): it goes, with the reason recorded on it."""
    if (
        _marketing_choices_apply(message)
        and message.campaign.requires_consent
        and not getattr(message.shopper, _CONSENT_FIELD[message.channel])
    ):
        if _requested_by_shopper(message):
            Message.objects.filter(pk=message.pk).update(reason=_REQUESTED_REASON)
            return None
        return _skip("no consent")
    return None


# Kept on the message once sent (delivery keeps a reason starting "consent:").
_REQUESTED_REASON = "consent: no marketing consent; the shopper asked for it (notify me)"


def _requested_by_shopper(message: Message) -> bool:
    """The run's first message answers the shopper's own request ("notify me" with their
    address): that request is their consent to this one message, not to later steps."""
    if not message.run.data.get("requested"):
        return False
    return not CampaignStep.objects.filter(
        campaign_id=message.campaign_id, position__lt=message.step.position
    ).exists()


def _check_paused(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The shopper paused messages until later than now: skip, "paused by shopper" (marketing
    only)."""
    if not _marketing_choices_apply(message):
        return None
    preference = batch.preferences.get(message.shopper.pk)
    if preference is not None and preference.paused_until and preference.paused_until > batch.now:
        return _skip("paused by shopper")
    return None


def _check_topic(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The shopper opted out of the campaign's topic: skip, "opted out of <topic>" (marketing
    only)."""
    if not _marketing_choices_apply(message):
        return None
    campaign = message.campaign
    preference = batch.preferences.get(message.shopper.pk)
    if (
        preference is not None
        and campaign.topic_id is not None
        and any(t.pk == campaign.topic_id for t in preference.topics_opted_out.all())
    ):
        return _skip(f"opted out of {campaign.topic}")
    return None


def _check_webhook_endpoint(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """A webhook step whose endpoint is gone or inactive: skip, "endpoint inactive"."""
    if message.channel == Channel.WEBHOOK:
        endpoint = message.step.webhook_endpoint
        if endpoint is None or not endpoint.active:
            return _skip("endpoint inactive")
    return None


def _check_quiet_hours(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """Now is inside the campaign's quiet hours in the shopper's time zone (email, SMS, push):
    postpone to the end of the quiet hours, back to scheduled with the attempt given back,
    "quiet hours: postponed to <time>"."""
    if message.channel not in _INTRUSIVE:
        return None
    campaign = message.campaign
    release = quiet_hours_release(
        when=batch.now,
        zone=shopper_zone(message.shopper),
        start=campaign.quiet_hours_start,
        end=campaign.quiet_hours_end,
    )
    if release is not None:
        return _Outcome(
            state=Message.State.SCHEDULED,
            reason=f"quiet hours: postponed to {release.isoformat()}",
            fields={
                "due_at": release,
                "postponed": F("postponed") + 1,
                "attempts": F("attempts") - 1,
                "claimed_by": "",
                "claimed_at": None,
            },
        )
    return None


def _check_frequency_cap(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The shopper already had the campaign's cap of marketing on the channel (email, SMS,
    push) within its window, this batch's approvals included: skip, "frequency cap"."""
    campaign, channel = message.campaign, message.channel
    if channel in _INTRUSIVE and campaign.frequency_cap is not None and not campaign.transactional:
        window_start = batch.now - dt.timedelta(hours=campaign.frequency_cap_hours)
        sent_recently = [
            t for t, _ in batch.recent[(message.shopper.pk, channel)] if t >= window_start
        ]
        if len(sent_recently) >= campaign.frequency_cap:
            return _skip("frequency cap")
    return None


def _smart_sending_applies(message: Message, hours: int) -> bool:
    """Smart sending concerns marketing on email, SMS and push of a campaign that keeps it on,
    when the store's window is not 0; never a transactional message or the one the shopper
    asked for (the first message of a "notify me" run)."""
    campaign = message.campaign
    return (
        hours > 0
        and message.channel in _INTRUSIVE
        and campaign.smart_sending
        and not campaign.transactional
        and not _requested_by_shopper(message)
    )


def _check_smart_sending(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """Smart sending: the shopper received marketing on the channel from another run (another
    campaign, or another occurrence of this one) within the store's ``smart_sending_hours``,
    this batch's approvals included: skip, "smart sending: marketing received within <N> h".
    A sequence's own earlier steps do not count (their delays are the merchant's choice)."""
    hours = batch.smart_sending_hours
    if not _smart_sending_applies(message, hours):
        return None
    window_start = batch.now - dt.timedelta(hours=hours)
    if any(
        when >= window_start and run_id != message.run_id
        for when, run_id in batch.recent[(message.shopper.pk, message.channel)]
    ):
        return _skip(f"smart sending: marketing received within {hours} h")
    return None


_SEND_TIME_CHECKS: tuple[Callable[[Message, str, _Batch], _Outcome | None], ...] = (
    _check_run_stopped,
    _check_campaign_archived,
    _check_end_condition,
    _check_flow_filters,
    _check_branch,
    _check_address_present,
    _check_suppression,
    _check_unsubscribe,
    _check_consent,
    _check_paused,
    _check_topic,
    _check_webhook_endpoint,
    _check_quiet_hours,
    _check_frequency_cap,
    _check_smart_sending,
)


def _settle(message: Message, recipient: str, batch: _Batch) -> _Outcome | None:
    """The outcome of the first send-time check that settles ``message``, or None: send it."""
    for check in _SEND_TIME_CHECKS:
        outcome = check(message, recipient, batch)
        if outcome is not None:
            return outcome
    return None


def _approve(message: Message, recipient: str, batch: _Batch) -> _Approved:
    """Every check passed: send. Marketing on email, SMS or push counts towards the frequency
    cap and the smart sending of the batch's later messages to the same shopper and channel."""
    if message.channel in _INTRUSIVE and not message.campaign.transactional:
        batch.recent[(message.shopper.pk, message.channel)].append((batch.now, message.run_id))
    return _Approved(
        message=message,
        recipient=recipient,
        push_subscriptions=tuple(
            {"endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth}
            for s in batch.push.get(message.shopper.pk, [])
        ),
    )


@transaction.atomic
def outbox_claim(*, worker: str, limit: int) -> list[_Approved]:
    """Claim up to ``limit`` due messages and run the send-time checks on them.

    Returns the messages approved for delivery (left in ``sending``, claimed by ``worker``);
    the others are skipped, cancelled or postponed in this same transaction. The per-shopper
    channel locks make the frequency cap exact under concurrent workers. The checks, in order,
    are ``_SEND_TIME_CHECKS`` (each function's docstring gives its rule and outcome); the
    first that settles a message ends its checks. Approved broadcast offers get their coupon,
    approved messages of an A/B-tested step their variant.
    """
    now = timezone.now()
    messages = _claim_due(worker=worker, limit=limit, now=now)
    if not messages:
        return []
    _lock_shopper_channels(messages)
    batch = _batch_load(messages, now=now)
    approved: list[_Approved] = []
    for message in messages:
        recipient = _recipient(message, batch.push)
        outcome = _settle(message, recipient, batch)
        if outcome is None:
            approved.append(_approve(message, recipient, batch))
        else:
            _set_outcome(message, state=outcome.state, reason=outcome.reason, **outcome.fields)
    _offer_coupons_issue(approved, now)
    ab_variants_assign(approved, now=now)
    return approved
