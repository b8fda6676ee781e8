"""Orders, refunds and reviews, idempotent on their outside identifiers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, F
from django.utils import timezone

from commerce.models import ZERO, Order, OrderLine, Product, Refund, RefundLine, Review, Shopper
from commerce.selectors import shopper_canonical
from commerce.services._common import CENT, MAX_AMOUNT, money
from commerce.services.coupons import order_coupon_count
from core.exceptions import Conflict, ValidationError

# --- Orders ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineInput:
    sku: str
    quantity: int
    unit_price: Decimal
    title: str = ""


@transaction.atomic
def order_create(
    *,
    number: str,
    lines: Sequence[LineInput],
    shopper: Shopper | None = None,
    email: str = "",
    currency: str = "GBP",
    placed_at: dt.datetime | None = None,
    status: str = Order.Status.PAID,
    source: str = Order.Source.API,
    shipping_total: Decimal = ZERO,
    tax_total: Decimal = ZERO,
    discount_total: Decimal = ZERO,
    coupon_code: str = "",
    country: str = "",
) -> tuple[Order, bool]:
    """Record an order once per ``number``. Returns (order, created); a retry changes nothing.

    Lines refer to products by SKU; an unknown SKU is recorded on the line without a product.
    The total is computed from the lines, shipping, tax and discount, never trusted from input.
    A ``coupon_code`` that is one of Patron's coupons has its use counted once
    (``order_coupon_count``); a refused use is flagged on the order, not counted.
    """
    number = number.strip()
    if not number:
        raise ValidationError("order number is required")
    if not lines:
        raise ValidationError("an order needs at least one line")
    for line in lines:
        if line.quantity <= 0:
            raise ValidationError(f"line {line.sku}: quantity must be positive")
        if line.unit_price < ZERO:
            raise ValidationError(f"line {line.sku}: unit price cannot be negative")
    existing = Order.objects.filter(number=number).first()
    if existing is not None:
        return existing, False

    products = {p.sku: p for p in Product.objects.filter(sku__in={line.sku for line in lines})}
    subtotal = sum((money(line.unit_price) * line.quantity for line in lines), ZERO)
    total = max(subtotal + shipping_total + tax_total - discount_total, ZERO)
    for name, amount in (
        ("subtotal", subtotal),
        ("total", total),
        ("shipping", shipping_total),
        ("tax", tax_total),
        ("discount", discount_total),
    ):
        if abs(amount) >= MAX_AMOUNT:
            raise ValidationError(f"order {name} {amount} is larger than an order can be")
    if shopper is not None:
        shopper = shopper_canonical(shopper)
    try:
        with transaction.atomic():
            order = Order.objects.create(
                number=number,
                shopper=shopper,
                email=(email or (shopper.email if shopper else "")).lower(),
                currency=currency.upper()[:3],
                status=status,
                source=source,
                subtotal=subtotal,
                shipping_total=shipping_total,
                tax_total=tax_total,
                discount_total=discount_total,
                total=total,
                coupon_code=coupon_code.strip().upper(),
                country=country,
                placed_at=placed_at or timezone.now(),
            )
    except IntegrityError:  # the same order recorded concurrently
        return Order.objects.get(number=number), False
    OrderLine.objects.bulk_create(
        OrderLine(
            order=order,
            product=products.get(line.sku),
            sku=line.sku,
            title=(line.title or (products[line.sku].title if line.sku in products else ""))[:300],
            quantity=line.quantity,
            unit_price=money(line.unit_price),
            total=money(line.unit_price) * line.quantity,
        )
        for line in lines
    )
    if order.coupon_code:
        order_coupon_count(order=order)
    return order, True


@dataclass(frozen=True)
class RefundLineInput:
    sku: str
    quantity: int


@transaction.atomic
def refund_create(
    *,
    order: Order,
    number: str,
    lines: Sequence[RefundLineInput] = (),
    amount: Decimal | None = None,
    reason: str = "",
    refunded_at: dt.datetime | None = None,
) -> tuple[Refund, bool]:
    """Refund an order (whole, by lines, or by amount) once per refund ``number``.

    Locks the order row. With lines, the amount is what those lines cost; with neither lines
    nor amount, everything not yet refunded is refunded. Never refunds more than was paid.
    """
    existing = Refund.objects.filter(number=number).first()
    if existing is not None:
        if existing.order_id != order.pk:
            raise Conflict(f"refund {number} belongs to another order", code="refund_number_taken")
        return existing, False
    order = Order.objects.select_for_update().get(pk=order.pk)
    remaining = order.total - order.refunded_total
    refund_lines: list[tuple[OrderLine, int, Decimal]] = []
    if lines:
        by_sku: dict[str, list[OrderLine]] = {}
        for order_line in order.lines.select_for_update().order_by("pk"):
            by_sku.setdefault(order_line.sku, []).append(order_line)
        for line in lines:
            wanted = line.quantity
            if wanted <= 0:
                raise ValidationError(f"refund line {line.sku}: quantity must be positive")
            for order_line in by_sku.get(line.sku, []):
                free = (
                    order_line.quantity
                    - order_line.refunded_quantity
                    - sum(q for ol, q, _ in refund_lines if ol.pk == order_line.pk)
                )
                take = min(free, wanted)
                if take > 0:
                    refund_lines.append((order_line, take, order_line.unit_price * take))
                    wanted -= take
                if wanted == 0:
                    break
            if wanted:
                raise ValidationError(
                    f"refund line {line.sku}: more than the order has left to refund"
                )
        computed = sum((value for _, _, value in refund_lines), ZERO)
        amount = computed if amount is None else money(amount)
    elif amount is None:
        amount = remaining
    amount = money(amount)
    if amount <= ZERO:
        raise ValidationError("refund amount must be positive")
    if amount > remaining:
        raise ValidationError(
            f"refund of {amount} exceeds the {remaining} left on order {order.number}"
        )
    try:
        with transaction.atomic():
            refund = Refund.objects.create(
                order=order,
                number=number,
                amount=amount,
                reason=reason[:200],
                refunded_at=refunded_at or timezone.now(),
            )
    except IntegrityError:
        return Refund.objects.get(number=number), False
    for order_line, quantity, value in refund_lines:
        RefundLine.objects.create(
            refund=refund, order_line=order_line, quantity=quantity, amount=value
        )
        OrderLine.objects.filter(pk=order_line.pk).update(
            refunded_quantity=F("refunded_quantity") + quantity
        )
    order.refunded_total = order.refunded_total + amount
    order.status = (
        Order.Status.REFUNDED
        if order.refunded_total >= order.total
        else Order.Status.PARTIALLY_REFUNDED
    )
    order.save(update_fields=["refunded_total", "status"])
    return refund, True


# --- Reviews -----------------------------------------------------------------------------


@transaction.atomic
def review_record(
    *,
    product: Product,
    external_id: str,
    rating: int,
    shopper: Shopper | None = None,
    body: str = "",
) -> tuple[Review, bool]:
    """Store a review once per ``external_id`` and refresh the product's average rating."""
    if not 1 <= rating <= 5:
        raise ValidationError("rating must be between 1 and 5")
    review, created = Review.objects.get_or_create(
        external_id=external_id,
        defaults={"product": product, "shopper": shopper, "rating": rating, "body": body},
    )
    if created:
        _product_rating_refresh(product_id=product.pk)
    return review, created


@transaction.atomic
def reviews_delete(*, review_ids: Sequence[int]) -> int:
    """Delete these reviews (staff removing spam) and refresh their products' average rating
    and count; returns how many were deleted. Unknown ids are ignored."""
    product_ids = sorted(
        set(Review.objects.filter(pk__in=review_ids).values_list("product_id", flat=True))
    )
    list(Product.objects.select_for_update().filter(pk__in=product_ids).order_by("pk"))
    deleted, _ = Review.objects.filter(pk__in=review_ids).delete()
    for product_id in product_ids:
        _product_rating_refresh(product_id=product_id)
    return deleted


def _product_rating_refresh(*, product_id: int) -> None:
    """Recompute a product's average rating and count from its reviews (row locked here)."""
    Product.objects.select_for_update().filter(pk=product_id).first()
    stats = Review.objects.filter(product_id=product_id).aggregate(avg=Avg("rating"), n=Count("id"))
    average = Decimal(stats["avg"]).quantize(CENT) if stats["avg"] is not None else None
    Product.objects.filter(pk=product_id).update(average_rating=average, rating_count=stats["n"])
