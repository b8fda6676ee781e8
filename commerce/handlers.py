"""Standard e-commerce events (Segment's e-commerce spec) turned into commerce records.

Registered in ``CommerceConfig.ready``; ``services.events_process`` calls them with stored events
in id order, inside its transaction. Every handler is idempotent (an event may be handed over
again after a worker dies): orders are keyed by ``order_id``, refunds by ``refund_id`` (or the
event), reviews by ``review_id`` (or the event), and products are only created, never
overwritten. Only events from server-side write keys make records; a browser key's events
stay events (see ``_from_server``). An event whose data cannot make a record is rolled back in
its own savepoint and recorded as failed (``EventFailure``), so one bad event never blocks the
others in its batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.db import transaction

from commerce import registry, selectors, services
from commerce.models import ZERO, Event, Order, Product, Shopper
from core.exceptions import ValidationError

logger = logging.getLogger(__name__)

ORDER_COMPLETED = "Order Completed"
ORDER_REFUNDED = "Order Refunded"
PRODUCT_REVIEWED = "Product Reviewed"
# Events that describe one product (properties at the top level) or several (``products``).
SINGLE_PRODUCT_EVENTS = ("Product Viewed", "Product Clicked", "Product Added")
PRODUCT_LIST_EVENTS = ("Cart Viewed", "Checkout Started")

_SKU_LENGTH = Product._meta.get_field("sku").max_length or 64
_NUMBER_LENGTH = Order._meta.get_field("number").max_length or 64


@contextmanager
def _each(event: Event) -> Iterator[None]:
    """Run one event's work in a savepoint; an error of its own is recorded, the batch goes on.

    Bad data (``ApplicationError``, a value the database refuses, a handler bug) rolls back
    this event's savepoint and is recorded as the event's failure (``EventFailure``, visible in
    the admin); a transient error (connection lost, deadlock) propagates so the whole batch is
    retried.
    """
    try:
        with transaction.atomic():
            yield
    except services.TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        services.event_failure_note(event=event, error=exc)


def _shopper(event: Event) -> Shopper | None:
    """The event's shopper, following merges that happened after it was stored."""
    return selectors.shopper_canonical(event.shopper) if event.shopper is not None else None


def _string(value: Any, field: str, *, max_length: int, required: bool = True) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        if required:
            raise ValidationError(f"{field} is required")
        return ""
    text = value.strip()
    if len(text) > max_length:
        raise ValidationError(f"{field} is longer than {max_length} characters")
    return text


def _quantity(value: Any) -> int:
    if value is None:
        return 1
    try:
        quantity = Decimal(str(value))
    except ArithmeticError:
        raise ValidationError(f"quantity must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not quantity.is_finite() or quantity != quantity.to_integral():
        raise ValidationError(f"quantity must be a whole number, got {value!r}")
    return int(quantity)


def _amount(properties: Mapping[str, Any], *keys: str) -> Decimal:
    for key in keys:
        if properties.get(key) is not None:
            return services.money(properties[key], field=key)
    return ZERO


def _sku(product: Mapping[str, Any]) -> str:
    return _string(
        product.get("sku") or product.get("product_id") or product.get("id"),
        "product sku or product_id",
        max_length=_SKU_LENGTH,
    )


def _products(properties: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    products = properties.get("products") or []
    if not isinstance(products, list) or not all(isinstance(p, dict) for p in products):
        raise ValidationError("products must be a list of objects")
    return products


def _derived_key(event: Event, prefix: str) -> str:
    """A stable identifier for a record that the event does not name itself."""
    digest = hashlib.sha256(f"{event.source_id}:{event.message_id}".encode()).hexdigest()
    return f"{prefix}-{digest[:40]}"


# --- Orders and refunds ------------------------------------------------------------------


def _from_server(event: Event, *, log: bool = True) -> bool:
    """Orders, refunds, consent, catalog entries and reviews are taken only from server-side
    write keys (see WriteKey): a browser key is public, and anyone could send events with it.
    Its events stay recorded as events (for the shopper's activity), nothing more."""
    if event.source.server_side:
        return True
    if log:
        logger.warning(
            "tracking event %s (%r) from browser key %s ignored: only server-side keys record it",
            event.pk,
            event.name,
            event.source_id,
        )
    return False


def order_completed(events: Sequence[Event]) -> None:
    services.event_shoppers_load(events)
    for event in events:
        if _from_server(event):
            with _each(event):
                _order_from_event(event)


def _order_from_event(event: Event) -> None:
    properties = event.properties
    number = _string(
        properties.get("order_id") or properties.get("checkout_id"),
        "order_id",
        max_length=_NUMBER_LENGTH,
    )
    lines = [
        services.LineInput(
            sku=_sku(product),
            quantity=_quantity(product.get("quantity")),
            unit_price=services.money(product.get("price", 0), field="price"),
            title=str(product.get("name") or ""),
        )
        for product in _products(properties)
    ]
    traits = event.context.get("traits")
    email = properties.get("email") or (traits.get("email") if isinstance(traits, dict) else "")
    currency = properties.get("currency")
    coupon = properties.get("coupon")
    services.order_create(
        number=number,
        lines=lines,
        shopper=_shopper(event),
        email=email if isinstance(email, str) and len(email) <= 254 else "",
        currency=currency if isinstance(currency, str) and currency else "GBP",
        placed_at=event.timestamp,
        source=Order.Source.TRACKING,
        shipping_total=_amount(properties, "shipping"),
        tax_total=_amount(properties, "tax"),
        discount_total=abs(_amount(properties, "discount")),
        coupon_code=coupon[:64] if isinstance(coupon, str) else "",
    )


def order_refunded(events: Sequence[Event]) -> None:
    for event in events:
        if _from_server(event):
            with _each(event):
                _refund_from_event(event)


def _refund_from_event(event: Event) -> None:
    properties = event.properties
    number = _string(properties.get("order_id"), "order_id", max_length=_NUMBER_LENGTH)
    order = Order.objects.filter(number=number).first()
    if order is None:
        raise ValidationError(f"no order {number!r} to refund")
    refund_number = (
        _string(properties.get("refund_id"), "refund_id", max_length=_NUMBER_LENGTH, required=False)
        or _derived_key(event, "refund")[:_NUMBER_LENGTH]
    )
    lines = [
        services.RefundLineInput(sku=_sku(product), quantity=_quantity(product.get("quantity")))
        for product in _products(properties)
    ]
    amount = next(
        (
            services.money(properties[key], field=key)
            for key in ("amount", "total", "revenue")
            if properties.get(key) is not None
        ),
        None,
    )
    reason = properties.get("reason")
    services.refund_create(
        order=order,
        number=refund_number,
        lines=lines,
        amount=abs(amount) if amount is not None else None,
        reason=reason if isinstance(reason, str) else "",
        refunded_at=event.timestamp,
    )


# --- Catalog and reviews -----------------------------------------------------------------


def _product_defaults(product: Mapping[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    name = product.get("name")
    if isinstance(name, str) and name.strip():
        defaults["title"] = name.strip()[:300]
    price = product.get("price")
    if isinstance(price, (int, float, str)) and not isinstance(price, bool):
        try:
            amount = services.money(price, field="price")
        except ValidationError:
            amount = None
        if amount is not None and amount >= ZERO:
            defaults["price"] = amount
    for source, target, limit in (("url", "url", 500), ("image_url", "image_url", 500)):
        value = product.get(source)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            defaults[target] = value[:limit]
    currency = product.get("currency")
    if isinstance(currency, str) and len(currency) == 3:
        defaults["currency"] = currency.upper()
    return defaults


def products_seen(events: Sequence[Event]) -> None:
    """Create products the catalog does not know yet from what server-side events say about them.

    Never overwrites: the merchant's catalog (imported or edited in the admin) wins. Events from
    a browser key never create products (nor set titles, prices, images or stock): anyone could
    put a product, with any image and price, into the shop's catalog through a public key.
    """
    described: dict[str, tuple[Event, Mapping[str, Any]]] = {}
    for event in events:
        if not _from_server(event, log=False):
            continue
        products = (
            [event.properties]
            if event.name in SINGLE_PRODUCT_EVENTS
            else event.properties.get("products")
        )
        if not isinstance(products, list):
            continue
        for product in products:
            if not isinstance(product, dict):
                continue
            try:
                described.setdefault(_sku(product), (event, product))
            except ValidationError:
                continue
    if not described:
        return
    known = set(Product.objects.filter(sku__in=list(described)).values_list("sku", flat=True))
    for sku, (event, product) in described.items():
        if sku not in known:
            with _each(event):
                services.product_upsert(
                    sku=sku, defaults=_product_defaults(product), overwrite=False
                )


def product_reviewed(events: Sequence[Event]) -> None:
    """Reviews from server-side keys become ``Review`` rows and move the product's rating.

    A review sent with a browser key stays a tracked event only: no review, no rating, no
    product. The store's backend (which knows the buyer) sends reviews it accepts with its
    server key.
    """
    services.event_shoppers_load(events)
    for event in events:
        if _from_server(event):
            with _each(event):
                _review_from_event(event)


def _review_from_event(event: Event) -> None:
    properties = event.properties
    sku = _sku(properties)
    rating = properties.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, (int, float, str)):
        raise ValidationError("rating is required")
    try:
        value = Decimal(str(rating))
    except ArithmeticError:
        raise ValidationError(f"rating must be a number, got {rating!r}") from None
    if not value.is_finite():
        raise ValidationError("rating must be a finite number")
    product, _ = services.product_upsert(
        sku=sku, defaults=_product_defaults(properties), overwrite=False
    )
    external_id = _string(
        properties.get("review_id"), "review_id", max_length=255, required=False
    ) or _derived_key(event, "review")
    body = properties.get("review_body")
    services.review_record(
        product=product,
        external_id=external_id,
        rating=int(value.to_integral_value()),
        shopper=_shopper(event),
        body=body if isinstance(body, str) else "",
    )


# --- Profiles ----------------------------------------------------------------------------


def traits_identified(events: Sequence[Event]) -> None:
    """Apply identify traits to the shopper, in the order the calls happened."""
    services.event_shoppers_load(events)
    by_shopper: dict[int, tuple[Shopper, dict[str, Any]]] = {}
    for event in sorted(events, key=lambda e: (e.timestamp, e.pk)):
        shopper = _shopper(event)
        if shopper is None or not event.properties:
            continue
        if event.source.server_side:
            accepted = dict(event.properties)
        elif shopper.customer_id and event.user_id != shopper.customer_id:
            # A browser call recorded anonymously whose shopper has since become a known
            # customer (merged on a later verified login): it does not speak for the customer.
            logger.warning(
                "identify %s from browser key %s not applied to customer shopper %s: no proof",
                event.pk,
                event.source_id,
                shopper.pk,
            )
            continue
        else:
            accepted = {
                k: v for k, v in event.properties.items() if k not in services.CONSENT_TRAITS
            }
        _, traits = by_shopper.setdefault(shopper.pk, (shopper, {}))
        traits.update(accepted)
    for shopper, traits in by_shopper.values():
        with transaction.atomic():
            services.shopper_update_traits(shopper=shopper, traits=traits)


HANDLERS: dict[str, Callable[[Sequence[Event]], None]] = {
    ORDER_COMPLETED: order_completed,
    ORDER_REFUNDED: order_refunded,
    PRODUCT_REVIEWED: product_reviewed,
    "$identify": traits_identified,
    **dict.fromkeys((*SINGLE_PRODUCT_EVENTS, *PRODUCT_LIST_EVENTS), products_seen),
}


def register() -> None:
    for name, handler in HANDLERS.items():
        registry.register_event_handler(name, handler)
