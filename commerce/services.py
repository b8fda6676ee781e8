"""Business operations on the shared nouns: shoppers and their identities, orders, refunds,
reviews, products and coupons.

Each function is keyword-only, runs in one transaction and does every side effect of its
operation. Operations keyed by an outside identifier (order number, refund number, review id)
are idempotent: a retry returns the existing row and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, models, transaction
from django.db.models import Avg, Count, F, Q
from django.utils import timezone

from commerce import registry, selectors
from commerce.models import (
    ZERO,
    Coupon,
    CouponRedemption,
    Event,
    Order,
    OrderLine,
    Product,
    Refund,
    RefundLine,
    Review,
    Shopper,
    ShopperAlias,
    StoreSettings,
    new_identity_secret,
)
from core.exceptions import Conflict, NotFound, PermissionDenied, ValidationError

CENT = Decimal("0.01")
# Money columns are numeric(12, 2).
MAX_AMOUNT = Decimal("10000000000")


def money(value: Any, *, field: str = "amount") -> Decimal:
    """A Decimal rounded to cents; refuses floats' junk digits, NaN, infinities and non-numbers."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise ValidationError(f"{field} must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise ValidationError(f"{field} must be a finite number")
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# --- Shoppers and identity ---------------------------------------------------------------

# Identify traits that map onto Shopper columns; everything else is kept in ``traits``.
_TRAIT_FIELDS = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "locale": "locale",
    "timezone": "time_zone",
    "country": "country",
}


# Consent given or withdrawn in the store (a checkbox at checkout) arrives as a boolean trait.
CONSENT_TRAITS = {
    "email_consent": "email_consent",
    "emailConsent": "email_consent",
    "sms_consent": "sms_consent",
    "smsConsent": "sms_consent",
    "push_consent": "push_consent",
    "pushConsent": "push_consent",
}


def shopper_current(shopper: Shopper) -> Shopper:
    """The surviving shopper: follows ``merged_into`` pointers left by merges."""
    seen = set()
    while shopper.merged_into_id is not None and shopper.pk not in seen:
        seen.add(shopper.pk)
        shopper = Shopper.objects.get(pk=shopper.merged_into_id)
    return shopper


def _shopper_for_customer_id(customer_id: str) -> Shopper:
    try:
        return shopper_current(Shopper.objects.get(customer_id=customer_id))
    except Shopper.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return Shopper.objects.create(customer_id=customer_id)
    except IntegrityError:  # created concurrently: the unique constraint decided
        return shopper_current(Shopper.objects.get(customer_id=customer_id))


def _shopper_for_anonymous_id(anonymous_id: str) -> Shopper:
    alias = ShopperAlias.objects.select_related("shopper").filter(anonymous_id=anonymous_id).first()
    if alias is not None:
        return shopper_current(alias.shopper)
    try:
        with transaction.atomic():
            shopper = Shopper.objects.create()
            ShopperAlias.objects.create(anonymous_id=anonymous_id, shopper=shopper)
            return shopper
    except IntegrityError:
        alias = ShopperAlias.objects.select_related("shopper").get(anonymous_id=anonymous_id)
        return shopper_current(alias.shopper)


@transaction.atomic
def shopper_resolve(*, customer_id: str | None = None, anonymous_id: str | None = None) -> Shopper:
    """The shopper behind a customer id and/or an anonymous id, created if new.

    When both are given and they belong to two shoppers, the anonymous one is merged into the
    customer's, so a visitor's browsing history follows them once they log in.
    """
    customer_id = (customer_id or "").strip() or None
    anonymous_id = (anonymous_id or "").strip() or None
    if customer_id is None and anonymous_id is None:
        raise ValidationError("either userId or anonymousId is required", code="missing_identity")
    if customer_id is None:
        assert anonymous_id is not None
        return _shopper_for_anonymous_id(anonymous_id)

    shopper = _shopper_for_customer_id(customer_id)
    if anonymous_id is None:
        return shopper
    alias = ShopperAlias.objects.filter(anonymous_id=anonymous_id).first()
    if alias is None:
        ShopperAlias.objects.get_or_create(anonymous_id=anonymous_id, defaults={"shopper": shopper})
        alias = ShopperAlias.objects.get(anonymous_id=anonymous_id)
    owner = shopper_current(alias.shopper) if alias.shopper_id != shopper.pk else shopper
    if owner.pk != shopper.pk:
        if owner.customer_id:
            # The device belonged to another customer (a shared computer): move the device,
            # never merge two known customers.
            ShopperAlias.objects.filter(pk=alias.pk).update(shopper=shopper)
        else:
            shopper = shopper_merge(source=owner, target=shopper)
    return shopper


# --- Verified identity: who a browser visitor is ----------------------------------------


@dataclass(frozen=True)
class Visitor:
    """Who a browser visitor is: ``verified`` when a customer id came with its valid proof."""

    shopper: Shopper
    verified: bool


@transaction.atomic
def shopper_anonymous_resolve(*, anonymous_id: str) -> Shopper:
    """The anonymous shopper behind ``anonymous_id`` as seen from a browser without proof.

    When the id is new, a new anonymous shopper. When it belongs to (or was merged into) a
    known customer (a customer id is set: the visitor logged in on this browser earlier), the
    id is moved to a new anonymous shopper: whoever holds the id now, for instance the next
    person on a shared computer after logout, starts over as an anonymous shopper and gets
    nothing of the customer's. The customer's history stays with the customer; logging in
    again with proof folds the new anonymous shopper into the customer (``shopper_resolve``).
    Locks the alias row.
    """
    anonymous_id = anonymous_id.strip()
    if not anonymous_id:
        raise ValidationError("anonymous_id is required", code="missing_identity")
    alias = (
        ShopperAlias.objects.select_for_update()
        .select_related("shopper")
        .filter(anonymous_id=anonymous_id)
        .first()
    )
    if alias is None:
        return _shopper_for_anonymous_id(anonymous_id)
    owner = shopper_current(alias.shopper)
    if not owner.customer_id:
        return owner
    fresh = Shopper.objects.create()
    ShopperAlias.objects.filter(pk=alias.pk).update(shopper=fresh)
    return fresh


def visitor_resolve(
    *,
    anonymous_id: str | None = None,
    customer_id: str | None = None,
    proof: object = None,
    secret: str | None = None,
) -> Visitor:
    """The shopper a browser visitor acts as, created if new: the one rule for browser entries.

    - ``customer_id`` with valid ``proof`` (``hex(HMAC-SHA256(identity secret, customer id))``,
      see ``selectors.identity_verified``): that customer, with ``anonymous_id`` tied to them
      (an anonymous shopper behind it is merged in, as on login).
    - otherwise the anonymous shopper behind ``anonymous_id`` (``shopper_anonymous_resolve``):
      never a known customer, whatever customer id was claimed.

    Raises ``PermissionDenied`` (``identity_unverified``) for a customer id without valid proof
    and no anonymous id, and ``ValidationError`` when neither id is given. Server-side callers
    that trust their input use ``shopper_resolve`` instead.
    """
    customer_id = (customer_id or "").strip() or None
    anonymous_id = (anonymous_id or "").strip() or None
    if customer_id is not None and selectors.identity_verified(
        customer_id=customer_id, proof=proof, secret=secret
    ):
        return Visitor(
            shopper=shopper_resolve(customer_id=customer_id, anonymous_id=anonymous_id),
            verified=True,
        )
    if anonymous_id is None:
        if customer_id is not None:
            raise PermissionDenied(
                "a customer id from a browser needs its proof (user_hash)",
                code="identity_unverified",
            )
        raise ValidationError("anonymous_id or user_id is required", code="missing_identity")
    return Visitor(shopper=shopper_anonymous_resolve(anonymous_id=anonymous_id), verified=False)


@transaction.atomic
def identity_secret_rotate() -> StoreSettings:
    """Give the store a new identity secret; every proof signed with the old one stops working."""
    row = selectors.store_settings_get()
    row.identity_secret = new_identity_secret()
    row.save(update_fields=["identity_secret", "updated_at"])
    selectors.identity_secret_invalidate()
    return row


@transaction.atomic
def shopper_update_traits(*, shopper: Shopper, traits: Mapping[str, Any]) -> Shopper:
    """Apply identify traits: known ones to columns, the rest merged into ``traits``."""
    changed: set[str] = set()
    extra = dict(shopper.traits)
    consent_fields = CONSENT_TRAITS
    for key, value in traits.items():
        if key in consent_fields and isinstance(value, bool):
            if getattr(shopper, consent_fields[key]) != value:
                setattr(shopper, consent_fields[key], value)
                changed.add(consent_fields[key])
        elif key in _TRAIT_FIELDS and isinstance(value, str):
            field = _TRAIT_FIELDS[key]
            max_length = Shopper._meta.get_field(field).max_length or 255  # type: ignore[union-attr]  # trait fields are CharFields, which have max_length
            value = value.strip()[:max_length]
            if field == "email":
                value = value.lower()
            if getattr(shopper, field) != value:
                setattr(shopper, field, value)
                changed.add(field)
        elif (
            key == "name"
            and isinstance(value, str)
            and not (traits.get("firstName") or traits.get("first_name"))
        ):
            first, _, last = value.strip().partition(" ")
            shopper.first_name, shopper.last_name = first[:150], last[:150]
            changed |= {"first_name", "last_name"}
        elif key == "birthday" and isinstance(value, str):
            try:
                shopper.birthday = dt.date.fromisoformat(value[:10])
                changed.add("birthday")
            except ValueError:
                extra[key] = value
        else:
            extra[key] = value
    if extra != shopper.traits:
        shopper.traits = extra
        changed.add("traits")
    if changed:
        shopper.save(update_fields=[*changed, "updated_at"])
    return shopper


def _merge_json_lists(first: list[Any], second: list[Any]) -> list[Any]:
    return [*first, *(item for item in second if item not in first)]


@transaction.atomic
def shopper_merge(*, source: Shopper, target: Shopper) -> Shopper:
    """Fold ``source`` into ``target``: aliases, events, orders and every other app's rows.

    Locks both rows in primary-key order. Apps registered through
    ``registry.register_shopper_merge_handler`` fold their per-shopper rows first; every
    remaining foreign key to ``source`` is then re-pointed at ``target``. ``source`` stays as
    a tombstone with ``merged_into`` set so late references still resolve.
    """
    if source.pk == target.pk:
        return target
    locked = {
        s.pk: s
        for s in Shopper.objects.select_for_update()
        .filter(pk__in=[source.pk, target.pk])
        .order_by("pk")
    }
    source, target = locked[source.pk], locked[target.pk]
    if source.merged_into_id is not None:
        raise Conflict(f"shopper {source.pk} was already merged into {source.merged_into_id}")

    for handler in registry.merge_handlers():
        handler(source, target)

    for relation in Shopper._meta.related_objects:
        if not isinstance(relation, models.ManyToOneRel) or relation.related_model is Shopper:
            continue
        related_model = relation.related_model
        field_name = relation.field.name
        related_model._default_manager.filter(**{field_name: source}).update(**{field_name: target})

    # Fill gaps in the target's profile from the source; the target's own values win.
    updates: list[str] = []
    for field in (
        "email",
        "phone",
        "first_name",
        "last_name",
        "locale",
        "time_zone",
        "country",
        "birthday",
    ):
        if not getattr(target, field) and getattr(source, field):
            setattr(target, field, getattr(source, field))
            updates.append(field)
    for consent in ("email_consent", "sms_consent", "push_consent"):
        if getattr(source, consent) and not getattr(target, consent):
            setattr(target, consent, True)
            updates.append(consent)
    target.traits = {**source.traits, **target.traits}
    target.tags = _merge_json_lists(target.tags, source.tags)
    target.created_at = min(target.created_at, source.created_at)
    target.save(update_fields=[*updates, "traits", "tags", "created_at", "updated_at"])

    source.merged_into = target
    source.save(update_fields=["merged_into", "updated_at"])
    return target


# --- Catalog -----------------------------------------------------------------------------


@transaction.atomic
def product_upsert(
    *, sku: str, defaults: Mapping[str, Any], overwrite: bool = True
) -> tuple[Product, bool]:
    """Create the product with this SKU, or update it (when ``overwrite``). Returns (product, created)."""
    sku = sku.strip()
    if not sku:
        raise ValidationError("sku is required")
    values = dict(defaults)
    if "price" in values:
        values["price"] = money(values["price"], field="price")
        if values["price"] < ZERO:
            raise ValidationError("price cannot be negative")
    try:
        with transaction.atomic():
            product, created = Product.objects.get_or_create(
                sku=sku, defaults={"title": sku, "price": ZERO, **values}
            )
    except IntegrityError:
        product, created = Product.objects.get(sku=sku), False
    if not created and overwrite and values:
        for key, value in values.items():
            setattr(product, key, value)
        product.save(update_fields=[*values.keys(), "updated_at"])
    return product, created


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
        shopper = shopper_current(shopper)
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
                coupon_code=coupon_code.upper(),
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
        Product.objects.select_for_update().filter(pk=product.pk).first()
        stats = Review.objects.filter(product=product).aggregate(avg=Avg("rating"), n=Count("id"))
        Product.objects.filter(pk=product.pk).update(
            average_rating=Decimal(stats["avg"]).quantize(CENT), rating_count=stats["n"]
        )
    return review, created


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
        shopper is None or shopper_current(shopper).pk != coupon.owner_id
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


# --- Tracked events ----------------------------------------------------------------------


def event_handler_key(event: Event) -> str:
    """The registry key an event is delivered under: its name for track, ``$type`` otherwise."""
    return event.name if event.type == Event.Type.TRACK else f"${event.type}"


@transaction.atomic
def events_process(*, event_ids: Sequence[int]) -> int:
    """Run the registered handlers over these stored events, once each; returns how many ran.

    Claims the events that are still unprocessed with ``SELECT ... FOR UPDATE SKIP LOCKED``, so
    two workers given overlapping ids never process one event twice; handlers and the
    ``processed_at`` mark commit together, so a worker that dies mid-batch leaves the whole
    batch to be claimed again (handlers must be idempotent).
    """
    claimed = list(
        Event.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(id__in=list(event_ids), processed_at__isnull=True)
        .select_related("shopper", "source")
        .order_by("id")
    )
    if not claimed:
        return 0
    by_key: dict[str, list[Event]] = {}
    for event in claimed:
        by_key.setdefault(event_handler_key(event), []).append(event)
    for key, events in by_key.items():
        for handler in registry.event_handlers(key):
            handler(events)
    Event.objects.filter(id__in=[event.id for event in claimed]).update(processed_at=timezone.now())
    return len(claimed)
