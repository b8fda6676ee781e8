"""Periodic triggers: win-back, birthdays, post-purchase."""

from __future__ import annotations

import datetime as dt

from django.db.models import Max, Q
from django.utils import timezone

from commerce.models import Order, OrderLine, Shopper
from engagement.models import Campaign
from engagement.services.enrolment import _active_campaigns, trigger_fire

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
