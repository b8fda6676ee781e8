"""Order rows: grouping one-row-per-line files into orders and recording them."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from commerce import services
from commerce.importers.parsing import (
    MAX_AMOUNT,
    MAX_QUANTITY,
    _currency,
    _datetime,
    _decimal,
    _integer,
    _row_error,
    _RowError,
    _text,
)
from commerce.models import ZERO, Order, Shopper
from core.exceptions import ValidationError

# --- Order rows --------------------------------------------------------------------------

ORDER_FIELDS = (
    "number",
    "customer_id",
    "email",
    "placed_at",
    "currency",
    "status",
    "country",
    "sku",
    "title",
    "quantity",
    "unit_price",
)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class OrderInput:
    """An order to record: who, when, and its lines (``services.LineInput``)."""

    number: str
    lines: tuple[services.LineInput, ...]
    customer_id: str | None = None
    email: str = ""
    placed_at: dt.datetime | None = None
    currency: str = "GBP"
    status: str = Order.Status.PAID
    country: str = ""


def order_input_check(order: OrderInput, *, row: int | None = None) -> None:
    """Refuse what ``order_create`` would store wrongly: bad amounts, overflowing totals."""
    where = f"row {row}: " if row is not None else f"order {order.number}: "
    if not order.lines:
        raise ValidationError(f"{where}an order needs at least one line", code="invalid_row")
    total = ZERO
    for line in order.lines:
        if not 1 <= line.quantity <= MAX_QUANTITY:
            raise ValidationError(
                f"{where}quantity: must be between 1 and {MAX_QUANTITY}", code="invalid_row"
            )
        if line.unit_price < ZERO:
            raise ValidationError(f"{where}unit_price: cannot be negative", code="invalid_row")
        total += line.unit_price * line.quantity
    if total > MAX_AMOUNT:
        raise ValidationError(
            f"{where}the order total {total} exceeds {MAX_AMOUNT}", code="invalid_row"
        )
    if order.status not in Order.Status.values:
        raise ValidationError(f"{where}status: unknown status {order.status!r}", code="invalid_row")


def order_rows_group(
    *, rows: Iterable[Mapping[str, Any]], zone: dt.tzinfo | None = None
) -> list[OrderInput]:
    """Group one-row-per-line order rows into orders, in order of first appearance.

    Order-level fields (customer_id, email, placed_at, currency, status, country) may be given
    on any row of the order; two rows of one order that disagree on one are an error. Naive
    times are read in ``zone`` (default: the project's time zone).
    """
    zone = zone or timezone.get_current_timezone()
    heads: dict[str, dict[str, Any]] = {}
    first_row: dict[str, int] = {}
    lines: dict[str, list[services.LineInput]] = defaultdict(list)
    for number, raw in enumerate(rows, start=1):
        try:
            order_number = _text(raw, "number", max_length=64, required=True)
            assert order_number is not None
            email = _text(raw, "email", max_length=254)
            if email is not None and not _EMAIL_RE.match(email):
                raise _RowError("email", f"{email!r} is not an email address")
            status = _text(raw, "status", max_length=24)
            if status is not None and status.lower() not in Order.Status.values:
                raise _RowError("status", f"must be one of {', '.join(Order.Status.values)}")
            head: dict[str, Any] = {
                "customer_id": _text(raw, "customer_id", max_length=255),
                "email": email.lower() if email else None,
                "placed_at": _datetime(raw, "placed_at", zone=zone),
                "currency": _currency(raw),
                "status": status.lower() if status else None,
                "country": _text(raw, "country", max_length=64),
            }
            sku = _text(raw, "sku", max_length=64, required=True)
            assert sku is not None
            quantity = _integer(raw, "quantity", minimum=1, maximum=MAX_QUANTITY)
            if quantity is None:
                raise _RowError("quantity", "is required")
            unit_price = _decimal(raw, "unit_price", minimum=ZERO)
            if unit_price is None:
                raise _RowError("unit_price", "is required")
            title = _text(raw, "title", max_length=300) or ""
        except _RowError as error:
            raise _row_error(number, error) from None
        known = heads.setdefault(order_number, {})
        first_row.setdefault(order_number, number)
        for key, value in head.items():
            if value is None:
                continue
            if known.get(key) is not None and known[key] != value:
                raise ValidationError(
                    f"row {number}: {key}: differs from row {first_row[order_number]} "
                    f"of order {order_number}",
                    code="invalid_row",
                    extra={"row": number, "field": key},
                )
            known[key] = value
        lines[order_number].append(
            services.LineInput(sku=sku, quantity=quantity, unit_price=unit_price, title=title)
        )
    orders = []
    for order_number, head in heads.items():
        order = OrderInput(
            number=order_number,
            lines=tuple(lines[order_number]),
            customer_id=head.get("customer_id"),
            email=head.get("email") or "",
            placed_at=head.get("placed_at"),
            currency=head.get("currency") or "GBP",
            status=head.get("status") or Order.Status.PAID,
            country=head.get("country") or "",
        )
        order_input_check(order, row=first_row[order_number])
        orders.append(order)
    return orders


@dataclass(frozen=True)
class OrdersImportSummary:
    orders_created: int
    orders_existing: int
    lines_created: int
    shoppers_created: int
    numbers: tuple[str, ...] = ()


@transaction.atomic
def order_record(*, order: OrderInput, source: str = Order.Source.API) -> tuple[Order, bool]:
    """Record one order through ``order_create``; returns (order, created).

    The shopper is found or created by customer id and, if they have no email yet, given the
    order's. An existing order number returns that order unchanged.
    """
    order_input_check(order)
    shopper = None
    if order.customer_id:
        shopper = services.shopper_resolve(customer_id=order.customer_id)
        if order.email and not shopper.email:
            shopper = services.shopper_update_traits(shopper=shopper, traits={"email": order.email})
    return services.order_create(
        number=order.number,
        lines=order.lines,
        shopper=shopper,
        email=order.email,
        currency=order.currency,
        placed_at=order.placed_at,
        status=order.status,
        source=source,
        country=order.country or (shopper.country if shopper else ""),
    )


@transaction.atomic
def orders_import(
    *, orders: Sequence[OrderInput], source: str = Order.Source.IMPORT
) -> OrdersImportSummary:
    """Record these orders in one transaction (all or nothing) with :func:`order_record`.

    An order whose number already exists is left as it is (counted in ``orders_existing``),
    so importing a file twice records each order once.
    """
    numbers = [order.number for order in orders]
    duplicates = [number for number, count in Counter(numbers).items() if count > 1]
    if duplicates:
        raise ValidationError(f"order {duplicates[0]} appears twice", code="duplicate_order")
    for order in orders:
        order_input_check(order)
    customer_ids = {order.customer_id for order in orders if order.customer_id}
    known = set(
        Shopper.objects.filter(customer_id__in=customer_ids).values_list("customer_id", flat=True)
    )
    created = existing = lines = 0
    for order in orders:
        _, was_created = order_record(order=order, source=source)
        if was_created:
            created += 1
            lines += len(order.lines)
        else:
            existing += 1
    return OrdersImportSummary(
        orders_created=created,
        orders_existing=existing,
        lines_created=lines,
        shoppers_created=len(customer_ids - known),
        numbers=tuple(numbers),
    )
