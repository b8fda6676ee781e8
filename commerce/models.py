"""The shared nouns every Patron app builds on.

Shoppers, the catalog, orders with their lines and refunds, coupons, and the tracked events
that the Segment-compatible API stores. Business operations on them live in
``commerce/services/``; reads in ``commerce/selectors.py``.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from decimal import Decimal

from django.contrib.postgres.indexes import BrinIndex
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core import cors

ZERO = Decimal("0.00")

# Shoppers' names, email, phone and addresses, wherever staff see them (staff API, the chat
# console beyond the agent's own conversations, exports). Model view permissions alone do not
# show them (DESIGN.md, "Trust: who may do what").
PERSONAL_DATA_PERMISSION = "commerce.view_shopper_personal_data"


class Shopper(models.Model):
    """A person who shops: known by the store's customer id, by anonymous ids, or both.

    Anonymous ids live in :class:`ShopperAlias` (a shopper may have used several devices).
    When two shoppers turn out to be one person, the one merged away keeps a pointer to the
    survivor in ``merged_into`` so that late references still resolve.
    """

    customer_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    email = models.EmailField(max_length=254, blank=True, default="", db_index=True)
    phone = models.CharField(max_length=32, blank=True, default="")
    first_name = models.CharField(max_length=150, blank=True, default="")
    last_name = models.CharField(max_length=150, blank=True, default="")
    locale = models.CharField(max_length=16, blank=True, default="")
    time_zone = models.CharField(
        max_length=64, blank=True, default="", help_text="IANA zone, e.g. Europe/Riga"
    )
    country = models.CharField(max_length=64, blank=True, default="")
    birthday = models.DateField(null=True, blank=True)
    email_consent = models.BooleanField(default=False)
    sms_consent = models.BooleanField(default=False)
    push_consent = models.BooleanField(default=False)
    traits = models.JSONField(
        default=dict, blank=True, help_text="Other traits sent by identify calls"
    )
    tags = models.JSONField(default=list, blank=True)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged_from"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(Upper("email"), name="commerce_shopper_email_upper")]
        permissions = [
            (
                "view_shopper_personal_data",
                "Can view shoppers' personal data (names, email, phone, addresses)",
            )
        ]

    def __str__(self) -> str:
        return self.email or self.customer_id or f"shopper {self.pk}"

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def is_known(self) -> bool:
        return bool(self.customer_id or self.email)


class ShopperAlias(models.Model):
    """An anonymous id (a browser, a device) that belongs to a shopper."""

    anonymous_id = models.CharField(max_length=255, unique=True)
    shopper = models.ForeignKey(Shopper, on_delete=models.CASCADE, related_name="aliases")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "shopper aliases"

    def __str__(self) -> str:
        return self.anonymous_id


class Category(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )

    class Meta:
        verbose_name_plural = "categories"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    title = models.CharField(max_length=300)
    description = models.TextField(blank=True, default="")
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="products"
    )
    price = models.DecimalField(
        max_digits=12, decimal_places=2, validators=[MinValueValidator(ZERO)]
    )
    currency = models.CharField(max_length=3, default="GBP")
    stock = models.IntegerField(default=0, help_text="Units available; negative means oversold")
    image_url = models.URLField(max_length=500, blank=True, default="")
    url = models.URLField(
        max_length=500, blank=True, default="", help_text="The product page in the store"
    )
    average_rating = models.DecimalField(max_digits=3, decimal_places=2, null=True, blank=True)
    rating_count = models.PositiveIntegerField(default=0)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["category", "active"], name="commerce_product_cat_active")]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="commerce_product_price_nonneg")
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.sku})"

    @property
    def in_stock(self) -> bool:
        return self.stock > 0


class Review(models.Model):
    """A shopper's rating of a product (from a Product Reviewed event or the API)."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="reviews")
    shopper = models.ForeignKey(
        Shopper, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews"
    )
    external_id = models.CharField(max_length=255, unique=True)
    rating = models.PositiveSmallIntegerField()
    body = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__gte=1, rating__lte=5), name="commerce_review_rating_1_5"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rating}/5 for {self.product_id}"


class Order(models.Model):
    class Status(models.TextChoices):
        # Translated: the bot tells shoppers their order's status in their language.
        PENDING = "pending", _("Pending")
        PAID = "paid", _("Paid")
        FULFILLED = "fulfilled", _("Fulfilled")
        CANCELLED = "cancelled", _("Cancelled")
        PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
        REFUNDED = "refunded", _("Refunded")

    class Source(models.TextChoices):
        STOREFRONT = "storefront", "Storefront checkout"
        TRACKING = "tracking", "Tracking API event"
        API = "api", "Orders API"
        IMPORT = "import", "Import"

    number = models.CharField(max_length=64, unique=True, help_text="The store's order number")
    shopper = models.ForeignKey(
        Shopper, null=True, blank=True, on_delete=models.SET_NULL, related_name="orders"
    )
    email = models.EmailField(
        max_length=254, blank=True, default="", help_text="For guest orders and order lookup"
    )
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.PAID)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    currency = models.CharField(max_length=3, default="GBP")
    subtotal = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    discount_total = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    shipping_total = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    tax_total = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    total = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    refunded_total = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    coupon_code = models.CharField(max_length=64, blank=True, default="")
    coupon_problem = models.CharField(
        max_length=200,
        blank=True,
        default="",
        help_text="Why the order's Patron coupon was not counted (used up, another shopper's, ...)",
    )
    country = models.CharField(max_length=64, blank=True, default="")
    placed_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["shopper", "-placed_at"], name="commerce_order_shopper_placed"),
            models.Index(fields=["placed_at"], name="commerce_order_placed"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(refunded_total__lte=models.F("total")),
                name="commerce_order_refund_le_total",
            ),
        ]

    def __str__(self) -> str:
        return f"Order {self.number}"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(
        Product, null=True, blank=True, on_delete=models.SET_NULL, related_name="order_lines"
    )
    sku = models.CharField(max_length=64)
    title = models.CharField(max_length=300, blank=True, default="")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    refunded_quantity = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["product", "order"], name="commerce_orderline_product")]
        constraints = [
            models.CheckConstraint(
                condition=Q(refunded_quantity__lte=models.F("quantity")),
                name="commerce_orderline_refund_le_qty",
            )
        ]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.sku}"


class Refund(models.Model):
    """Money given back on an order; loyalty claws back points from these."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="refunds")
    number = models.CharField(
        max_length=64, unique=True, help_text="Credit note or refund id; a retry is a no-op"
    )
    amount = models.DecimalField(
        max_digits=12, decimal_places=2, validators=[MinValueValidator(ZERO)]
    )
    reason = models.CharField(max_length=200, blank=True, default="")
    refunded_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Refund {self.number}"


class RefundLine(models.Model):
    refund = models.ForeignKey(Refund, on_delete=models.CASCADE, related_name="lines")
    order_line = models.ForeignKey(OrderLine, on_delete=models.CASCADE, related_name="refund_lines")
    quantity = models.PositiveIntegerField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)

    def __str__(self) -> str:
        return f"{self.quantity} x line {self.order_line_id}"


class Coupon(models.Model):
    class Kind(models.TextChoices):
        PERCENT = "percent", "Percent off"
        FIXED = "fixed", "Fixed amount off"
        FREE_SHIPPING = "free_shipping", "Free shipping"

    class Source(models.TextChoices):
        MANUAL = "manual", "Manual"
        LOYALTY = "loyalty", "Loyalty reward"
        CAMPAIGN = "campaign", "Campaign"

    code = models.CharField(max_length=64, help_text="Matched case-insensitively")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.DecimalField(
        max_digits=12, decimal_places=2, default=ZERO, validators=[MinValueValidator(ZERO)]
    )
    currency = models.CharField(max_length=3, default="GBP")
    min_spend = models.DecimalField(
        max_digits=12, decimal_places=2, default=ZERO, validators=[MinValueValidator(ZERO)]
    )
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    usage_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Total uses; empty for unlimited"
    )
    usage_limit_per_shopper = models.PositiveIntegerField(null=True, blank=True)
    times_used = models.PositiveIntegerField(default=0)
    owner = models.ForeignKey(
        Shopper,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="coupons",
        help_text="Only this shopper may use it",
    )
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(Upper("code"), name="commerce_coupon_code_ci_unique"),
            models.CheckConstraint(
                condition=~Q(kind="percent") | Q(value__lte=100),
                name="commerce_coupon_percent_le_100",
            ),
            models.CheckConstraint(
                condition=Q(usage_limit__isnull=True) | Q(times_used__lte=models.F("usage_limit")),
                name="commerce_coupon_used_le_limit",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    def save(self, *args: object, **kwargs: object) -> None:
        self.code = self.code.strip().upper()
        super().save(*args, **kwargs)  # type: ignore[arg-type]  # passes Model.save's arguments through unchanged

    @staticmethod
    def generate_code(prefix: str = "") -> str:
        """A code nobody can guess: 10 characters from an alphabet without look-alikes."""
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        body = "".join(secrets.choice(alphabet) for _ in range(10))
        return f"{prefix.upper()}{body}"

    def is_valid_at(self, when: datetime.datetime) -> bool:
        return (
            self.active
            and (self.valid_from is None or self.valid_from <= when)
            and (self.valid_until is None or when < self.valid_until)
            and (self.usage_limit is None or self.times_used < self.usage_limit)
        )


class CouponRedemption(models.Model):
    """One counted use of a coupon, for one order number.

    A store may redeem the code at checkout (``order`` is linked when the order is recorded)
    or simply send the order naming it; either way an order number uses a coupon once.
    """

    coupon = models.ForeignKey(Coupon, on_delete=models.CASCADE, related_name="redemptions")
    order = models.ForeignKey(
        Order, null=True, blank=True, on_delete=models.CASCADE, related_name="coupon_redemptions"
    )
    order_number = models.CharField(max_length=64, blank=True, default="")
    shopper = models.ForeignKey(Shopper, null=True, blank=True, on_delete=models.SET_NULL)
    amount = models.DecimalField(max_digits=12, decimal_places=2, default=ZERO)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["coupon", "order"], name="commerce_coupon_once_per_order"
            ),
            models.UniqueConstraint(
                fields=["coupon", "order_number"],
                condition=~Q(order_number=""),
                name="commerce_coupon_once_per_order_number",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.coupon_id} on order {self.order_id}"


class WriteKey(models.Model):
    """A source that may send tracking calls; its key is the HTTP Basic username."""

    name = models.CharField(max_length=100)
    key = models.CharField(max_length=64, unique=True, editable=False)
    active = models.BooleanField(default=True)
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            'Web origins whose pages may open the chat widget with this key, e.g. ["https://shop.example.com"]. '
            "Empty: only Patron's own hosts (ALLOWED_HOSTS)."
        ),
    )
    server_side = models.BooleanField(
        default=False,
        help_text=(
            "A key kept on the store's own servers. Only its events may record orders and refunds "
            "or change a shopper's consent: a key used in web pages is public, and anyone could "
            "send events with it."
        ),
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        if not self.key:
            self.key = secrets.token_urlsafe(24)
        super().save(*args, **kwargs)  # type: ignore[arg-type]  # passes Model.save's arguments through unchanged

    def allows_origin(self, origin: str) -> bool:
        """Whether a page at ``origin`` (scheme://host[:port]) may use this key in a browser."""
        return cors.origin_allowed(origin, self.allowed_origins or [])


def new_identity_secret() -> str:
    """A fresh identity secret: 32 random bytes as 64 hex characters."""
    return secrets.token_hex(32)


class StoreSettings(models.Model):
    """The store's own settings that every app relies on; one row (pk 1), edited in the admin.

    ``identity_secret`` is the HMAC-SHA256 key of verified identity: a browser that says it is
    customer ``X`` is believed only with ``hex(HMAC-SHA256(identity_secret, X))``, computed by
    the store's backend (see ``docs/identity.md``). Rotating it invalidates every proof the
    store's pages carry until they are rendered again with the new secret.
    """

    identity_secret = models.CharField(
        max_length=128,
        default=new_identity_secret,
        help_text=(
            "HMAC-SHA256 key the store's backend signs logged-in customer ids with (user_hash / "
            "customer_hash). Keep it secret; generate a new one if it leaked."
        ),
    )
    currency = models.CharField(
        max_length=3, default="GBP", help_text="The shop's currency (ISO 4217), e.g. GBP, EUR, TRY"
    )
    free_shipping_threshold = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        default=Decimal("40.00"),
        help_text=(
            "Orders from this amount ship free; empty: no free shipping. The shop's pages, the "
            "chat bot and the help pages all quote it ({free_shipping_threshold} in articles)."
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "store settings"
        verbose_name_plural = "store settings"
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="commerce_storesettings_single_row"),
        ]

    def __str__(self) -> str:
        return "Store settings"


class Event(models.Model):
    """One tracked call (identify, track, page, screen, group, alias), stored once per messageId.

    Ingestion writes these in bulk; ``processed_at`` is set when the event's handlers (commerce
    records, triggers, recommendations) have run, claimed with a conditional update so that two
    workers never process one event.
    """

    class Type(models.TextChoices):
        IDENTIFY = "identify"
        TRACK = "track"
        PAGE = "page"
        SCREEN = "screen"
        GROUP = "group"
        ALIAS = "alias"

    id = models.BigAutoField(primary_key=True)
    # Both foreign keys are covered by the composite indexes below; single-column indexes
    # would only add two index writes to every ingested row.
    source = models.ForeignKey(WriteKey, on_delete=models.PROTECT, related_name="+", db_index=False)
    message_id = models.CharField(max_length=255)
    type = models.CharField(max_length=16, choices=Type.choices)
    name = models.CharField(
        max_length=255, blank=True, default="", help_text="Event name for track, page name for page"
    )
    shopper = models.ForeignKey(
        Shopper,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,
    )
    anonymous_id = models.CharField(max_length=255, blank=True, default="")
    user_id = models.CharField(max_length=255, blank=True, default="")
    properties = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    timestamp = models.DateTimeField(help_text="When it happened, as the client said")
    received_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "message_id"], name="commerce_event_message_once"
            ),
        ]
        indexes = [
            models.Index(fields=["shopper", "-timestamp"], name="commerce_event_shopper_time"),
            models.Index(fields=["name", "-timestamp"], name="commerce_event_name_time"),
            BrinIndex(fields=["received_at"], name="commerce_event_received_brin"),
            models.Index(
                fields=["id"],
                name="commerce_event_unprocessed",
                condition=Q(processed_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.name}".strip()


def anonymize_key(value: str) -> str:
    """A stable, non-reversible stand-in for an identifier (used when erasing a shopper)."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class EventFailure(models.Model):
    """An event whose processing failed on its own data: kept out of the sweeper, shown to staff.

    Written by ``services.events_process`` when a handler raised a non-transient error for this
    event (the rest of its batch was processed); the event stays unprocessed until staff retry
    it (``services.event_failures_retry``), which deletes this row on success.
    """

    event = models.OneToOneField(
        Event, on_delete=models.CASCADE, primary_key=True, related_name="failure"
    )
    error_type = models.CharField(max_length=100, help_text="The exception class, e.g. DataError")
    reason = models.TextField(help_text="What went wrong, as the handler reported it")
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField(default=timezone.now)
    last_failed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["-last_failed_at"], name="commerce_eventfail_last"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id}: {self.error_type}"
