"""Coupons: checking, discounts, redemption and issuing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from commerce.models import ZERO, Coupon, CouponRedemption, Order, Shopper
from commerce.selectors import shopper_canonical
from commerce.services._common import money
from core.exceptions import NotFound, ValidationError

# --- Coupons -----------------------------------------------------------------------------


def coupon_check(
    *, code: str, subtotal: Decimal, shopper: Shopper | None = None, when: dt.datetime | None = None
) -> Coupon:
    """The usable coupon with this code for this basket, or a ValidationError saying why not."""
    when = when or timezone.now()
    coupon = Coupon.objects.filter(code=code.strip().upper()).first()
    if coupon is None:
        raise NotFound("no coupon with that code", code="coupon_not_found")
    if not coupon.active:
        raise ValidationError("this coupon is no longer active", code="coupon_inactive")
    if coupon.valid_from and when < coupon.valid_from:
        raise ValidationError("this coupon is not valid yet", code="coupon_not_started")
    if coupon.valid_until and when >= coupon.valid_until:
        raise ValidationError("this coupon has expired", code="coupon_expired")
    if coupon.usage_limit is not None and coupon.times_used >= coupon.usage_limit:
        raise ValidationError("this coupon has been used up", code="coupon_used_up")
    if coupon.owner_id is not None and (
        shopper is None or shopper_canonical(shopper).pk != coupon.owner_id
    ):
        raise ValidationError("this coupon belongs to another shopper", code="coupon_not_yours")
    if subtotal < coupon.min_spend:
        raise ValidationError(
            f"this coupon needs a spend of at least {coupon.min_spend}", code="coupon_min_spend"
        )
    if coupon.usage_limit_per_shopper is not None and shopper is not None:
        used = CouponRedemption.objects.filter(coupon=coupon, shopper=shopper).count()
        if used >= coupon.usage_limit_per_shopper:
            raise ValidationError("you have already used this coupon", code="coupon_used_by_you")
    return coupon


def coupon_discount(*, coupon: Coupon, subtotal: Decimal, shipping: Decimal = ZERO) -> Decimal:
    """What the coupon takes off a basket (never more than the basket)."""
    if coupon.kind == Coupon.Kind.PERCENT:
        return min(money(subtotal * coupon.value / 100), subtotal)
    if coupon.kind == Coupon.Kind.FIXED:
        return min(coupon.value, subtotal)
    return shipping


@transaction.atomic
def coupon_redeem(
    *, coupon: Coupon, order: Order, amount: Decimal, shopper: Shopper | None = None
) -> CouponRedemption:
    """Count one use of ``coupon`` on ``order``; refuses a use past the limit even under races."""
    redemption, created = CouponRedemption.objects.get_or_create(
        coupon=coupon, order=order, defaults={"shopper": shopper, "amount": amount}
    )
    if not created:
        return redemption
    used = (
        Coupon.objects.filter(pk=coupon.pk)
        .filter(Q(usage_limit__isnull=True) | Q(times_used__lt=F("usage_limit")))
        .update(times_used=F("times_used") + 1)
    )
    if not used:
        raise ValidationError("this coupon has been used up", code="coupon_used_up")
    return redemption


def coupons_issue(
    *,
    kind: str,
    value: Decimal,
    source: str,
    owners: Iterable[Shopper | None],
    prefix: str = "",
    valid_until: dt.datetime | None = None,
    min_spend: Decimal = ZERO,
    usage_limit: int | None = 1,
) -> list[Coupon]:
    """Issue one unique single-use coupon per owner (loyalty rewards, campaign offers)."""
    coupons = [
        Coupon(
            code=Coupon.generate_code(prefix),
            kind=kind,
            value=value,
            source=source,
            owner=owner,
            valid_until=valid_until,
            min_spend=min_spend,
            usage_limit=usage_limit,
        )
        for owner in owners
    ]
    return Coupon.objects.bulk_create(coupons)
