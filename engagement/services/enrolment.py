"""Enrolment and runs: firing triggers, broadcasts, ending sequences, campaign status."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from commerce import selectors as commerce_selectors
from commerce import services as commerce_services
from commerce.models import Event, Shopper
from core.exceptions import ValidationError
from engagement import registry, selectors
from engagement.models import Broadcast, Campaign, Message, Run
from engagement.registry import Occurrence
from engagement.services._common import (
    _INTRUSIVE,
    _json,
    email_address_clean,
    in_control_group,
    outbox_kick,
    quiet_hours_release,
    shopper_zone,
)
from engagement.services.flows import flow_validate, steps_schedule


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
    zone = shopper_zone(shopper)
    for step, due in steps_schedule(campaign.steps.all(), start=now):
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
    shopper = commerce_selectors.shopper_canonical(shopper)
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


@transaction.atomic
def runs_stop(*, run_ids: Sequence[int], reason: str) -> tuple[int, int]:
    """Stop these runs (the active ones; others are left as they are) and cancel their
    scheduled messages, locking the rows in pk order. Returns (runs stopped, messages
    cancelled)."""
    stopped = cancelled = 0
    for run in Run.objects.select_for_update().filter(pk__in=run_ids).order_by("pk"):
        if run.state != Run.State.ACTIVE:
            continue
        cancelled += run_stop(run=run, reason=reason)
        stopped += 1
    return stopped, cancelled


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


# --- Campaign administration -------------------------------------------------------------


@transaction.atomic
def campaign_status_check(*, status: str, step_count: int) -> None:
    """The rule of a campaign's status: a known status, and an active campaign has at least
    one step. ``ValidationError`` (code ``no_steps`` for the second) otherwise. The status
    service and the admin's step editing both ask here."""
    if status not in Campaign.Status.values:
        raise ValidationError(f"unknown status {status!r}")
    if status == Campaign.Status.ACTIVE and step_count == 0:
        raise ValidationError(
            "a campaign needs at least one step before it can run", code="no_steps"
        )


@transaction.atomic
def campaign_status_set(*, campaign: Campaign, status: str) -> int:
    """Activate, pause or archive (or return to draft); returns the messages cancelled.

    Activating needs a step (``ValidationError``, nothing changes) and wakes the outbox after
    commit; pausing keeps scheduled messages waiting; archiving cancels every scheduled (not
    yet sent) message of the campaign. Locks the campaign row.
    """
    locked = Campaign.objects.select_for_update().get(pk=campaign.pk)
    campaign_status_check(status=status, step_count=locked.steps.count())
    if status == Campaign.Status.ACTIVE:
        flow_validate(
            flow_filters=locked.flow_filters,
            split_condition=locked.split_condition,
            steps=locked.steps.values_list("position", "branch"),
        )
    Campaign.objects.filter(pk=campaign.pk).update(status=status, updated_at=timezone.now())
    campaign.status = status
    if status != Campaign.Status.ARCHIVED:
        if status == Campaign.Status.ACTIVE:
            outbox_kick(count=1)
        return 0
    return Message.objects.filter(campaign=campaign, state=Message.State.SCHEDULED).update(
        state=Message.State.CANCELLED, reason="campaign archived"
    )


def broadcast_check(*, campaign: Campaign) -> None:
    """Only an active campaign can be broadcast (``ValidationError`` code ``inactive``)."""
    if campaign.status != Campaign.Status.ACTIVE:
        raise ValidationError("activate the campaign before broadcasting it", code="inactive")


@transaction.atomic
def broadcast_schedule(*, campaign: Campaign, send_at: dt.datetime | None = None) -> Broadcast:
    """Schedule a broadcast of ``campaign`` (now by default); beat or the task sends it.
    ``ValidationError`` unless the campaign is active (``broadcast_check``)."""
    broadcast_check(campaign=campaign)
    broadcast = Broadcast.objects.create(campaign=campaign, send_at=send_at or timezone.now())
    if broadcast.send_at <= timezone.now():
        from engagement import tasks

        tasks.broadcast_send.delay_on_commit(broadcast.pk)
    return broadcast
