"""Loading the UCI Online Retail file: the bulk path (``bulk_create`` and ``COPY``), one transaction per stage."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.db.models import Value
from django.db.models.functions import Concat
from tqdm import tqdm

from commerce.importers.catalog import categories_ensure
from commerce.importers.online_retail_file import (
    CATEGORY_NAMES,
    DEFAULT_STOCK,
    ORDER_PREFIX,
    _online_retail_parse,
    _Parsed,
    category_for_title,
    category_image_url,
)
from commerce.importers.parsing import CENT
from commerce.models import ZERO, Order, OrderLine, Product, Refund, RefundLine, Shopper
from commerce.selectors import ShopperLink, shopper_canonical_ids

# One import of a kind at a time: an advisory lock held by each import transaction.
_IMPORT_LOCK = 0x70A7_0001


@dataclass(frozen=True)
class OnlineRetailSummary:
    rows_read: int
    since: dt.datetime | None
    customers_in_file: int
    shoppers_created: int
    products_in_file: int
    products_created: int
    categories_created: int
    orders_in_file: int
    orders_created: int
    order_lines_created: int
    cancellations_in_file: int
    refunds_created: int
    refund_lines_created: int
    cancellation_rows_unmatched: int
    cancellation_units_unmatched: int
    skipped_rows: Mapping[str, int]
    seconds: float

    def lines(self) -> list[str]:
        """The summary as ``name: value`` lines for a command's output."""
        rows = [
            f"rows read: {self.rows_read}",
            f"shoppers: {self.shoppers_created} created of {self.customers_in_file} customers",
            f"products: {self.products_created} created of {self.products_in_file} product codes",
            f"categories: {self.categories_created} created",
            f"orders: {self.orders_created} created of {self.orders_in_file} invoices "
            f"({self.order_lines_created} lines)",
            f"refunds: {self.refunds_created} created ({self.refund_lines_created} lines) "
            f"from {self.cancellations_in_file} cancellation invoices",
            f"cancellation rows not matched to an earlier order: "
            f"{self.cancellation_rows_unmatched} ({self.cancellation_units_unmatched} units)",
        ]
        rows.extend(
            f"skipped rows ({reason}): {count}" for reason, count in self.skipped_rows.items()
        )
        if self.since is not None:
            rows.insert(1, f"slice: invoices from {self.since.isoformat()}")
        rows.append(f"seconds: {self.seconds:.1f}")
        return rows


def _lock_imports() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_IMPORT_LOCK])


def _copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Write rows into ``table`` with PostgreSQL COPY (psycopg's ``write_row`` adapts and
    escapes each value; ``None`` is NULL)."""
    names = ", ".join(f'"{column}"' for column in columns)
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy,
    ):
        for row in rows:
            copy.write_row(row)


# Rows per UPDATE statement when applying refunds.
_UPDATE_PAGE = 5000


@transaction.atomic
def _online_retail_catalog(parsed: _Parsed, *, stock: int) -> tuple[dict[str, int], int, int]:
    _lock_imports()
    category_ids, categories_created = categories_ensure(paths=[(name,) for name in CATEGORY_NAMES])
    products = []
    for code, (title, price) in parsed.products.items():
        category = category_for_title(title)
        products.append(
            Product(
                sku=code,
                title=title[:300],
                price=price.quantize(CENT),
                currency="GBP",
                stock=stock,
                category_id=category_ids[(category,)],
                image_url=category_image_url(category),
            )
        )
    before = Product.objects.filter(sku__in=list(parsed.products)).count()
    Product.objects.bulk_create(products, batch_size=2000, ignore_conflicts=True)
    ids = dict(Product.objects.filter(sku__in=list(parsed.products)).values_list("sku", "id"))
    return ids, len(ids) - before, categories_created


# The data set has no addresses; the demo gives each customer one at a reserved domain
# (RFC 2606: nothing is ever delivered there), so the chat bot's order lookup by number and
# email, and the email flows, work on demo data.
DEMO_EMAIL_DOMAIN = "example.com"


def online_retail_email(customer_id: str) -> str:
    """The demo address of UCI customer ``customer_id``: ``customer-17850@example.com``."""
    return f"customer-{customer_id}@{DEMO_EMAIL_DOMAIN}"


@transaction.atomic
def _online_retail_shoppers(parsed: _Parsed) -> tuple[dict[str, int], int]:
    _lock_imports()
    customer_ids = list(parsed.customers)
    before = Shopper.objects.filter(customer_id__in=customer_ids).count()
    Shopper.objects.bulk_create(
        (
            Shopper(
                customer_id=customer,
                email=online_retail_email(customer),
                country=country,
                created_at=first_seen,
            )
            for customer, (country, first_seen) in parsed.customers.items()
        ),
        batch_size=2000,
        ignore_conflicts=True,
    )
    # Shoppers imported before they got addresses get theirs (nobody else's is touched).
    Shopper.objects.filter(customer_id__in=customer_ids, email="").update(
        email=Concat(Value("customer-"), "customer_id", Value(f"@{DEMO_EMAIL_DOMAIN}"))
    )
    links: dict[int, ShopperLink] = {
        pk: (merged_into, customer)
        for pk, merged_into, customer in Shopper.objects.filter(
            customer_id__in=customer_ids
        ).values_list("id", "merged_into_id", "customer_id")
    }
    customers = {pk: customer for pk, (_, customer) in links.items() if customer is not None}
    survivors = shopper_canonical_ids(links)
    ids = {customer: survivors[pk] for pk, customer in customers.items()}
    return ids, len(ids) - before


@transaction.atomic
def _online_retail_orders(
    parsed: _Parsed,
    *,
    shopper_ids: Mapping[str, int],
    product_ids: Mapping[str, int],
    progress: bool,
) -> tuple[int, int]:
    """Create the orders not yet imported and their lines; returns (orders, lines) created."""
    _lock_imports()
    numbers = {ORDER_PREFIX + number: invoice for number, invoice in parsed.invoices.items()}
    existing = set(
        Order.objects.filter(number__startswith=ORDER_PREFIX).values_list("number", flat=True)
    )
    new_orders = []
    for number, invoice in numbers.items():
        if number in existing:
            continue
        subtotal = sum((sale.unit_price * sale.quantity for sale in invoice.lines.values()), ZERO)
        new_orders.append(
            Order(
                number=number,
                shopper_id=shopper_ids.get(invoice.customer_id),
                status=Order.Status.FULFILLED,
                source=Order.Source.IMPORT,
                currency="GBP",
                subtotal=subtotal,
                total=subtotal,
                country=invoice.country,
                placed_at=invoice.placed_at,
            )
        )
    Order.objects.bulk_create(new_orders, batch_size=2000)
    line_count = 0

    def line_rows() -> Iterator[tuple[Any, ...]]:
        nonlocal line_count
        for order in tqdm(
            new_orders, desc="order lines", unit=" orders", disable=not progress, leave=False
        ):
            invoice = numbers[order.number]
            for sale in invoice.lines.values():
                line_count += 1
                yield (
                    order.pk,
                    product_ids.get(sale.code),
                    sale.code,
                    (sale.title or parsed.products.get(sale.code, ("",))[0])[:300],
                    sale.quantity,
                    sale.unit_price,
                    sale.unit_price * sale.quantity,
                    0,
                )

    columns = ("order_id", "product_id", "sku", "title", "quantity", "unit_price", "total")
    _copy_rows(OrderLine._meta.db_table, (*columns, "refunded_quantity"), line_rows())
    return len(new_orders), line_count


@dataclass(frozen=True)
class _LineState:
    id: int
    order_id: int
    placed_at: dt.datetime
    unit_price: Decimal


@transaction.atomic
def _online_retail_refunds(
    parsed: _Parsed, *, shopper_ids: Mapping[str, int]
) -> tuple[int, int, int, int]:
    """Turn cancellation invoices into refunds; returns (refunds, lines, rows and units unmatched).

    Matching rule: each cancelled row (stock code, units) takes units from the same customer's
    imported order lines with that stock code placed at or before the cancellation, most
    recent order first (then the latest line), never more than a line has left. A cancellation
    gives one refund per order it touches. Units that find no line are counted as unmatched.
    """
    _lock_imports()
    done = set(
        Refund.objects.filter(number__startswith=ORDER_PREFIX + "C").values_list(
            "number", flat=True
        )
    )
    todo = [
        cancellation
        for cancellation in parsed.cancellations.values()
        if ORDER_PREFIX + cancellation.number not in done
        and cancellation.customer_id in shopper_ids
    ]
    shoppers = {shopper_ids[cancellation.customer_id] for cancellation in todo}
    candidates: dict[tuple[int, str], list[_LineState]] = defaultdict(list)
    free: dict[int, int] = {}
    for pk, order_id, placed_at, shopper_id, sku, quantity, refunded, price in (
        OrderLine.objects.filter(
            order__shopper_id__in=shoppers, order__number__startswith=ORDER_PREFIX
        )
        .order_by("-order__placed_at", "-order__number", "-pk")
        .values_list(
            "pk",
            "order_id",
            "order__placed_at",
            "order__shopper_id",
            "sku",
            "quantity",
            "refunded_quantity",
            "unit_price",
        )
        .iterator(chunk_size=20_000)
    ):
        candidates[(shopper_id, sku)].append(_LineState(pk, order_id, placed_at, price))
        free[pk] = quantity - refunded

    refunds: list[Refund] = []
    refund_lines: list[tuple[int, int, int, Decimal]] = []  # refund index, line, units, amount
    unmatched_rows = unmatched_units = 0
    for cancellation in sorted(todo, key=lambda c: (c.at, c.number)):
        shopper_id = shopper_ids[cancellation.customer_id]
        per_order: dict[int, list[tuple[int, int, Decimal]]] = {}
        for code, units in cancellation.rows:
            wanted = units
            for line in candidates.get((shopper_id, code), ()):
                if wanted == 0:
                    break
                if line.placed_at > cancellation.at or free[line.id] == 0:
                    continue
                take = min(free[line.id], wanted)
                free[line.id] -= take
                wanted -= take
                per_order.setdefault(line.order_id, []).append(
                    (line.id, take, line.unit_price * take)
                )
            if wanted:
                unmatched_units += wanted
                if wanted == units:
                    unmatched_rows += 1
        for position, (order_id, taken) in enumerate(per_order.items(), start=1):
            suffix = "" if position == 1 else f"-{position}"
            refunds.append(
                Refund(
                    order_id=order_id,
                    number=f"{ORDER_PREFIX}{cancellation.number}{suffix}",
                    amount=sum((amount for _, _, amount in taken), ZERO),
                    reason=f"Cancelled by credit note {cancellation.number}",
                    refunded_at=cancellation.at,
                )
            )
            index = len(refunds) - 1
            refund_lines.extend((index, line_id, units, amount) for line_id, units, amount in taken)
    Refund.objects.bulk_create(refunds, batch_size=2000)
    RefundLine.objects.bulk_create(
        (
            RefundLine(
                refund_id=refunds[index].pk, order_line_id=line_id, quantity=units, amount=amount
            )
            for index, line_id, units, amount in refund_lines
        ),
        batch_size=5000,
    )
    units_per_line: dict[int, int] = defaultdict(int)
    for _, line_id, units, _ in refund_lines:
        units_per_line[line_id] += units
    amount_per_order: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for refund in refunds:
        amount_per_order[refund.order_id] += refund.amount
    line_items = list(units_per_line.items())
    order_items = list(amount_per_order.items())
    with connection.cursor() as cursor:
        # Increments, not overwrites: the same shape as F("refunded_quantity") + units.
        for start in range(0, len(line_items), _UPDATE_PAGE):
            page = line_items[start : start + _UPDATE_PAGE]
            cursor.execute(
                f"UPDATE {OrderLine._meta.db_table} AS line "  # noqa: S608 - our own table name
                "SET refunded_quantity = line.refunded_quantity + v.units "
                "FROM unnest(%s::bigint[], %s::integer[]) AS v(id, units) WHERE line.id = v.id",
                [[pk for pk, _ in page], [units for _, units in page]],
            )
        for start in range(0, len(order_items), _UPDATE_PAGE):
            orders_page = order_items[start : start + _UPDATE_PAGE]
            cursor.execute(
                f"UPDATE {Order._meta.db_table} AS o "  # noqa: S608 - our own table name
                "SET refunded_total = o.refunded_total + v.amount, "
                "status = CASE WHEN o.refunded_total + v.amount >= o.total "
                f"THEN '{Order.Status.REFUNDED.value}' ELSE '{Order.Status.PARTIALLY_REFUNDED.value}' END "
                "FROM unnest(%s::bigint[], %s::numeric[]) AS v(id, amount) WHERE o.id = v.id",
                [[pk for pk, _ in orders_page], [amount for _, amount in orders_page]],
            )
    return len(refunds), len(refund_lines), unmatched_rows, unmatched_units


def online_retail_import(
    *,
    path: Path,
    since: dt.datetime | None = None,
    include_guests: bool = False,
    stock: int = DEFAULT_STOCK,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
) -> OnlineRetailSummary:
    """Load the UCI Online Retail file; running it again changes nothing.

    What becomes what (also in the ``import_online_retail`` command's help):

    - a Shopper per CustomerID ("17850.0" -> customer_id "17850"), country from their latest
      row, created at their first row's time, with the demo address
      ``customer-17850@example.com`` (:func:`online_retail_email`; the file has none);
    - a Product per product StockCode sold at least once (quantity > 0, price > 0, to anyone):
      title = the most recent non-empty description (stripped), price = the most recent
      unit price, GBP, ``stock`` units, category from :data:`CATEGORY_KEYWORDS`; the
      non-product codes (:data:`NON_PRODUCT_CODES`, ``DCGS*``, ``gift_0001_*``) are not products;
    - an Order "UCI-<InvoiceNo>" per invoice with a customer (with ``include_guests``, also per
      invoice without one, as a guest order) made of its rows with quantity > 0 and price > 0,
      status fulfilled, placed at the invoice's first time in Europe/London; rows of one
      (stock code, unit price) are one line (exact duplicate rows are repeated scans: their
      quantities add up); non-product rows (postage, manual lines) stay as lines without a
      product so the order total is the invoice's; prices are rounded to the penny;
    - a Refund "UCI-C<InvoiceNo>" (then "-2", "-3" when it spans orders) per cancellation
      invoice with a customer, matched as :func:`_online_retail_refunds` says;
    - left out: "A" bad-debt invoices, cancellations without a customer, rows with quantity
      <= 0 or price <= 0 outside cancellations (stock adjustments, free samples), and guest
      invoices unless ``include_guests``.

    ``since`` keeps only rows at or after that time (a recent slice for the demo).
    """
    started = time.monotonic()
    say = report or (lambda message: None)
    parsed = _online_retail_parse(
        path, since=since, include_guests=include_guests, progress=progress
    )
    say(f"read {parsed.rows} rows")
    product_ids, products_created, categories_created = _online_retail_catalog(parsed, stock=stock)
    say(f"catalog: {products_created} products created")
    shopper_ids, shoppers_created = _online_retail_shoppers(parsed)
    say(f"shoppers: {shoppers_created} created")
    orders_created, lines_created = _online_retail_orders(
        parsed, shopper_ids=shopper_ids, product_ids=product_ids, progress=progress
    )
    say(f"orders: {orders_created} created")
    refunds, refund_lines, unmatched_rows, unmatched_units = _online_retail_refunds(
        parsed, shopper_ids=shopper_ids
    )
    say(f"refunds: {refunds} created")
    return OnlineRetailSummary(
        rows_read=parsed.rows,
        since=since,
        customers_in_file=len(parsed.customers),
        shoppers_created=shoppers_created,
        products_in_file=len(parsed.products),
        products_created=products_created,
        categories_created=categories_created,
        orders_in_file=len(parsed.invoices),
        orders_created=orders_created,
        order_lines_created=lines_created,
        cancellations_in_file=len(parsed.cancellations),
        refunds_created=refunds,
        refund_lines_created=refund_lines,
        cancellation_rows_unmatched=unmatched_rows,
        cancellation_units_unmatched=unmatched_units,
        skipped_rows=dict(parsed.skipped),
        seconds=time.monotonic() - started,
    )
