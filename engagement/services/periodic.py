"""Periodic triggers: win-back, birthdays, post-purchase."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Max, Q
from django.utils import timezone

from commerce.models import Order, OrderLine, Shopper
from engagement.models import Campaign, Run
from engagement.services._common import shopper_zone
from engagement.services.enrolment import _active_campaigns, trigger_fire

# --- Periodic triggers -------------------------------------------------------------------


def _campaigns_for(trigger: str) -> list[Campaign]:
    return _active_campaigns(trigger, timezone.now())


def win_back_scan() -> int:
    """Fire win-back for every customer whose last order is more than ``days`` (option, default
    90) old: those who lapse while the campaign runs and those already lapsed when it starts.

    Once per lapse: the occurrence is the last order, so a customer who orders again and lapses
    again is asked again, and a scan that finds no new lapse fires nothing (the customers a
    campaign already enrolled for their last order are left out before any per-shopper work).
    """
    fired = 0
    now = timezone.now()
    for campaign in _campaigns_for("win_back"):
        days = int(campaign.trigger_options.get("days", 90))
        lapsed_before = now - dt.timedelta(days=days)
        rows = (
            Order.objects.filter(shopper__isnull=False, shopper__merged_into__isnull=True)
            .exclude(status=Order.Status.CANCELLED)
            .values("shopper_id")
            .annotate(last=Max("placed_at"))
            .filter(last__lt=lapsed_before)
            .order_by("shopper_id")
        )
        enrolled = dict(
            Run.objects.filter(campaign=campaign)
            .values("shopper_id")
            .annotate(latest=Max("occurred_at"))
            .values_list("shopper_id", "latest")
        )
        for row in rows:
            latest = enrolled.get(row["shopper_id"])
            if latest is not None and latest >= row["last"]:
                continue  # this lapse already enrolled them
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


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _birthday_q(day: dt.date) -> Q:
    q = Q(birthday__month=day.month, birthday__day=day.day)
    if day.month == 2 and day.day == 28 and not _is_leap(day.year):
        q |= Q(birthday__month=2, birthday__day=29)
    return q


def _is_birthday(birthday: dt.date, day: dt.date) -> bool:
    if (birthday.month, birthday.day) == (day.month, day.day):
        return True
    return (
        (birthday.month, birthday.day) == (2, 29)
        and (day.month, day.day) == (2, 28)
        and (not _is_leap(day.year))
    )


def birthday_scan(*, now: dt.datetime | None = None) -> int:
    """Fire birthday for shoppers whose birthday it is now in their own time zone (29 February:
    the 28th in other years); once a year. Beat runs it every few minutes, so a shopper in Los
    Angeles is greeted after their local midnight, not at UTC's."""
    now = now or timezone.now()
    if not _campaigns_for("birthday"):
        return 0
    utc_day = now.astimezone(dt.UTC).date()
    # Every time zone's date is within a day of UTC's.
    q = Q()
    for offset in (-1, 0, 1):
        q |= _birthday_q(utc_day + dt.timedelta(days=offset))
    fired = 0
    for shopper in Shopper.objects.filter(q, merged_into__isnull=True).order_by("pk").iterator():
        local_day = now.astimezone(shopper_zone(shopper)).date()
        if shopper.birthday is None or not _is_birthday(shopper.birthday, local_day):
            continue
        fired += len(
            trigger_fire(
                trigger="birthday",
                shopper=shopper,
                occurrence_key=f"birthday:{local_day.year}",
                data={"year": local_day.year},
            )
        )
    return fired


def _nps_throttled(shopper: Shopper, *, now: dt.datetime) -> bool:
    """Whether the shopper was asked for an NPS score (by any campaign) within the last
    ``PATRON_NPS_THROTTLE_DAYS`` days."""
    days = settings.PATRON_NPS_THROTTLE_DAYS
    return days > 0 and (
        Run.objects.filter(
            shopper=shopper,
            campaign__trigger="nps_survey",
            started_at__gte=now - dt.timedelta(days=days),
        ).exists()
    )


def post_purchase_fire_for(
    *, shopper: Shopper, order_number: str, occurred_at: dt.datetime | None = None
) -> int:
    """Fire the review request and NPS survey for one order of ``shopper`` (once per order).

    The NPS survey is throttled per shopper: none within ``PATRON_NPS_THROTTLE_DAYS`` of the
    last one, however many orders they place. Returns the runs created.
    """
    data = {"order_number": order_number}
    fired = 0
    for trigger in ("review_request", "nps_survey"):
        if trigger == "nps_survey" and _nps_throttled(shopper, now=timezone.now()):
            continue
        fired += len(
            trigger_fire(
                trigger=trigger,
                shopper=shopper,
                occurrence_key=f"order:{order_number}",
                data=data,
                occurred_at=occurred_at,
            )
        )
    return fired


def post_purchase_fire(*, order: Order) -> int:
    """Fire the review request and NPS survey triggers for a placed order (once per order);
    nothing for a cancelled or refunded one."""
    if order.shopper_id is None or order.status in (Order.Status.CANCELLED, Order.Status.REFUNDED):
        return 0
    shopper = Shopper.objects.get(pk=order.shopper_id)
    return post_purchase_fire_for(
        shopper=shopper, order_number=order.number, occurred_at=order.placed_at
    )


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
