"""The catalog and orders API for merchants and integrations (staff only), under ``/api/``.

One thin view per operation with its own input and output serializers; the work is done by
``commerce.importers`` (imports, upserts, order recording), ``commerce.services`` (refunds,
product updates) and ``commerce.selectors`` (reads). Staff sign in with the admin session or
HTTP Basic (username and password).

Each view needs Django model permissions (``core.permissions.StaffModelPermissions``):

| endpoint                              | GET                     | POST / PATCH                      |
|---------------------------------------|-------------------------|-----------------------------------|
| products/, products/<sku>/            | view_product            | add_product + change_product      |
|                                       |                         | (upsert); PATCH: change_product   |
| products/import/                      |                         | add_product + change_product      |
| categories/                           | view_category           |                                   |
| orders/, orders/<number>/             | view_order              | add_order                         |
| orders/import/                        |                         | add_order                         |
| orders/<number>/refunds/              |                         | add_refund                        |
| shoppers/, shoppers/<id>/             | view_shopper + view_shopper_personal_data                   |

Orders carry the buyer's email: without ``commerce.view_shopper_personal_data`` it is given as
``""`` (the order's and its shopper's). Errors use the project's one error body
``{"error": {"code", "message", "detail"}}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response

from commerce import importers, selectors, services
from commerce.models import PERSONAL_DATA_PERMISSION, Category, Order, Product, Refund, Shopper
from core.api import StaffApiView, error_responses
from core.exceptions import NotFound, ValidationError
from core.logins import BasicAuthentication
from core.pagination import Pagination, page_of, page_parameters
from core.parsers import JSONParser
from core.permissions import StaffModelPermissions, model_permission

MAX_AMOUNT = importers.MAX_AMOUNT
MAX_ROWS = 5000
INT32_MAX = 2_147_483_647


def _amount(**kwargs: Any) -> serializers.DecimalField:
    """Money as the models store it: numeric(12, 2), a string in responses."""
    return serializers.DecimalField(max_digits=12, decimal_places=2, **kwargs)


class MoneyInputField(serializers.DecimalField):
    """Money in a request: a JSON number (or numeric string), rounded half up to the penny."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            max_digits=12,
            decimal_places=2,
            coerce_to_string=False,
            max_value=MAX_AMOUNT,
            rounding=ROUND_HALF_UP,
            **kwargs,
        )

    def validate_precision(self, value: Decimal) -> Decimal:
        # Extra decimals are rounded away by quantize(), as services.money does; only a value
        # too large for numeric(12, 2) is refused (and before quantize() could overflow).
        if abs(value) >= 10**10:
            self.fail("max_whole_digits", max_whole_digits=10)
        return value


def _amount_input(**kwargs: Any) -> serializers.DecimalField:
    return MoneyInputField(**kwargs)


# --- Shared pieces -----------------------------------------------------------------------


READ_ERRORS = error_responses(400, 401, 403)
ONE_ERRORS = error_responses(401, 403, 404)
WRITE_ERRORS = error_responses(400, 401, 403, 415)
NOT_FOUND = error_responses(404)
PAGE_PARAMETERS = page_parameters()


class StaffApi(StaffApiView):
    """Base of every view here: staff with the model permissions the view names, JSON bodies."""

    # Basic auth with login attempts limited (django-axes), as in REST_FRAMEWORK's defaults.
    authentication_classes = [BasicAuthentication, SessionAuthentication]
    permission_classes = [StaffModelPermissions]
    parser_classes = [JSONParser]
    permission_model: type[Any] | None = None
    method_permissions: Mapping[str, Sequence[str]] = {}
    required_permissions: Sequence[str] = ()

    def personal_data_visible(self) -> bool:
        return bool(self.request.user.has_perm(PERSONAL_DATA_PERMISSION))

    def get_serializer_context(self) -> dict[str, Any]:
        return {"personal_data": self.personal_data_visible()}

    def paginate(
        self, queryset: QuerySet[Any], serializer_class: type[serializers.Serializer[Any]]
    ) -> Response:
        paginator = Pagination()
        page = paginator.page(queryset, self.request, view=self)
        return paginator.get_paginated_response(
            serializer_class(page, many=True, context=self.get_serializer_context()).data
        )


def _lookup(value: str) -> str:
    """A path parameter usable in a query (PostgreSQL refuses NUL characters): else 404."""
    if "\x00" in value or len(value) > 255:
        raise NotFound("not found")
    return value


def _filters(
    serializer_class: type[serializers.Serializer[Any]], request: Request
) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _row_errors(errors: Any) -> str:
    if isinstance(errors, Mapping):
        key, value = next(iter(errors.items()))
        return f"{key}: {_row_errors(value)}"
    if isinstance(errors, list) and errors:
        return _row_errors(errors[0])
    return str(errors)


def _validate_rows(
    serializer_class: type[serializers.Serializer[Any]], data: Any
) -> list[dict[str, Any]]:
    """Validate a JSON array row by row; the first bad row is named (1-based) in the error."""
    if not isinstance(data, list):
        raise ValidationError("expected a JSON array", code="invalid")
    if len(data) > MAX_ROWS:
        raise ValidationError(f"at most {MAX_ROWS} rows per request", code="invalid")
    rows = []
    for number, item in enumerate(data, start=1):
        serializer = serializer_class(data=item)
        if not serializer.is_valid():
            raise ValidationError(
                f"row {number}: {_row_errors(serializer.errors)}",
                code="invalid_row",
                extra={"row": number, "errors": serializer.errors},
            )
        rows.append(dict(serializer.validated_data))
    return rows


# --- Output serializers ------------------------------------------------------------------


class CategoryRefSerializer(serializers.Serializer[Any]):
    slug = serializers.CharField()
    name = serializers.CharField()


class ProductOutputSerializer(serializers.Serializer[Any]):
    sku = serializers.CharField()
    title = serializers.CharField()
    description = serializers.CharField()
    category = CategoryRefSerializer(allow_null=True)
    price = _amount()
    currency = serializers.CharField()
    stock = serializers.IntegerField()
    image_url = serializers.CharField()
    url = serializers.CharField()
    average_rating = serializers.DecimalField(max_digits=3, decimal_places=2, allow_null=True)
    rating_count = serializers.IntegerField()
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class CategoryOutputSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    slug = serializers.CharField()
    parent_slug = serializers.CharField(source="parent.slug", allow_null=True)
    product_count = serializers.IntegerField()


class PersonalDataSerializer(serializers.Serializer[Any]):
    """Blanks ``personal_fields`` unless the context says ``personal_data`` may be shown."""

    personal_fields: tuple[str, ...] = ()

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = dict(super().to_representation(instance))
        if not self.context.get("personal_data", False):
            for name in self.personal_fields:
                if name in data:
                    data[name] = ""
        return data


class ShopperRefSerializer(PersonalDataSerializer):
    personal_fields = ("email",)
    id = serializers.IntegerField()
    customer_id = serializers.CharField(allow_null=True)
    email = serializers.CharField()


class OrderLineOutputSerializer(serializers.Serializer[Any]):
    sku = serializers.CharField()
    title = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_price = _amount()
    total = _amount()
    refunded_quantity = serializers.IntegerField()


class RefundRefSerializer(serializers.Serializer[Any]):
    number = serializers.CharField()
    amount = _amount()
    reason = serializers.CharField()
    refunded_at = serializers.DateTimeField()


class OrderOutputSerializer(PersonalDataSerializer):
    personal_fields = ("email",)
    number = serializers.CharField()
    status = serializers.ChoiceField(choices=Order.Status.choices)
    # The order's "source" field; the name shadows Field.source only for mypy.
    source = serializers.ChoiceField(choices=Order.Source.choices)  # type: ignore[assignment]  # declared field, not Field.source: see above
    shopper = ShopperRefSerializer(allow_null=True)
    email = serializers.CharField()
    currency = serializers.CharField()
    subtotal = _amount()
    discount_total = _amount()
    shipping_total = _amount()
    tax_total = _amount()
    total = _amount()
    refunded_total = _amount()
    coupon_code = serializers.CharField()
    country = serializers.CharField()
    placed_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    lines = OrderLineOutputSerializer(many=True)
    refunds = RefundRefSerializer(many=True)


class RefundLineOutputSerializer(serializers.Serializer[Any]):
    sku = serializers.CharField(source="order_line.sku")
    quantity = serializers.IntegerField()
    amount = _amount()


class RefundOutputSerializer(serializers.Serializer[Any]):
    number = serializers.CharField()
    order = serializers.CharField(source="order.number")
    amount = _amount()
    reason = serializers.CharField()
    refunded_at = serializers.DateTimeField()
    lines = RefundLineOutputSerializer(many=True)


class ShopperOutputSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    customer_id = serializers.CharField(allow_null=True)
    email = serializers.CharField()
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    phone = serializers.CharField()
    locale = serializers.CharField()
    time_zone = serializers.CharField()
    country = serializers.CharField()
    email_consent = serializers.BooleanField()
    sms_consent = serializers.BooleanField()
    push_consent = serializers.BooleanField()
    merged_into = serializers.IntegerField(source="merged_into_id", allow_null=True)
    created_at = serializers.DateTimeField()
    order_count = serializers.IntegerField()
    total_spent = serializers.DecimalField(max_digits=14, decimal_places=2)


class CatalogImportOutputSerializer(serializers.Serializer[Any]):
    products_created = serializers.IntegerField()
    products_updated = serializers.IntegerField()
    products_unchanged = serializers.IntegerField()
    categories_created = serializers.IntegerField()


class OrdersImportOutputSerializer(serializers.Serializer[Any]):
    orders_created = serializers.IntegerField()
    orders_existing = serializers.IntegerField()
    lines_created = serializers.IntegerField()
    shoppers_created = serializers.IntegerField()


ProductPageSerializer = page_of(ProductOutputSerializer, "ProductPageSerializer")
CategoryPageSerializer = page_of(CategoryOutputSerializer, "CategoryPageSerializer")
OrderPageSerializer = page_of(OrderOutputSerializer, "OrderPageSerializer")
ShopperPageSerializer = page_of(ShopperOutputSerializer, "ShopperPageSerializer")


# --- Input serializers -------------------------------------------------------------------


def _text(max_length: int, **kwargs: Any) -> serializers.CharField:
    return serializers.CharField(max_length=max_length, **kwargs)


class ProductInputSerializer(serializers.Serializer[Any]):
    """A catalog row: a new product needs title and price; a missing field keeps its value."""

    sku = _text(64)
    title = _text(300, required=False)
    description = _text(20_000, required=False, allow_blank=True)
    category = serializers.CharField(
        max_length=1100, required=False, help_text='A path such as "Home/Kitchen".'
    )
    price = _amount_input(min_value=Decimal("0"), required=False)
    currency = serializers.RegexField(importers.CURRENCY_PATTERN, required=False)
    stock = serializers.IntegerField(min_value=-INT32_MAX - 1, max_value=INT32_MAX, required=False)
    image_url = serializers.RegexField(
        importers.URL_PATTERN,
        max_length=500,
        required=False,
        help_text="An http(s) URL or a path starting with /.",
    )
    url = serializers.RegexField(importers.URL_PATTERN, max_length=500, required=False)
    active = serializers.BooleanField(required=False)


class ProductPatchSerializer(serializers.Serializer[Any]):
    title = _text(300, required=False)
    description = _text(20_000, required=False, allow_blank=True)
    category = serializers.CharField(
        max_length=1100, required=False, allow_null=True, help_text="A path; null removes it."
    )
    price = _amount_input(min_value=Decimal("0"), required=False)
    currency = serializers.RegexField(importers.CURRENCY_PATTERN, required=False)
    stock = serializers.IntegerField(min_value=-INT32_MAX - 1, max_value=INT32_MAX, required=False)
    image_url = serializers.RegexField(
        importers.URL_PATTERN_OR_EMPTY, max_length=500, required=False, allow_blank=True
    )
    url = serializers.RegexField(
        importers.URL_PATTERN_OR_EMPTY, max_length=500, required=False, allow_blank=True
    )
    active = serializers.BooleanField(required=False)


class LineInputSerializer(serializers.Serializer[Any]):
    sku = _text(64)
    title = _text(300, required=False, allow_blank=True)
    quantity = serializers.IntegerField(min_value=1, max_value=importers.MAX_QUANTITY)
    unit_price = _amount_input(min_value=Decimal("0"))


class OrderInputSerializer(serializers.Serializer[Any]):
    number = _text(64)
    customer_id = _text(255, required=False, help_text="The store's customer id.")
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True)
    placed_at = serializers.DateTimeField(required=False)
    currency = serializers.RegexField(importers.CURRENCY_PATTERN, required=False)
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    country = _text(64, required=False, allow_blank=True)
    lines = serializers.ListField(child=LineInputSerializer(), min_length=1, max_length=1000)


class RefundLineInputSerializer(serializers.Serializer[Any]):
    sku = _text(64)
    quantity = serializers.IntegerField(min_value=1, max_value=INT32_MAX)


class RefundInputSerializer(serializers.Serializer[Any]):
    number = _text(64, help_text="The credit note or refund id; a retry returns the refund.")
    lines = serializers.ListField(
        child=RefundLineInputSerializer(), required=False, max_length=1000
    )
    amount = _amount_input(min_value=Decimal("0.01"), required=False)
    reason = _text(200, required=False, allow_blank=True)


def _order_input(data: Mapping[str, Any]) -> importers.OrderInput:
    return importers.OrderInput(
        number=data["number"],
        lines=tuple(
            services.LineInput(
                sku=line["sku"],
                quantity=line["quantity"],
                unit_price=line["unit_price"],
                title=line.get("title", ""),
            )
            for line in data["lines"]
        ),
        customer_id=data.get("customer_id") or None,
        email=(data.get("email") or "").lower(),
        placed_at=data.get("placed_at"),
        currency=(data.get("currency") or "GBP").upper(),
        status=data.get("status") or Order.Status.PAID,
        country=data.get("country") or "",
    )


def _catalog_rows(rows: Sequence[Mapping[str, Any]]) -> list[importers.CatalogRow]:
    return [importers.catalog_row_parse(row, row=number) for number, row in enumerate(rows, 1)]


# --- Products and categories -------------------------------------------------------------


class ProductFilterSerializer(serializers.Serializer[Any]):
    category = serializers.SlugField(required=False, help_text="A category slug (with children).")
    active = serializers.BooleanField(required=False, allow_null=True, default=None)
    in_stock = serializers.BooleanField(required=False, allow_null=True, default=None)
    q = _text(200, required=False, help_text="Words in the title, or the exact SKU.")


_PRODUCT_UPSERT = (model_permission(Product, "add"), model_permission(Product, "change"))


class ProductListApi(StaffApi):
    permission_model = Product
    method_permissions = {"POST": _PRODUCT_UPSERT}

    @extend_schema(
        operation_id="products_list",
        parameters=[ProductFilterSerializer, *PAGE_PARAMETERS],
        responses={200: ProductPageSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        filters = _filters(ProductFilterSerializer, request)
        return self.paginate(selectors.product_list(**filters), ProductOutputSerializer)

    @extend_schema(
        operation_id="products_upsert",
        request=ProductInputSerializer,
        responses={200: ProductOutputSerializer, 201: ProductOutputSerializer, **WRITE_ERRORS},
        description="Create a product, or update the one with this SKU (200).",
    )
    def post(self, request: Request) -> Response:
        serializer = ProductInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        summary = importers.catalog_import(rows=_catalog_rows([serializer.validated_data]))
        product = selectors.product_get(sku=serializer.validated_data["sku"])
        return Response(
            ProductOutputSerializer(product).data,
            status=status.HTTP_201_CREATED if summary.products_created else status.HTTP_200_OK,
        )


class ProductDetailApi(StaffApi):
    permission_model = Product

    def _get(self, sku: str) -> Product:
        product = selectors.product_get(sku=_lookup(sku))
        if product is None:
            raise NotFound(f"no product with SKU {sku}")
        return product

    @extend_schema(
        operation_id="products_retrieve", responses={200: ProductOutputSerializer, **ONE_ERRORS}
    )
    def get(self, request: Request, sku: str) -> Response:
        return Response(ProductOutputSerializer(self._get(sku)).data)

    @extend_schema(
        operation_id="products_partial_update",
        request=ProductPatchSerializer,
        responses={200: ProductOutputSerializer, **WRITE_ERRORS, **NOT_FOUND},
    )
    def patch(self, request: Request, sku: str) -> Response:
        product = self._get(sku)
        serializer = ProductPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        importers.product_update(sku=product.sku, values=serializer.validated_data)
        return Response(ProductOutputSerializer(self._get(sku)).data)


class ProductImportApi(StaffApi):
    permission_model = Product
    method_permissions = {"POST": _PRODUCT_UPSERT}

    @extend_schema(
        operation_id="products_import",
        request=ProductInputSerializer(many=True),
        responses={200: CatalogImportOutputSerializer, **WRITE_ERRORS},
        description=(
            "Create or update up to 5000 products in one transaction (an empty array is a no-op). One bad row answers 400 "
            "naming the row, and nothing is stored."
        ),
    )
    def post(self, request: Request) -> Response:
        rows = _validate_rows(ProductInputSerializer, request.data)
        summary = importers.catalog_import(rows=importers.catalog_rows_parse(rows=rows))
        return Response(CatalogImportOutputSerializer(summary).data)


class CategoryListApi(StaffApi):
    permission_model = Category

    @extend_schema(
        operation_id="categories_list",
        parameters=PAGE_PARAMETERS,
        responses={200: CategoryPageSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        return self.paginate(selectors.category_list(), CategoryOutputSerializer)


# --- Orders and refunds ------------------------------------------------------------------


class OrderFilterSerializer(serializers.Serializer[Any]):
    customer_id = _text(255, required=False)
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    # The query parameter is called "source"; the name shadows Field.source only for mypy.
    source = serializers.ChoiceField(  # type: ignore[assignment]  # declared field, not Field.source: see above
        choices=Order.Source.choices, required=False
    )
    placed_after = serializers.DateTimeField(required=False)
    placed_before = serializers.DateTimeField(required=False)


class OrderListApi(StaffApi):
    permission_model = Order

    @extend_schema(
        operation_id="orders_list",
        parameters=[OrderFilterSerializer, *PAGE_PARAMETERS],
        responses={200: OrderPageSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        filters = _filters(OrderFilterSerializer, request)
        return self.paginate(selectors.order_list(**filters), OrderOutputSerializer)

    @extend_schema(
        operation_id="orders_create",
        request=OrderInputSerializer,
        responses={201: OrderOutputSerializer, 200: OrderOutputSerializer, **WRITE_ERRORS},
        description=(
            "Record an order. Idempotent by number: a retry answers 200 with the order as it "
            "was first recorded."
        ),
    )
    def post(self, request: Request) -> Response:
        serializer = OrderInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order, created = importers.order_record(
            order=_order_input(serializer.validated_data), source=Order.Source.API
        )
        return Response(
            OrderOutputSerializer(
                selectors.order_get(number=order.number), context=self.get_serializer_context()
            ).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class OrderImportApi(StaffApi):
    permission_model = Order

    @extend_schema(
        operation_id="orders_import",
        request=OrderInputSerializer(many=True),
        responses={200: OrdersImportOutputSerializer, **WRITE_ERRORS},
        description=(
            "Record up to 5000 orders in one transaction; numbers that exist are left as they "
            "are. One bad row answers 400 naming the row, and nothing is stored."
        ),
    )
    def post(self, request: Request) -> Response:
        rows = _validate_rows(OrderInputSerializer, request.data)
        summary = importers.orders_import(
            orders=[_order_input(row) for row in rows], source=Order.Source.API
        )
        return Response(OrdersImportOutputSerializer(summary).data)


class OrderDetailApi(StaffApi):
    permission_model = Order

    @extend_schema(
        operation_id="orders_retrieve", responses={200: OrderOutputSerializer, **ONE_ERRORS}
    )
    def get(self, request: Request, number: str) -> Response:
        order = selectors.order_get(number=_lookup(number))
        if order is None:
            raise NotFound(f"no order {number}")
        return Response(OrderOutputSerializer(order, context=self.get_serializer_context()).data)


class OrderRefundApi(StaffApi):
    permission_model = Refund

    @extend_schema(
        operation_id="orders_refunds_create",
        request=RefundInputSerializer,
        responses={
            201: RefundOutputSerializer,
            200: RefundOutputSerializer,
            **WRITE_ERRORS,
            **NOT_FOUND,
        },
        description=(
            "Refund lines (by SKU and quantity), an amount, or (with neither) everything not "
            "yet refunded. Idempotent by refund number: a retry answers 200 with the refund."
        ),
    )
    def post(self, request: Request, number: str) -> Response:
        order = selectors.order_get(number=_lookup(number))
        if order is None:
            raise NotFound(f"no order {number}")
        serializer = RefundInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        refund, created = services.refund_create(
            order=order,
            number=data["number"],
            lines=[
                services.RefundLineInput(sku=line["sku"], quantity=line["quantity"])
                for line in data.get("lines", [])
            ],
            amount=data.get("amount"),
            reason=data.get("reason", ""),
        )
        refund = (
            Refund.objects.prefetch_related("lines__order_line")
            .select_related("order")
            .get(pk=refund.pk)
        )
        return Response(
            RefundOutputSerializer(refund).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


# --- Shoppers ----------------------------------------------------------------------------


class ShopperFilterSerializer(serializers.Serializer[Any]):
    customer_id = _text(255, required=False)
    email = _text(254, required=False)


class ShopperListApi(StaffApi):
    permission_model = Shopper
    required_permissions = (PERSONAL_DATA_PERMISSION,)

    @extend_schema(
        operation_id="shoppers_list",
        parameters=[ShopperFilterSerializer, *PAGE_PARAMETERS],
        responses={200: ShopperPageSerializer, **READ_ERRORS},
    )
    def get(self, request: Request) -> Response:
        filters = _filters(ShopperFilterSerializer, request)
        return self.paginate(selectors.shopper_list(**filters), ShopperOutputSerializer)


class ShopperDetailApi(StaffApi):
    permission_model = Shopper
    required_permissions = (PERSONAL_DATA_PERMISSION,)

    @extend_schema(
        operation_id="shoppers_retrieve",
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
        responses={200: ShopperOutputSerializer, **ONE_ERRORS},
    )
    def get(self, request: Request, pk: str) -> Response:
        shopper: Shopper | None = None
        if pk.isascii() and pk.isdigit() and int(pk) <= 2**63 - 1:
            shopper = selectors.shopper_get(pk=int(pk))
        if shopper is None:
            raise NotFound(f"no shopper {pk}")
        return Response(ShopperOutputSerializer(shopper).data)
