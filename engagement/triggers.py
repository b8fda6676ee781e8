"""The triggers engagement owns, and the tracked-event handlers that fire or end them.

Registered from ``EngagementConfig.ready``. Each handler receives the stored events of one
name inside the event-processing transaction and is idempotent: a firing is keyed by its
occurrence, so an event handed over again enrols nobody twice.

| trigger          | fired by                                                      | occurrence        |
|------------------|---------------------------------------------------------------|-------------------|
| welcome          | identify that makes a new customer reachable (email, consent) | ``welcome``       |
| browse_abandoned | Product Viewed N times within a window (campaign options      | product + window  |
|                  | ``views``, ``window_hours``; settings give the defaults)      |                   |
| win_back         | beat: last order more than ``days`` ago (option, default 90), | last order        |
|                  | including customers already lapsed when the campaign starts   |                   |
| back_in_stock    | a detected restock, for watchers and recent viewers; once per | the change        |
|                  | shopper and product within ``once_per_days``                  |                   |
| price_drop       | a detected price drop of at least ``min_drop_percent`` or     | the change        |
|                  | ``min_drop_amount``, for watchers and recent viewers; once    |                   |
|                  | per shopper and product within ``once_per_days``              |                   |
| review_request   | Order Completed, or an order recorded through the API         | the order number  |
| nps_survey       | the same as review_request, at most once per shopper within   | the order number  |
|                  | ``PATRON_NPS_THROTTLE_DAYS``                                  |                   |
| birthday         | beat: the shopper's birthday in their time zone               | the year          |
| limited_offer    | a Broadcast of the campaign (options ``coupon``: kind, value, | the broadcast     |
|                  | valid_hours, prefix, min_spend)                               |                   |

End conditions, checked before every step is sent: browse abandonment and win-back end on a
purchase; back in stock when the product sells out again; price drop when the price rises
above the dropped price; a review request when its order is refunded in full; an NPS survey
when the shopper answered it. A watcher's ("notify me") first message goes without marketing
consent: the request is consent to that one message, and the message records it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings

from commerce.models import Event, Order, Product, Shopper
from engagement import services
from engagement.models import Campaign, NpsResponse, ProductChange, ProductView
from engagement.registry import Occurrence, register_trigger


def _traits(event: Event) -> Mapping[str, Any]:
    traits = event.properties.get("traits") if isinstance(event.properties, dict) else None
    if isinstance(traits, dict):
        return traits
    return event.properties if isinstance(event.properties, dict) else {}


# --- Template contexts -------------------------------------------------------------------


def _product_context(shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
    product_id = occurrence.data.get("product_id")
    product = Product.objects.filter(pk=product_id).first() if isinstance(product_id, int) else None
    return {"product": product}


def _order_context(shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
    order = (
        Order.objects.filter(number=occurrence.data.get("order_number"))
        .prefetch_related("lines__product")
        .first()
    )
    lines = list(order.lines.all()) if order is not None else []
    return {"order": order, "lines": lines}


def _win_back_context(shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
    return {
        "last_order": Order.objects.filter(number=occurrence.data.get("last_order_number")).first()
    }


def _offer_context(shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
    coupon = occurrence.data.get("coupon")
    if not isinstance(coupon, dict):
        return {}
    return {"coupon": services.offer_coupon_display(coupon=coupon, shopper=shopper)}


def _latest_viewed(shopper: Shopper) -> dict[str, Any]:
    view = ProductView.objects.filter(shopper=shopper).order_by("-last_viewed_at").first()
    product_id = view.product_id if view else Product.objects.values_list("pk", flat=True).first()
    return {"product_id": product_id}


def _latest_order(shopper: Shopper) -> dict[str, Any]:
    order = Order.objects.filter(shopper=shopper).order_by("-placed_at").first()
    return {
        "order_number": order.number if order else None,
        "last_order_number": order.number if order else None,
    }


def _preview_coupon(shopper: Shopper) -> dict[str, Any]:
    return {"coupon": {"code": "PREVIEW123", "kind": "percent", "value": "15", "valid_until": None}}


# --- End conditions ----------------------------------------------------------------------


def _same_product(event: Event, occurrence: Occurrence) -> bool:
    if event.name == "Order Completed":
        return True
    product = services.product_for_properties(event.properties or {})
    return product is not None and product.pk == occurrence.data.get("product_id")


def _bought_product(shopper: Shopper, occurrence: Occurrence) -> bool:
    product_id = occurrence.data.get("product_id")
    return isinstance(product_id, int) and services.product_bought_since(
        shopper=shopper, product_id=product_id, since=occurrence.fired_at
    )


def _product_now(occurrence: Occurrence) -> Product | None:
    product_id = occurrence.data.get("product_id")
    return Product.objects.filter(pk=product_id).first() if isinstance(product_id, int) else None


def _out_of_stock_again(shopper: Shopper, occurrence: Occurrence) -> bool:
    """Back in stock is over: the product sold out again (or left the catalog), even if it was
    restocked since (a later restock of it was detected: it had sold out in between)."""
    product = _product_now(occurrence)
    if product is None or not product.active or product.stock <= 0:
        return True
    change_id = occurrence.data.get("change_id")
    return isinstance(change_id, int) and (
        ProductChange.objects.filter(
            product_id=product.pk, kind=ProductChange.Kind.BACK_IN_STOCK, pk__gt=change_id
        ).exists()
    )


def _price_back_up(shopper: Shopper, occurrence: Occurrence) -> bool:
    """The price drop is over: the price rose above the dropped price (or the product left)."""
    product = _product_now(occurrence)
    try:
        dropped_to = Decimal(str(occurrence.data.get("new_price")))
    except InvalidOperation:
        return False
    return product is None or not product.active or product.price > dropped_to


def _order_refunded(shopper: Shopper, occurrence: Occurrence) -> bool:
    """The order the run asks about was refunded in full: no review request or reminder."""
    return Order.objects.filter(
        number=occurrence.data.get("order_number"), status=Order.Status.REFUNDED
    ).exists()


def _nps_answered(shopper: Shopper, occurrence: Occurrence) -> bool:
    """The shopper answered one of the run's NPS messages: no reminder after the answer."""
    return (
        occurrence.run_id is not None
        and NpsResponse.objects.filter(message__run_id=occurrence.run_id).exists()
    )


def _ordered_again(shopper: Shopper, occurrence: Occurrence) -> bool:
    return services.order_since(shopper=shopper, since=occurrence.fired_at)


def register() -> None:
    register_trigger(
        "welcome",
        label="Welcome (signup)",
        description=(
            "A new customer becomes reachable: the identify that gives them an email (and "
            "email consent, if the campaign needs it). Once per shopper."
        ),
        preview=lambda shopper: {},
    )
    register_trigger(
        "browse_abandoned",
        label="Browse abandoned",
        context=_product_context,
        ends_on=["Product Added", "Order Completed"],
        ends_on_match=_same_product,
        ends_when=_bought_product,
        preview=_latest_viewed,
        description=(
            "A product viewed N times within a window without being added to a cart or bought. "
            'Options: {"views": N, "window_hours": H} (defaults from settings).'
        ),
    )
    register_trigger(
        "win_back",
        label="Win-back (no order for D days)",
        context=_win_back_context,
        ends_on=["Order Completed"],
        ends_when=_ordered_again,
        preview=_latest_order,
        description=(
            'Options: {"days": 90}. Every customer whose last order is older than that, '
            "including those already lapsed when the campaign starts; once per lapse."
        ),
    )
    register_trigger(
        "back_in_stock",
        label="Back in stock",
        context=_product_context,
        ends_when=_out_of_stock_again,
        preview=_latest_viewed,
        description=(
            "Shoppers who asked to be told, or viewed the product recently; once per shopper "
            'and product within {"once_per_days": D} (default PATRON_PRODUCT_ALERT_ONCE_PER_DAYS). '
            "Every step stops once the product is out of stock again."
        ),
    )
    register_trigger(
        "price_drop",
        label="Price drop",
        context=_product_context,
        ends_when=_price_back_up,
        preview=_latest_viewed,
        description=(
            "Shoppers who asked to be told, or viewed the product recently. Options: "
            '{"min_drop_percent": P, "min_drop_amount": A} (either suffices; default '
            'PATRON_PRICE_DROP_MIN_PERCENT), {"once_per_days": D} per shopper and product. '
            "Every step stops once the price rises above the dropped price. "
            "Context: product, old_price, new_price."
        ),
    )
    register_trigger(
        "review_request",
        label="Post-purchase review request",
        context=_order_context,
        ends_on=["Product Reviewed"],
        ends_when=_order_refunded,
        preview=_latest_order,
        description=(
            "After an order; give the first step a delay (e.g. 7 days). "
            "Ends when the order is refunded in full."
        ),
    )
    register_trigger(
        "nps_survey",
        label="NPS survey",
        context=_order_context,
        ends_when=_nps_answered,
        preview=_latest_order,
        description=(
            "After an order, at most once per shopper in PATRON_NPS_THROTTLE_DAYS. Put "
            "{% for l in nps_links %} links in the body; later steps (reminders) stop once "
            "the shopper answers."
        ),
    )
    register_trigger(
        "birthday",
        label="Birthday",
        preview=lambda shopper: {"year": 2026},
        description="On the shopper's birthday, in their time zone.",
    )
    register_trigger(
        "limited_offer",
        label="Limited-time offer broadcast",
        context=_offer_context,
        preview=_preview_coupon,
        description=(
            "Sent to the audience by a Broadcast. Options: "
            '{"coupon": {"kind": "percent", "value": "15", "valid_hours": 48, "prefix": "LTO"}}; '
            "the template gets coupon.code, coupon.value (15), coupon.label (15%) and "
            "coupon.valid_until (a date in the shopper's language)."
        ),
    )


# --- Event handlers ----------------------------------------------------------------------


_CONSENT_TRAITS = ("email_consent", "emailConsent")


def _reached_before(event: Event, shopper_id: int) -> tuple[bool, bool]:
    """What earlier identifies of the shopper already gave: (an email, email consent)."""
    earlier = (
        Event.objects.filter(shopper_id=shopper_id, type=Event.Type.IDENTIFY, id__lt=event.id)
        .exclude(user_id="")
        .values_list("properties", flat=True)
    )
    had_email = had_consent = False
    for properties in earlier:
        traits = _traits(Event(properties=properties))
        had_email = had_email or bool(traits.get("email"))
        had_consent = had_consent or any(traits.get(key) is True for key in _CONSENT_TRAITS)
    return had_email, had_consent


def on_identify(events: Sequence[Event]) -> None:
    """A new customer is welcomed when they first become reachable: at the identify that
    gives them an email (and, for a campaign that needs consent, email consent), whether that
    is their first identify or a later one. Once per shopper; never a returning customer (one
    who ordered before).

    Traits and consent are applied by commerce's own identify handler, which runs first and
    takes consent only from server-side write keys.
    """
    candidates = [(e.shopper_id, e) for e in events if e.shopper_id is not None and e.user_id]
    # Without an active welcome campaign nothing could be sent: skip the per-event checks.
    if not candidates or not services.trigger_has_active_campaigns(trigger="welcome"):
        return
    campaigns = list(Campaign.objects.filter(trigger="welcome", status=Campaign.Status.ACTIVE))
    shoppers = Shopper.objects.in_bulk({shopper_id for shopper_id, _ in candidates})
    for shopper_id, event in candidates:
        shopper = shoppers.get(shopper_id)
        if shopper is None:
            continue
        shopper.refresh_from_db()  # an earlier event of this batch may have changed it
        if not shopper.email:
            continue
        if Order.objects.filter(shopper_id=shopper_id, placed_at__lt=event.timestamp).exists():
            continue
        had_email, had_consent = _reached_before(event, shopper_id)
        # A campaign whose conditions an earlier identify already met welcomed them then (or
        # they predate it): only the identify that completes them starts the welcome.
        reachable = [
            c.pk
            for c in campaigns
            if (shopper.email_consent or not c.requires_consent)
            and not (had_email and (had_consent or not c.requires_consent))
        ]
        if reachable:
            services.trigger_fire(
                trigger="welcome",
                shopper=shopper,
                occurrence_key="welcome",
                occurred_at=event.timestamp,
                campaign_ids=reachable,
            )


def on_product_viewed(events: Sequence[Event]) -> None:
    """Remember views; fire browse abandonment when a product was viewed often enough."""
    # A few queries per batch, not per event: this runs for half of all tracked events.
    products = services.products_for_properties([event.properties or {} for event in events])
    seen: list[tuple[int, Event, Product]] = [
        (event.shopper_id, event, product)
        for event, product in zip(events, products, strict=True)
        if product is not None and event.shopper_id is not None
    ]
    services.product_views_record_many(
        views=[(shopper_id, product.pk, event.timestamp) for shopper_id, event, product in seen]
    )
    campaigns = list(
        Campaign.objects.filter(trigger="browse_abandoned", status=Campaign.Status.ACTIVE)
    )
    if not campaigns or not seen:
        return
    shoppers = Shopper.objects.in_bulk({shopper_id for shopper_id, _, _ in seen})
    for shopper_id, event, product in seen:
        shopper = shoppers.get(shopper_id)
        if shopper is None:
            continue
        for campaign in campaigns:
            _browse_check(campaign, shopper, product, event)


def _browse_check(campaign: Campaign, shopper: Shopper, product: Product, event: Event) -> None:
    views = int(campaign.trigger_options.get("views", settings.PATRON_BROWSE_ABANDONMENT_VIEWS))
    hours = float(
        campaign.trigger_options.get(
            "window_hours", settings.PATRON_BROWSE_ABANDONMENT_WINDOW_HOURS
        )
    )
    window = dt.timedelta(hours=hours)
    same_product = services.product_events_q(product)
    recent = Event.objects.filter(
        shopper_id=shopper.pk,
        timestamp__gt=event.timestamp - window,
        timestamp__lte=event.timestamp,
    )
    viewed = list(
        recent.filter(same_product, name="Product Viewed")
        .order_by("timestamp")
        .values_list("timestamp", flat=True)
    )
    if len(viewed) < views:
        return
    if recent.filter(same_product, name="Product Added").exists() or services.product_bought_since(
        shopper=shopper, product_id=product.pk, since=event.timestamp - window
    ):
        return
    bucket = int(viewed[0].timestamp() // window.total_seconds())
    services.trigger_fire(
        trigger="browse_abandoned",
        shopper=shopper,
        occurrence_key=f"product:{product.pk}:{bucket}",
        data={"product_id": product.pk, "sku": product.sku, "views": len(viewed)},
        occurred_at=event.timestamp,
        campaign_ids=[campaign.pk],
    )


def on_order_completed(events: Sequence[Event]) -> None:
    for event in events:
        properties = event.properties or {}
        number = properties.get("order_id") or properties.get("orderId")
        if not number:
            continue
        order = Order.objects.filter(number=str(number)).first()
        if order is not None and order.shopper_id is not None:
            services.post_purchase_fire(order=order)
        elif event.shopper_id is not None:
            services.post_purchase_fire_for(
                shopper=Shopper.objects.get(pk=event.shopper_id),
                order_number=str(number),
                occurred_at=event.timestamp,
            )


def on_product_updated(events: Sequence[Event]) -> None:
    ids = set()
    for event in events:
        product = services.product_for_properties(event.properties or {})
        if product is not None:
            ids.add(product.pk)
    if ids:
        services.product_changes_detect(product_ids=ids)
