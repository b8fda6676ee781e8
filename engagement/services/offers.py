"""Offer coupons of broadcast campaigns: issued at send time, withdrawn when a message fails for good."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.utils import formats, translation
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext

from commerce import services as commerce_services
from commerce.models import Coupon, Shopper
from engagement.models import Campaign, Message, Run
from engagement.services._common import _Approved, shopper_zone


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
        if not coupons:
            continue  # an offer without a coupon (no "coupon" in the trigger's options)
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


def offer_coupon_display(*, coupon: Mapping[str, Any], shopper: Shopper) -> dict[str, Any]:
    """An offer coupon (as kept on the run) as the shopper reads it, in their language and
    time zone: ``code``, ``kind``, ``value`` ("15" for 15.00, "12,5" in Turkish),
    ``label`` ("15%", "5.00" off, "free shipping"), ``valid_until`` (the expiry as a localized
    date) and ``valid_until_at`` (the aware datetime, for templates that format it themselves).
    """
    try:
        value = Decimal(str(coupon.get("value", "0")))
    except InvalidOperation:
        value = Decimal(0)
    integral = value == value.to_integral_value()
    raw_until = coupon.get("valid_until")
    until = parse_datetime(raw_until) if isinstance(raw_until, str) else None
    local_until = until.astimezone(shopper_zone(shopper)) if until is not None else None
    with translation.override(shopper.locale or settings.LANGUAGE_CODE):
        shown = formats.number_format(value, decimal_pos=0 if integral else None)
        kind = coupon.get("kind")
        if kind == "percent":
            label = gettext("%(value)s%%") % {"value": shown}
        elif kind == "fixed":
            label = formats.number_format(value, decimal_pos=2)
        else:
            label = gettext("free shipping")
        expires = formats.date_format(local_until, "DATE_FORMAT") if local_until else ""
    return {
        "code": coupon.get("code", ""),
        "kind": kind,
        "value": shown,
        "label": label,
        "valid_until": expires,
        "valid_until_at": local_until,
    }
