"""The outbox's delivery: rendering, handing messages to channels, leases, the sweep, requeue and cancel."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.template import TemplateSyntaxError
from django.utils import timezone

from engagement import registry
from engagement.channels import backend_for
from engagement.channels.base import DeliveryError, Outbound
from engagement.models import Channel, Message, PushSubscription
from engagement.rendering import Rendered, message_render
from engagement.services._common import _Approved, outbox_kick, worker_name
from engagement.services.claim import _set_outcome, outbox_claim
from engagement.services.enrolment import _occurrence
from engagement.services.flows import step_content
from engagement.services.offers import _offer_coupon_withdraw

if TYPE_CHECKING:
    from engagement.channels.base import ChannelBackend

logger = logging.getLogger(__name__)


# --- The outbox: delivery ----------------------------------------------------------------


def _retry_delay(attempts: int) -> dt.timedelta:
    base = min(settings.PATRON_OUTBOX_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0), 3600)
    return dt.timedelta(seconds=base * (1 + random.random() * 0.2))


def _render(message: Message) -> Rendered:
    return message_render(
        message_id=message.pk,
        shopper=message.shopper,
        campaign=message.campaign,
        step=step_content(message),
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
SET state = 'sent', sent_at = %s, confirmed = true, provider_message_id = v.provider_id,
    -- a retry's reason goes; the consent basis a send-time check recorded stays
    reason = CASE WHEN m.reason LIKE 'consent:%%' THEN m.reason ELSE '' END
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
