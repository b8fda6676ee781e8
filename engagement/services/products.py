"""Product views, "notify me" watches, restocks and price drops."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from commerce import services as commerce_services
from commerce.models import Product, Shopper
from core.exceptions import NotFound, ValidationError
from engagement.models import (
    Campaign,
    ProductChange,
    ProductSnapshot,
    ProductView,
    ProductWatch,
    Run,
)
from engagement.services._common import email_address_clean
from engagement.services.enrolment import _active_campaigns, trigger_fire

# --- Product views, "notify me", restocks and price drops ---------------------------------


# The keys a tracked event may name its product under: Segment's v2 spec (``sku``,
# ``product_id``) and v1 (``productId``, ``id``), in the order they are tried.
_PRODUCT_KEYS = ("sku", "product_id", "productId", "id")


def product_for_properties(properties: Mapping[str, Any]) -> Product | None:
    """The catalog product an event's properties name (see ``_PRODUCT_KEYS``), or None."""
    return products_for_properties([properties])[0]


def product_events_q(product: Product) -> Q:
    """A filter on ``Event`` for the events whose properties name ``product`` under any of the
    keys ``product_for_properties`` reads (the same lookup, as a query)."""
    condition = Q()
    for key in _PRODUCT_KEYS:
        condition |= Q(**{f"properties__{key}": product.sku})
        if product.sku.isdigit():  # a numeric id sent as a JSON number
            condition |= Q(**{f"properties__{key}": int(product.sku)})
    return condition


def products_for_properties(
    properties: Sequence[Mapping[str, Any]],
) -> list[Product | None]:
    """``product_for_properties`` for many events in one query, in the same order."""
    wanted = {
        str(p.get(key)) for p in properties for key in _PRODUCT_KEYS if p.get(key) not in (None, "")
    }
    known = {product.sku: product for product in Product.objects.filter(sku__in=wanted)}
    found: list[Product | None] = []
    for p in properties:
        product = None
        for key in _PRODUCT_KEYS:
            value = p.get(key)
            if value not in (None, "") and str(value) in known:
                product = known[str(value)]
                break
        found.append(product)
    return found


_VIEWS_SQL = """
INSERT INTO engagement_productview (shopper_id, product_id, views, first_viewed_at, last_viewed_at)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::timestamptz[], %s::timestamptz[])
ON CONFLICT (shopper_id, product_id) DO UPDATE
SET views = engagement_productview.views + EXCLUDED.views,
    last_viewed_at = GREATEST(engagement_productview.last_viewed_at, EXCLUDED.last_viewed_at)
"""


def product_views_record_many(*, views: Sequence[tuple[int, int, dt.datetime]]) -> None:
    """Count many views, ``(shopper_id, product_id, at)`` each, in one statement.

    Rows are written in (shopper, product) order, so two workers recording overlapping views
    lock them in the same order (no deadlock).
    """
    totals: dict[tuple[int, int], list[Any]] = {}
    for shopper_id, product_id, at in views:
        row = totals.get((shopper_id, product_id))
        if row is None:
            totals[(shopper_id, product_id)] = [1, at, at]
        else:
            row[0] += 1
            row[1] = min(row[1], at)
            row[2] = max(row[2], at)
    if not totals:
        return
    keys = sorted(totals)
    with connection.cursor() as cursor:
        cursor.execute(
            _VIEWS_SQL,
            [
                [k[0] for k in keys],
                [k[1] for k in keys],
                [totals[k][0] for k in keys],
                [totals[k][1] for k in keys],
                [totals[k][2] for k in keys],
            ],
        )


def product_views_record(*, shopper: Shopper, product: Product, at: dt.datetime) -> None:
    """Count a view (kept for back-in-stock and price-drop audiences)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO engagement_productview (shopper_id, product_id, views, first_viewed_at, last_viewed_at)
            VALUES (%s, %s, 1, %s, %s)
            ON CONFLICT (shopper_id, product_id) DO UPDATE
            SET views = engagement_productview.views + 1,
                last_viewed_at = GREATEST(engagement_productview.last_viewed_at, EXCLUDED.last_viewed_at)
            """,
            [shopper.pk, product.pk, at, at],
        )


@transaction.atomic
def product_watch_create(
    *, shopper: Shopper, product: Product, kind: str
) -> tuple[ProductWatch, bool]:
    """A "notify me" request; asking again while one is pending changes nothing."""
    if kind not in ProductWatch.Kind.values:
        raise ValidationError(f"kind must be one of {ProductWatch.Kind.values}")
    watch, created = ProductWatch.objects.get_or_create(shopper=shopper, product=product, kind=kind)
    if not created and watch.notified_at is not None:
        watch.notified_at = None
        watch.created_at = timezone.now()
        watch.save(update_fields=["notified_at", "created_at"])
        created = True
    return watch, created


@dataclass(frozen=True)
class NotifyRequest:
    """What ``notify_request_create`` did: the watch, whether it is new, the product's SKU."""

    watch: ProductWatch
    created: bool
    sku: str


@transaction.atomic
def notify_request_create(
    *,
    sku: str,
    kind: str,
    anonymous_id: str | None = None,
    customer_id: str | None = None,
    proof: object = None,
    email: str | None = None,
) -> NotifyRequest:
    """A browser visitor's "notify me" (back in stock, price drop) on the active product with
    this SKU, in one transaction.

    The visitor is resolved by ``commerce.services.visitor_resolve`` (a customer only with
    ``proof``, else the anonymous shopper, created if new); a typed ``email`` becomes their
    address when they have none (a known address is never replaced from a browser); then
    ``product_watch_create``. Raises ``NotFound`` (``product_not_found``) for an unknown or
    inactive SKU, ``ValidationError`` for a bad kind or email, ``PermissionDenied``
    (``identity_unverified``) for a customer id without proof and no anonymous id; on any
    of them nothing is stored (no shopper, no address, no watch).
    """
    if kind not in ProductWatch.Kind.values:
        raise ValidationError(f"kind must be one of {ProductWatch.Kind.values}")
    email = email_address_clean(email or "", field="email")
    product = Product.objects.filter(sku=sku.strip(), active=True).first()
    if product is None:
        raise NotFound(f"no product with sku {sku!r}", code="product_not_found")
    shopper = commerce_services.visitor_resolve(
        anonymous_id=anonymous_id, customer_id=customer_id, proof=proof
    ).shopper
    if email and not shopper.email:
        shopper = commerce_services.shopper_update_traits(shopper=shopper, traits={"email": email})
    watch, created = product_watch_create(shopper=shopper, product=product, kind=kind)
    return NotifyRequest(watch=watch, created=created, sku=product.sku)


def _option_decimal(options: Mapping[str, Any], key: str) -> Decimal | None:
    value = options.get(key)
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"trigger option {key} must be a number") from None


def price_drop_qualifies(*, campaign: Campaign, old_price: Decimal, new_price: Decimal) -> bool:
    """Whether a drop from ``old_price`` to ``new_price`` is big enough for ``campaign``.

    Options ``min_drop_percent`` (of the old price) and ``min_drop_amount`` (in the shop's
    currency); with both, either suffices. With neither, ``PATRON_PRICE_DROP_MIN_PERCENT``.
    """
    drop = old_price - new_price
    if drop <= 0:
        return False
    options = campaign.trigger_options or {}
    percent = _option_decimal(options, "min_drop_percent")
    amount = _option_decimal(options, "min_drop_amount")
    if percent is None and amount is None:
        percent = Decimal(settings.PATRON_PRICE_DROP_MIN_PERCENT)
    by_percent = percent is not None and old_price > 0 and drop * 100 >= percent * old_price
    by_amount = amount is not None and drop >= amount
    return by_percent or by_amount


def _recently_alerted(campaign: Campaign, product_id: int, now: dt.datetime) -> set[int]:
    """Shoppers this campaign already told about this product within its period (option
    ``once_per_days``, default ``PATRON_PRODUCT_ALERT_ONCE_PER_DAYS``)."""
    days = int(
        (campaign.trigger_options or {}).get(
            "once_per_days", settings.PATRON_PRODUCT_ALERT_ONCE_PER_DAYS
        )
    )
    if days <= 0:
        return set()
    return set(
        Run.objects.filter(
            campaign=campaign,
            data__product_id=product_id,
            started_at__gte=now - dt.timedelta(days=days),
        ).values_list("shopper_id", flat=True)
    )


def _notify_product_change(change: ProductChange) -> int:
    """Enrol the product's watchers and recent viewers in the change's campaigns.

    Per campaign: a price drop below its threshold enrols nobody, and a shopper it told about
    the same product within its period is not told again. A watcher's run is marked
    ``requested``: asking to be notified is consent to that one message (see the send-time
    consent check), so a guest who left only an email hears back.
    """
    now = timezone.now()
    watches = ProductWatch.objects.filter(
        product_id=change.product_id, kind=change.kind, notified_at__isnull=True
    )
    watcher_ids = set(watches.values_list("shopper_id", flat=True))
    since = now - dt.timedelta(days=settings.PATRON_PRODUCT_VIEW_WATCH_DAYS)
    shopper_ids = watcher_ids | set(
        ProductView.objects.filter(
            product_id=change.product_id, last_viewed_at__gte=since
        ).values_list("shopper_id", flat=True)
    )
    data = {
        "product_id": change.product_id,
        "old_price": str(change.old_price),
        "new_price": str(change.new_price),
        "old_stock": change.old_stock,
        "change_id": change.pk,
    }
    shoppers = list(
        Shopper.objects.filter(pk__in=shopper_ids, merged_into__isnull=True).order_by("pk")
    )
    fired = 0
    for campaign in _active_campaigns(change.kind, now):
        if change.kind == ProductChange.Kind.PRICE_DROP and not price_drop_qualifies(
            campaign=campaign, old_price=change.old_price, new_price=change.new_price
        ):
            continue
        alerted = _recently_alerted(campaign, change.product_id, now)
        for shopper in shoppers:
            if shopper.pk in alerted:
                continue
            fired += len(
                trigger_fire(
                    trigger=change.kind,
                    shopper=shopper,
                    occurrence_key=f"change:{change.pk}",
                    data={**data, "requested": shopper.pk in watcher_ids},
                    campaign_ids=[campaign.pk],
                )
            )
    watches.update(notified_at=now)
    return fired


def product_changes_detect(*, product_ids: Collection[int] | None = None) -> list[ProductChange]:
    """Compare products with their last snapshot; record and announce restocks and price drops.

    Other code that changes stock or prices may call this with the product ids at once; beat
    runs it over every product periodically. Snapshot rows are locked, so two runs never
    announce one change twice.
    """
    products = Product.objects.filter(active=True).order_by("pk")
    if product_ids is not None:
        products = products.filter(pk__in=list(product_ids))
    changes: list[ProductChange] = []
    ids = list(products.values_list("pk", flat=True))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        with transaction.atomic():
            current = {p.pk: p for p in Product.objects.filter(pk__in=chunk)}
            ProductSnapshot.objects.bulk_create(
                [
                    ProductSnapshot(product_id=p.pk, stock=p.stock, price=p.price)
                    for p in current.values()
                ],
                ignore_conflicts=True,
            )
            snapshots = (
                ProductSnapshot.objects.select_for_update()
                .filter(product_id__in=chunk)
                .order_by("product_id")
            )
            for snapshot in snapshots:
                product = current[snapshot.product_id]
                kinds = []
                if snapshot.stock <= 0 < product.stock:
                    kinds.append(ProductChange.Kind.BACK_IN_STOCK)
                if product.price < snapshot.price:
                    kinds.append(ProductChange.Kind.PRICE_DROP)
                if snapshot.stock == product.stock and snapshot.price == product.price:
                    continue
                for kind in kinds:
                    change = ProductChange.objects.create(
                        product=product,
                        kind=kind,
                        old_price=snapshot.price,
                        new_price=product.price,
                        old_stock=snapshot.stock,
                        new_stock=product.stock,
                    )
                    changes.append(change)
                    _notify_product_change(change)
                ProductSnapshot.objects.filter(pk=snapshot.pk).update(
                    stock=product.stock, price=product.price, seen_at=timezone.now()
                )
    return changes
