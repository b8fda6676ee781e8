"""Coupons: checking, discounts, redemption and issuing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

from django.db import IntegrityError, transaction
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
    if coupon.owner_id is not None and (
        shopper is None or shopper_canonical(shopper).pk != coupon.owner_id
    ):
        raise ValidationError("this coupon belongs to another shopper", code="coupon_not_yours")
    if coupon.usage_limit is not None and coupon.times_used >= coupon.usage_limit:
        raise ValidationError("this coupon has been used up", code="coupon_used_up")
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
class CouponUse(NamedTuple):
    """A coupon's redemption for an order, and whether this call counted it (``False``: the
    order had already redeemed the code, nothing more was counted)."""

    redemption: CouponRedemption
    created: bool


def coupon_redeem(
    *,
    coupon: Coupon,
    order: Order | None = None,
    order_number: str = "",
    amount: Decimal,
    shopper: Shopper | None = None,
) -> CouponRedemption:
    """Count one use of ``coupon`` for an order (``order``, or only its ``order_number`` when
    the store redeems at checkout before the order is recorded); refuses a use past the limit
    even under races (``ValidationError`` ``coupon_used_up``, nothing counted).

    Idempotent per order number: redeeming again for the same order returns the same
    redemption and counts nothing more; a redemption made by number is linked to the order
    when it is recorded.
    """
    return _coupon_redeem(
        coupon=coupon, order=order, order_number=order_number, amount=amount, shopper=shopper
    ).redemption


def _coupon_redeem(
    *,
    coupon: Coupon,
    order: Order | None,
    order_number: str,
    amount: Decimal,
    shopper: Shopper | None = None,
) -> CouponUse:
    number = (order.number if order is not None else order_number).strip()
    if not number:
        raise ValidationError("an order number is required to redeem a coupon")
    existing = (
        CouponRedemption.objects.select_for_update(of=("self",))
        .filter(Q(order_number=number) | Q(order__number=number), coupon=coupon)
        .first()
    )
    if existing is not None:
        if order is not None and existing.order_id is None:
            existing.order = order
            existing.save(update_fields=["order"])
        return CouponUse(existing, created=False)
    try:
        with transaction.atomic():
            redemption = CouponRedemption.objects.create(
                coupon=coupon, order=order, order_number=number, shopper=shopper, amount=amount
            )
    except IntegrityError:  # the same order redeemed concurrently: counted once, by the other
        return CouponUse(
            CouponRedemption.objects.get(coupon=coupon, order_number=number), created=False
        )
    used = (
        Coupon.objects.filter(pk=coupon.pk)
        .filter(Q(usage_limit__isnull=True) | Q(times_used__lt=F("usage_limit")))
        .update(times_used=F("times_used") + 1)
    )
    if not used:
        raise ValidationError("this coupon has been used up", code="coupon_used_up")
    return CouponUse(redemption, created=True)


def coupon_redeem_checked(
    *,
    code: str,
    order_number: str,
    subtotal: Decimal,
    shopper: Shopper | None = None,
    order: Order | None = None,
    amount: Decimal | None = None,
    when: dt.datetime | None = None,
) -> CouponRedemption:
    """``coupon_use``'s redemption (the one rule for using a coupon; see there)."""
    return coupon_use(
        code=code,
        order_number=order_number,
        subtotal=subtotal,
        shopper=shopper,
        order=order,
        amount=amount,
        when=when,
    ).redemption


def coupon_use(
    *,
    code: str,
    order_number: str,
    subtotal: Decimal,
    shopper: Shopper | None = None,
    order: Order | None = None,
    amount: Decimal | None = None,
    when: dt.datetime | None = None,
) -> CouponUse:
    """Check ``code`` for this shopper and basket, then count its use for ``order_number``;
    says whether this call counted it.

    The one rule for using a coupon, whoever asks (the coupon API at checkout, an order that
    names a coupon): an order number that already redeemed the code gets its redemption back
    (``created`` False) without a second check or count (a retried call, also one racing the
    first); otherwise ``coupon_check`` decides (``NotFound``/``ValidationError`` with a
    ``coupon_*`` code) and ``coupon_redeem`` counts. ``amount`` defaults to the discount the
    coupon gives ``subtotal``. Concurrent uses of one code wait for each other on the coupon's
    row, so none passes a limit another just reached, and the second call for one order sees
    the first's redemption.
    """
    with transaction.atomic():
        # The coupon's row lock first: what follows then sees every use committed before, so
        # two concurrent uses never both pass a limit (the per-shopper one has no counter to
        # guard) and a call racing another for the same order finds its redemption.
        locked = Coupon.objects.select_for_update().filter(code=code.strip().upper()).first()
        if locked is not None:
            done = CouponRedemption.objects.filter(coupon=locked, order_number=order_number).first()
            if done is not None:
                return _coupon_redeem(
                    coupon=locked, order=order, order_number=order_number, amount=done.amount
                )
        coupon = coupon_check(code=code, subtotal=subtotal, shopper=shopper, when=when)
        if amount is None:
            amount = coupon_discount(coupon=coupon, subtotal=subtotal)
        return _coupon_redeem(
            coupon=coupon,
            order=order,
            order_number=order_number,
            amount=amount,
            shopper=shopper_canonical(shopper) if shopper is not None else None,
        )


def order_coupon_count(*, order: Order) -> str:
    """Count the use of the Patron coupon ``order`` names, once; returns why it was not
    counted ("" when it was, or when the code is not one of Patron's coupons).

    Call inside the transaction that recorded the order. A refused use (used up, another
    shopper's, expired, below its minimum spend) does not undo the order, which the store has
    already taken: it is flagged in ``order.coupon_problem`` for the merchant.
    """
    if not order.coupon_code or not Coupon.objects.filter(code=order.coupon_code).exists():
        return ""
    try:
        with transaction.atomic():
            coupon_redeem_checked(
                code=order.coupon_code,
                order_number=order.number,
                subtotal=order.subtotal,
                shopper=order.shopper,
                order=order,
                amount=order.discount_total,
                when=order.placed_at,
            )
    except (ValidationError, NotFound) as exc:
        problem = f"{exc.code}: {exc.message}"[:200]
        Order.objects.filter(pk=order.pk).update(coupon_problem=problem)
        order.coupon_problem = problem
        return problem
    return ""


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
