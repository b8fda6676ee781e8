"""Read queries on the shared nouns, shaped for the API and other apps (no N+1)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import time
from collections.abc import MutableMapping
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, DecimalField, F, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from commerce.models import (
    ZERO,
    Category,
    Order,
    OrderLine,
    Product,
    Refund,
    Shopper,
    ShopperAlias,
    StoreSettings,
    WriteKey,
)
from core import cors

logger = logging.getLogger(__name__)


def product_list(
    *,
    category: str | None = None,
    active: bool | None = None,
    in_stock: bool | None = None,
    q: str | None = None,
) -> QuerySet[Product]:
    """Products by SKU, filtered: ``category`` is a slug (its sub-categories count too)."""
    products = Product.objects.select_related("category").order_by("sku", "pk")
    if category:
        products = products.filter(
            Q(category__slug=category)
            | Q(category__parent__slug=category)
            | Q(category__parent__parent__slug=category)
        )
    if active is not None:
        products = products.filter(active=active)
    if in_stock is not None:
        products = products.filter(stock__gt=0) if in_stock else products.filter(stock__lte=0)
    if q:
        products = products.filter(Q(title__icontains=q) | Q(sku__iexact=q))
    return products


def product_get(*, sku: str) -> Product | None:
    return Product.objects.select_related("category").filter(sku=sku).first()


def category_list() -> QuerySet[Category]:
    return (
        Category.objects.select_related("parent")
        .annotate(product_count=Count("products"))
        .order_by("slug", "pk")
    )


def _orders_with_details() -> QuerySet[Order]:
    return (
        Order.objects.select_related("shopper")
        .prefetch_related(
            Prefetch("lines", queryset=OrderLine.objects.order_by("pk")),
            Prefetch("refunds", queryset=Refund.objects.order_by("refunded_at", "pk")),
        )
        .order_by("-placed_at", "-pk")
    )


def order_list(
    *,
    customer_id: str | None = None,
    status: str | None = None,
    source: str | None = None,
    placed_after: dt.datetime | None = None,
    placed_before: dt.datetime | None = None,
) -> QuerySet[Order]:
    """Orders, newest first, with their shopper, lines and refunds loaded in three queries."""
    orders = _orders_with_details()
    if customer_id:
        orders = orders.filter(shopper__customer_id=customer_id)
    if status:
        orders = orders.filter(status=status)
    if source:
        orders = orders.filter(source=source)
    if placed_after:
        orders = orders.filter(placed_at__gte=placed_after)
    if placed_before:
        orders = orders.filter(placed_at__lt=placed_before)
    return orders


def order_get(*, number: str) -> Order | None:
    return _orders_with_details().filter(number=number).first()


def _with_totals(shoppers: QuerySet[Shopper]) -> QuerySet[Shopper]:
    """Annotate ``order_count`` and ``total_spent`` (order totals net of refunds)."""
    orders = Order.objects.filter(shopper=OuterRef("pk")).order_by().values("shopper")
    return shoppers.annotate(
        order_count=Coalesce(Subquery(orders.annotate(n=Count("pk")).values("n")), 0),
        total_spent=Coalesce(
            Subquery(orders.annotate(spent=Sum(F("total") - F("refunded_total"))).values("spent")),
            ZERO,
            output_field=DecimalField(max_digits=14, decimal_places=2),
        ),
    )


def shopper_list(*, customer_id: str | None = None, email: str | None = None) -> QuerySet[Shopper]:
    """Shoppers not merged away, by id, with their order count and spend."""
    shoppers = Shopper.objects.filter(merged_into__isnull=True).order_by("pk")
    if customer_id:
        shoppers = shoppers.filter(customer_id=customer_id)
    if email:
        shoppers = shoppers.filter(email__iexact=email)
    return _with_totals(shoppers)


# --- Merges ------------------------------------------------------------------------------

SHOPPER_MERGE_DEPTH_MAX = 32
"""The longest ``merged_into`` chain followed. ``services.shopper_merge`` adds one link per
merge, so a real chain is a handful long; a longer one (or a cycle, which no service writes)
is corrupt data: it is logged and resolved to a fixed member instead of hanging a request."""

ShopperLink = tuple[int | None, str | None]
"""A shopper row as the merge walk needs it: (``merged_into_id``, ``customer_id``)."""


def shopper_canonical_ids(links: MutableMapping[int, ShopperLink]) -> dict[int, int]:
    """Map each shopper id in ``links`` to the id of the shopper it survives as.

    ``links`` maps shopper id -> (``merged_into_id``, ``customer_id``) for the rows the caller
    has read; the merge targets it lacks are loaded (one query per chain level, at most
    ``SHOPPER_MERGE_DEPTH_MAX``) and added to it in place, so the caller also learns the
    survivors' customer ids. A shopper never merged maps to itself. A cycle resolves every
    member to its lowest id; a chain longer than the bound stops there (both logged). A target
    deleted meanwhile ends the chain at the last shopper that exists.
    """
    missing: set[int] = set()
    for _ in range(SHOPPER_MERGE_DEPTH_MAX):
        pending = {
            target
            for target, _ in links.values()
            if target is not None and target not in links and target not in missing
        }
        if not pending:
            break
        for pk, target, customer_id in Shopper.objects.filter(pk__in=pending).values_list(
            "pk", "merged_into_id", "customer_id"
        ):
            links[pk] = (target, customer_id)
        missing |= pending - links.keys()
    return {pk: _survivor(pk, links, missing) for pk in list(links)}


def _survivor(pk: int, links: MutableMapping[int, ShopperLink], missing: set[int]) -> int:
    chain = [pk]
    position = {pk: 0}
    while (target := links.get(chain[-1], (None, None))[0]) is not None and target not in missing:
        if target in position:
            cycle = chain[position[target] :]
            logger.error("shopper merge cycle %s: resolved to %d", cycle, min(cycle))
            return min(cycle)
        if target not in links or len(chain) > SHOPPER_MERGE_DEPTH_MAX:
            logger.error("shopper %d: merge chain longer than %d", pk, SHOPPER_MERGE_DEPTH_MAX)
            break
        position[target] = len(chain)
        chain.append(target)
    return chain[-1]


def shopper_canonical(shopper: Shopper) -> Shopper:
    """The shopper ``shopper`` survives as: itself unless merged away (then no query), else
    the end of its ``merged_into`` chain (see ``shopper_canonical_ids`` for cycles and bounds).
    """
    if shopper.merged_into_id is None:
        return shopper
    survivor = shopper_canonical_ids({shopper.pk: (shopper.merged_into_id, shopper.customer_id)})[
        shopper.pk
    ]
    if survivor == shopper.pk:
        return shopper
    return Shopper.objects.filter(pk=survivor).first() or shopper


def shopper_get(*, pk: int) -> Shopper | None:
    """A shopper by id, also one merged away (its ``merged_into`` names the survivor)."""
    return _with_totals(Shopper.objects.filter(pk=pk)).first()


def write_key_active(*, key: str | None) -> WriteKey | None:
    """The active write key with this value, or None."""
    if not key:
        return None
    return WriteKey.objects.filter(key=key, active=True).first()


# --- Verified identity -------------------------------------------------------------------
#
# The one rule for every browser-facing entry (tracking with a browser key, the chat socket,
# every widget API): a customer id that comes from a browser counts only with its proof,
# ``hex(HMAC-SHA256(identity secret, customer id))`` computed by the store's backend, as in
# Intercom's and Chatwoot's identity verification. See docs/identity.md.

_SECRET_TTL_S = 2.0
_secret_cache: tuple[float, str] | None = None


def shop_write_key() -> str | None:
    """The write key Patron's own shop pages (the demo shop, the help centre) embed the chat
    widget with.

    ``PATRON_STOREFRONT_WRITE_KEY`` names one explicitly; otherwise the oldest active key is
    used, the way a merchant would paste the first key they created in the admin.
    """
    configured = getattr(settings, "PATRON_STOREFRONT_WRITE_KEY", "")
    if configured:
        return str(configured)
    return WriteKey.objects.filter(active=True).order_by("pk").values_list("key", flat=True).first()


def store_settings_get() -> StoreSettings:
    """The store's settings row (pk 1), created with a fresh identity secret when missing."""
    row, _ = StoreSettings.objects.get_or_create(pk=1)
    return row


CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "TRY": "₺"}
# Placeholders the merchant's texts (help articles, bot answers) may hold, filled from the
# store's settings so that every page and the bot quote one source of truth.
FREE_SHIPPING_PLACEHOLDER = "{free_shipping_threshold}"


def money_format(*, amount: Decimal, currency: str) -> str:
    """``amount`` as shoppers read it: ``£40``, ``€12.50``, ``40 SEK`` (whole amounts without
    decimals)."""
    text = f"{amount:.0f}" if amount == amount.to_integral_value() else f"{amount:.2f}"
    symbol = CURRENCY_SYMBOLS.get(currency.upper())
    return f"{symbol}{text}" if symbol else f"{text} {currency.upper()}"


def free_shipping_threshold_text() -> str | None:
    """The store's free-shipping threshold with its currency (``£40``), or None when the store
    ships nothing free (``StoreSettings.free_shipping_threshold`` empty)."""
    row = store_settings_get()
    if row.free_shipping_threshold is None:
        return None
    return money_format(amount=row.free_shipping_threshold, currency=row.currency)


def store_text_render(text: str) -> str:
    """``text`` with ``{free_shipping_threshold}`` replaced by the store's threshold (``£40``);
    untouched when it holds no placeholder (one settings read otherwise)."""
    if FREE_SHIPPING_PLACEHOLDER not in text:
        return text
    threshold = free_shipping_threshold_text()
    return text.replace(FREE_SHIPPING_PLACEHOLDER, threshold or "—")


def identity_secret_get(*, fresh: bool = False) -> str:
    """The store's identity secret; cached in-process for two seconds (a rotation in the admin
    reaches every process within that time)."""
    global _secret_cache
    now = time.monotonic()
    if not fresh and _secret_cache is not None and now - _secret_cache[0] < _SECRET_TTL_S:
        return _secret_cache[1]
    secret = store_settings_get().identity_secret
    _secret_cache = (now, secret)
    return secret


def identity_secret_invalidate() -> None:
    """Forget the cached secret (after the admin rotated it, in this process)."""
    global _secret_cache
    _secret_cache = None


def identity_hash(*, customer_id: str, secret: str) -> str:
    """``hex(HMAC-SHA256(secret, customer_id))``: 64 lowercase hex characters, both UTF-8."""
    return hmac.new(secret.encode(), customer_id.encode(), hashlib.sha256).hexdigest()


def identity_verified(*, customer_id: str | None, proof: object, secret: str | None = None) -> bool:
    """Whether ``proof`` is the store's HMAC of ``customer_id`` (compared in constant time).

    ``proof`` is whatever the browser sent (anything but a non-empty string is no proof);
    hex case is ignored. ``secret`` defaults to the store's; an empty secret verifies nothing.
    """
    if not customer_id or not isinstance(proof, str) or not proof:
        return False
    secret = identity_secret_get() if secret is None else secret
    if not secret:
        return False
    expected = identity_hash(customer_id=customer_id, secret=secret)
    return hmac.compare_digest(expected.encode(), proof.strip().lower().encode("utf-8"))


def shopper_for_customer_id(*, customer_id: str) -> Shopper | None:
    """The (surviving) shopper with this customer id, or None. Trusts the id: for server-side
    callers only (a browser's id goes through ``visitor_find``)."""
    customer_id = customer_id.strip()
    if not customer_id:
        return None
    found = Shopper.objects.filter(customer_id=customer_id).first()
    return shopper_canonical(found) if found is not None else None


def visitor_find(
    *, anonymous_id: str | None = None, customer_id: str | None = None, proof: object = None
) -> Shopper | None:
    """The shopper a browser visitor may act as, for reading; never creates or changes a row.

    A customer id with valid ``proof``: that customer (None if unknown). Otherwise the shopper
    behind ``anonymous_id``, unless it is (or was merged into) a known customer: an anonymous
    id alone never grants a known customer's data, so that shopper is not returned (None).
    """
    customer_id = (customer_id or "").strip()
    anonymous_id = (anonymous_id or "").strip()
    if customer_id and identity_verified(customer_id=customer_id, proof=proof):
        found = Shopper.objects.filter(customer_id=customer_id).first()
        return shopper_canonical(found) if found is not None else None
    if not anonymous_id:
        return None
    alias = ShopperAlias.objects.select_related("shopper").filter(anonymous_id=anonymous_id).first()
    shopper = shopper_canonical(alias.shopper) if alias is not None else None
    if shopper is None or shopper.customer_id:
        return None
    return shopper


def write_key_origin_allowed(
    *, write_key: WriteKey, origin: str | None, host: str | None, origin_required: bool = False
) -> bool:
    """May a call that carries ``origin`` (the browser's ``Origin`` header, verbatim; None
    when absent) and was sent to ``host`` (its ``Host`` header) use ``write_key``?

    The one origin decision of every key-authenticated entry: the shopper chat socket, the
    tracking API (``/v1/*``) and the widget APIs. In every mode, ``ALLOWED_HOSTS = ["*"]``
    included:

    - Patron's own pages (``core.cors.origin_is_own``: same-origin, ``PATRON_BASE_URL``, hosts
      named in ``ALLOWED_HOSTS``) may use any key;
    - another page only when the key lists its origin in ``allowed_origins`` (scheme, host and
      port exactly). A key that lists none is usable from Patron's own pages only;
    - ``null`` and anything that is not an origin are refused.

    A call without an Origin (a server, a script, a same-origin GET) is decided by the key
    alone, unless ``origin_required`` (a WebSocket handshake, which browsers always send with
    an Origin): an Origin can be forged outside a browser anyway, so the check only keeps other
    sites' pages from using the key. Decide at the call, not at the preflight: a preflight
    carries no key.
    """
    if origin is None:
        return not origin_required
    if cors.origin_is_own(origin, host=host):
        return True
    return origin.strip() not in ("", "null") and write_key.allows_origin(origin)


def write_key_cors_origin(*, write_key: WriteKey | None, origin: str | None) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a call from ``origin`` with ``write_key``:
    the origin itself when the key lists it, else None (no CORS answer)."""
    if origin is None or write_key is None or not write_key.allowed_origins:
        return None
    return origin if write_key.allows_origin(origin) else None
