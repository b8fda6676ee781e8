from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from commerce import selectors, services
from commerce.models import (
    PERSONAL_DATA_PERMISSION,
    Category,
    Coupon,
    CouponRedemption,
    Event,
    EventFailure,
    Order,
    OrderLine,
    Product,
    Refund,
    Review,
    Shopper,
    ShopperAlias,
    StoreSettings,
    WriteKey,
)


class ShopperAliasInline(admin.TabularInline[ShopperAlias, Shopper]):
    """Anonymous ids join a shopper through identify and merges (``services.shopper_resolve``,
    ``shopper_merge``), never by hand."""

    model = ShopperAlias
    extra = 0
    can_delete = False
    readonly_fields = ("anonymous_id", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PersonalDataAdminMixin:
    """For admin pages that list shoppers' names, emails and phones: the model permissions are
    not enough without the personal-data permission (DESIGN.md, "Trust: who may do what").
    Put it before ``admin.ModelAdmin`` in the bases."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed: bool = super().has_view_permission(request, obj)  # type: ignore[misc]  # a mixin of ModelAdmin
        return allowed and request.user.has_perm(PERSONAL_DATA_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        allowed: bool = super().has_change_permission(request, obj)  # type: ignore[misc]  # a mixin of ModelAdmin
        return allowed and request.user.has_perm(PERSONAL_DATA_PERMISSION)


SHOPPER_PLACEHOLDER = "Shopper #{}"
HIDDEN_PLACEHOLDER = "(hidden: personal data)"


def shopper_label(shopper_id: int | None) -> str:
    """A shopper named without personal data: "Shopper #12" (the id staff can search for)."""
    return "-" if shopper_id is None else SHOPPER_PLACEHOLDER.format(shopper_id)


class _ShopperIdRawIdWidget(ForeignKeyRawIdWidget):
    """A raw-id box whose label names the shopper by id, not by their email."""

    def label_and_url_for_value(self, value: Any) -> tuple[str, str]:
        if value in (None, ""):
            return "", ""
        return (shopper_label(int(value)) if str(value).isdigit() else "", "")


class ShopperPrivacyAdminMixin:
    """For admin pages that mention shoppers beside other data (messages, runs, unsubscribes,
    ...): staff without ``commerce.view_shopper_personal_data`` (DESIGN.md, "Trust") see
    "Shopper #id" instead of the shopper (whose str is their email), "(hidden: personal data)"
    instead of ``personal_data_fields`` (addresses, texts written for the shopper), and cannot
    search on those; with the permission the page is unchanged.

    ``shopper_fields`` name the foreign keys to ``Shopper``; ``personal_data_fields`` the other
    fields. Masked in list columns, change pages (read-only values), raw-id labels and search
    fields. Put it before ``admin.ModelAdmin`` in the bases.
    """

    shopper_fields: Sequence[str] = ("shopper",)
    personal_data_fields: Sequence[str] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One display callable per masked field, found by the admin under ``<field>_masked``.
        for name in self.shopper_fields:
            setattr(self, f"{name}_masked", self._shopper_display(name))
        for name in self.personal_data_fields:
            setattr(self, f"{name}_masked", self._hidden_display(name))

    @staticmethod
    def _shopper_display(name: str) -> Callable[[Any], str]:
        def display(obj: Any) -> str:
            return shopper_label(getattr(obj, f"{name}_id"))

        display.short_description = name.replace("_", " ")  # type: ignore[attr-defined]  # read by the admin
        display.admin_order_field = name  # type: ignore[attr-defined]  # sorts by the id
        return display

    @staticmethod
    def _hidden_display(name: str) -> Callable[[Any], str]:
        def display(obj: Any) -> str:
            return HIDDEN_PLACEHOLDER if getattr(obj, name, "") else "-"

        display.short_description = name.replace("_", " ")  # type: ignore[attr-defined]  # read by the admin
        return display

    @staticmethod
    def sees_personal_data(request: HttpRequest) -> bool:
        """Whether the request's user may read shoppers' names, emails and phones."""
        return request.user.has_perm(PERSONAL_DATA_PERMISSION)

    def _masked(self, request: HttpRequest, names: Sequence[Any]) -> list[Any]:
        if self.sees_personal_data(request):
            return list(names)
        masked = {*self.shopper_fields, *self.personal_data_fields}
        return [f"{n}_masked" if isinstance(n, str) and n in masked else n for n in names]

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        return self._masked(request, super().get_list_display(request))  # type: ignore[misc]  # a mixin of ModelAdmin

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self._masked(request, super().get_readonly_fields(request, obj))  # type: ignore[misc]  # a mixin of ModelAdmin

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """Read-only personal fields become their masked displays; editable shopper fields
        stay (their raw-id label is masked by ``formfield_for_foreignkey``)."""
        fieldsets = super().get_fieldsets(request, obj)  # type: ignore[misc]  # a mixin of ModelAdmin
        if self.sees_personal_data(request):
            return fieldsets
        can_change = obj is None or self.has_change_permission(request, obj)  # type: ignore[attr-defined]  # ModelAdmin's
        readonly = set(super().get_readonly_fields(request, obj))  # type: ignore[misc]  # a mixin of ModelAdmin
        masked = {*self.shopper_fields, *self.personal_data_fields}

        def swap(name: Any) -> Any:
            if isinstance(name, str) and name in masked and (not can_change or name in readonly):
                return f"{name}_masked"
            return name

        return [
            (title, {**options, "fields": [swap(f) for f in options["fields"]]})
            for title, options in fieldsets
        ]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        fields = super().get_search_fields(request)  # type: ignore[misc]  # a mixin of ModelAdmin
        if self.sees_personal_data(request):
            return list(fields)
        # An address searched for would tell whether it is a shopper's: no such lookups.
        prefixes = tuple(f"{name}__" for name in self.shopper_fields)
        return [
            f
            for f in fields
            if f.lstrip("=^@") not in self.personal_data_fields
            and not f.lstrip("=^@").startswith(prefixes)
        ]

    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> Any:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]  # a mixin of ModelAdmin
        if (
            field is not None
            and db_field.name in self.shopper_fields
            and isinstance(field.widget, ForeignKeyRawIdWidget)
            and not self.sees_personal_data(request)
        ):
            widget = field.widget
            field.widget = _ShopperIdRawIdWidget(
                widget.rel, widget.admin_site, widget.attrs, using=widget.db
            )
        return field


@admin.register(Shopper)
class ShopperAdmin(PersonalDataAdminMixin, admin.ModelAdmin[Shopper]):
    list_display = (
        "id",
        "email",
        "customer_id",
        "first_name",
        "last_name",
        "country",
        "email_consent",
        "created_at",
    )
    list_filter = ("email_consent", "sms_consent", "push_consent", "country")
    search_fields = (
        "email",
        "customer_id",
        "first_name",
        "last_name",
        "phone",
        "aliases__anonymous_id",
    )
    # Consent changes with its records (unsubscribes, skipped messages): engagement's
    # preference centre, unsubscribe links and Unsubscribe admin, or identify traits.
    readonly_fields = (
        "created_at",
        "updated_at",
        "merged_into",
        "email_consent",
        "sms_consent",
        "push_consent",
    )
    raw_id_fields = ("merged_into",)
    inlines = [ShopperAliasInline]
    show_full_result_count = False


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin[Category]):
    list_display = ("name", "slug", "parent")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    list_select_related = ("parent",)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin[Product]):
    """Products, saved through ``services.product_upsert`` (price rules; a new SKU links the
    order lines that named it before the catalog knew it). Ratings come from reviews."""

    # Links typed without a scheme are https (Django 6 default; says so before it changes).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = (
        "sku",
        "title",
        "category",
        "price",
        "currency",
        "stock",
        "average_rating",
        "active",
    )
    list_filter = ("active", "category")
    search_fields = ("sku", "title")
    list_select_related = ("category",)
    raw_id_fields = ("category",)
    list_editable = ("price", "stock", "active")

    def get_readonly_fields(self, request: HttpRequest, obj: Product | None = None) -> list[str]:
        derived = ["average_rating", "rating_count", "created_at"]
        return derived if obj is None else ["sku", *derived]

    def save_model(self, request: HttpRequest, obj: Product, form: Any, change: bool) -> None:
        names = form.changed_data if change else list(form.cleaned_data)
        values = {name: form.cleaned_data[name] for name in names if name != "sku"}
        product, _ = services.product_upsert(sku=obj.sku, defaults=values)
        obj.pk = product.pk
        obj.refresh_from_db()


class OrderLineInline(admin.TabularInline[OrderLine, Order]):
    model = OrderLine
    extra = 0
    can_delete = False
    raw_id_fields = ("product",)
    readonly_fields = (
        "product",
        "sku",
        "title",
        "quantity",
        "unit_price",
        "total",
        "refunded_quantity",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RefundInline(admin.TabularInline[Refund, Order]):
    model = Refund
    extra = 0
    can_delete = False
    readonly_fields = ("number", "amount", "reason", "refunded_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin[Order]):
    """Orders are the store's record, read-only here: they arrive by the tracking API, the
    orders API or an import (``services.order_create``), refunds by the refunds API
    (``services.refund_create``), which keep totals, statuses, points and triggers in step."""

    list_display = (
        "number",
        "shopper",
        "email",
        "status",
        "total",
        "refunded_total",
        "currency",
        "source",
        "placed_at",
    )
    list_filter = ("status", "source", "currency")
    search_fields = ("number", "email", "shopper__email", "shopper__customer_id")
    date_hierarchy = "placed_at"
    list_select_related = ("shopper",)
    raw_id_fields = ("shopper",)
    inlines = [OrderLineInline, RefundInline]
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Order | None = None) -> list[str]:
        return [f.name for f in Order._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin[Review]):
    """Reviews arrive as tracked events (``services.review_record``); staff may only delete
    them, through ``services.reviews_delete``, which refreshes the products' ratings."""

    list_display = ("product", "shopper", "rating", "created_at")
    list_filter = ("rating",)
    raw_id_fields = ("product", "shopper")
    list_select_related = ("product", "shopper")
    actions = ["delete_reviews"]

    def get_readonly_fields(self, request: HttpRequest, obj: Review | None = None) -> list[str]:
        return [f.name for f in Review._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would leave the products' ratings stale
        return actions

    def delete_model(self, request: HttpRequest, obj: Review) -> None:
        services.reviews_delete(review_ids=[obj.pk])

    @admin.action(description="Delete the selected reviews", permissions=["delete"])
    def delete_reviews(self, request: HttpRequest, queryset: QuerySet[Review]) -> None:
        deleted = services.reviews_delete(review_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Deleted {deleted} reviews; ratings refreshed.")


class CouponRedemptionInline(admin.TabularInline[CouponRedemption, Coupon]):
    model = CouponRedemption
    extra = 0
    can_delete = False
    raw_id_fields = ("order", "shopper")
    readonly_fields = ("order", "shopper", "amount", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # redemptions come from orders (services.coupon_redeem), with times_used


@admin.register(Coupon)
class CouponAdmin(admin.ModelAdmin[Coupon]):
    list_display = (
        "code",
        "kind",
        "value",
        "min_spend",
        "valid_until",
        "times_used",
        "usage_limit",
        "source",
        "owner",
        "active",
    )
    list_filter = ("kind", "source", "active")
    search_fields = ("code", "owner__email")
    raw_id_fields = ("owner",)
    readonly_fields = ("times_used", "created_at")
    list_select_related = ("owner",)
    inlines = [CouponRedemptionInline]


@admin.register(WriteKey)
class WriteKeyAdmin(admin.ModelAdmin[WriteKey]):
    list_display = ("name", "key", "active", "created_at")
    readonly_fields = ("key", "created_at")
    list_filter = ("active",)


class EventStateFilter(admin.SimpleListFilter):
    """Processed, waiting (not yet processed) or failed (an ``EventFailure`` says why)."""

    title = "processing"
    parameter_name = "processing"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[Event]
    ) -> list[tuple[str, str]]:
        return [("processed", "processed"), ("waiting", "waiting"), ("failed", "failed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Event]) -> QuerySet[Event]:
        if self.value() == "processed":
            return queryset.filter(processed_at__isnull=False)
        if self.value() == "waiting":
            return queryset.filter(processed_at__isnull=True, failure__isnull=True)
        if self.value() == "failed":
            return queryset.filter(processed_at__isnull=True, failure__isnull=False)
        return queryset


@admin.register(EventFailure)
class EventFailureAdmin(admin.ModelAdmin[EventFailure]):
    """Events whose processing failed on their own data, with the reason; retry after a fix."""

    list_display = ("event", "event_name", "error_type", "reason", "attempts", "last_failed_at")
    list_filter = ("error_type", "event__name")
    list_select_related = ("event",)
    search_fields = ("reason", "event__message_id", "event__name")
    raw_id_fields = ("event",)
    readonly_fields = (
        "event",
        "error_type",
        "reason",
        "attempts",
        "first_failed_at",
        "last_failed_at",
    )
    date_hierarchy = "last_failed_at"
    actions = ["retry"]

    @admin.display(description="event name", ordering="event__name")
    def event_name(self, obj: EventFailure) -> str:
        return obj.event.name

    @admin.action(description="Process the selected events again", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[EventFailure]) -> None:
        result = services.event_failures_retry(
            event_ids=list(queryset.values_list("event_id", flat=True))
        )
        self.message_user(
            request,
            f"{result['processed']} processed, {result['failed']} failed again.",
            messages.SUCCESS if not result["failed"] else messages.WARNING,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Event)
class EventAdmin(admin.ModelAdmin[Event]):
    list_display = (
        "id",
        "type",
        "name",
        "shopper",
        "anonymous_id",
        "user_id",
        "timestamp",
        "received_at",
        "processed_at",
    )
    list_filter = ("type", EventStateFilter)
    search_fields = ("name", "message_id", "anonymous_id", "user_id")
    raw_id_fields = ("shopper",)
    readonly_fields = [f.name for f in Event._meta.fields]
    show_full_result_count = False
    date_hierarchy = "received_at"

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(StoreSettings)
class StoreSettingsAdmin(admin.ModelAdmin[StoreSettings]):
    """The store's one settings row: the identity secret (docs/identity.md), rotatable."""

    list_display = ("__str__", "updated_at")
    readonly_fields = ("updated_at",)
    actions = ["rotate_identity_secret"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not StoreSettings.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        selectors.identity_secret_invalidate()

    @admin.action(
        description="Generate a new identity secret (old hashes stop working)",
        permissions=["change"],
    )
    def rotate_identity_secret(
        self, request: HttpRequest, queryset: QuerySet[StoreSettings]
    ) -> None:
        services.identity_secret_rotate()
        self.message_user(
            request,
            "A new identity secret is in place: give it to the store's backend now, every "
            "customer hash signed with the old one is refused from here on.",
            messages.WARNING,
        )
