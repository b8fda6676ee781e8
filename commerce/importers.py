"""Loading a store's existing data into Patron: catalog rows, order rows, and the UCI file.

Three operations, each keyword-only and returning a summary dataclass:

- :func:`catalog_import` upserts products (and their category paths) from parsed catalog rows;
- :func:`orders_import` records orders (grouped from one-row-per-line files) through
  :func:`commerce.services.order_create`, so an order number imported twice is recorded once;
- :func:`online_retail_import` loads the UCI "Online Retail" file (``shared/data``) into
  shoppers, categories, products, orders and refunds on a bulk path (``bulk_create`` and
  PostgreSQL ``COPY``), one transaction per stage, idempotent on re-runs.

Validation happens before anything is written: one bad row raises
:class:`core.exceptions.ValidationError` naming the row (1-based) and the field, and nothing is
stored. The management commands and the API only translate their input and call these.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.utils import timezone
from django.utils.text import slugify
from tqdm import tqdm

from commerce import services
from commerce.models import ZERO, Category, Order, OrderLine, Product, Refund, RefundLine, Shopper
from core.exceptions import ValidationError

CENT = Decimal("0.01")
# Order and line totals are numeric(12, 2).
MAX_AMOUNT = Decimal("9999999999.99")
MAX_QUANTITY = 1_000_000
MAX_STOCK = 2_147_483_647
URL_PATTERN = r"^(?:https?://[^\s/?#]+[^\s]*|/[^\s]*)$"
URL_PATTERN_OR_EMPTY = r"^(?:(?:https?://[^\s/?#]+[^\s]*|/[^\s]*))?$"
CURRENCY_PATTERN = r"^[A-Za-z]{3}$"
_URL_RE = re.compile(URL_PATTERN)
_CURRENCY_RE = re.compile(CURRENCY_PATTERN)
_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}

# One import of a kind at a time: an advisory lock held by each import transaction.
_IMPORT_LOCK = 0x70A7_0001


# --- Reading files -----------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def rows_read(*, path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV or JSON file (optionally gzipped), chosen by the file's extension.

    CSV: a header row, one record per line; header names are matched case-insensitively.
    JSON: an array of objects; numbers with a fraction are read as ``Decimal``.
    """
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if not path.is_file():
        raise ValidationError(f"{path}: no such file", code="file_not_found")
    try:
        with _open_text(path) as handle:
            if kind == ".csv":
                reader = csv.DictReader(handle)
                if reader.fieldnames is None:
                    return []
                reader.fieldnames = [name.strip().lower() for name in reader.fieldnames]
                return [
                    {key: value for key, value in row.items() if key is not None} for row in reader
                ]
            if kind == ".json":
                data = json.load(handle, parse_float=Decimal)
            else:
                raise ValidationError(
                    f"{path.name}: expected a .csv or .json file", code="unsupported_file"
                )
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError, OSError) as exc:
        raise ValidationError(
            f"{path.name}: cannot be read: {exc}", code="unreadable_file"
        ) from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ValidationError(f"{path.name}: expected a JSON array of objects", code="invalid_file")
    return data


# --- Field parsing (shared by files and the API) -----------------------------------------


class _RowError(Exception):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _row_error(row: int, error: _RowError) -> ValidationError:
    return ValidationError(
        f"row {row}: {error.field}: {error.message}",
        code="invalid_row",
        extra={"row": row, "field": error.field},
    )


def _given(raw: Mapping[str, Any], key: str) -> bool:
    """A key counts as given when present with a value that is not null or blank."""
    value = raw.get(key)
    return value is not None and not (isinstance(value, str) and not value.strip())


def _text(
    raw: Mapping[str, Any], key: str, *, max_length: int, required: bool = False
) -> str | None:
    if not _given(raw, key):
        if required:
            raise _RowError(key, "is required")
        return None
    value = raw[key]
    if not isinstance(value, str | int | Decimal) or isinstance(value, bool):
        raise _RowError(key, "must be text")
    text = str(value).strip()
    if "\x00" in text:
        raise _RowError(key, "must not contain NUL characters")
    if len(text) > max_length:
        raise _RowError(key, f"must be at most {max_length} characters")
    return text


def _decimal(
    raw: Mapping[str, Any], key: str, *, minimum: Decimal, maximum: Decimal = MAX_AMOUNT
) -> Decimal | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _RowError(key, "must be a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise _RowError(key, f"must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise _RowError(key, "must be a finite number")
    if abs(amount) > maximum:  # checked first: quantize() of a huge value would overflow
        raise _RowError(key, f"must be between {minimum} and {maximum}")
    amount = amount.quantize(CENT, rounding=ROUND_HALF_UP)  # to the penny, as services.money
    if not minimum <= amount <= maximum:
        raise _RowError(key, f"must be between {minimum} and {maximum}")
    return amount


def _integer(raw: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, bool):
        raise _RowError(key, "must be a whole number")
    if isinstance(value, int):
        number = value
    else:
        try:
            exact = Decimal(str(value).strip())
        except InvalidOperation:
            raise _RowError(key, f"must be a whole number, got {value!r}") from None
        if not exact.is_finite() or exact != exact.to_integral_value():
            raise _RowError(key, f"must be a whole number, got {value!r}")
        number = int(exact)
    if not minimum <= number <= maximum:
        raise _RowError(key, f"must be between {minimum} and {maximum}")
    return number


def _boolean(raw: Mapping[str, Any], key: str) -> bool | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _RowError(key, f"must be true or false, got {value!r}")


def _url(raw: Mapping[str, Any], key: str) -> str | None:
    text = _text(raw, key, max_length=500)
    if text is not None and not _URL_RE.match(text):
        raise _RowError(key, "must be an http(s) URL or a path starting with /")
    return text


def _currency(raw: Mapping[str, Any], key: str = "currency") -> str | None:
    text = _text(raw, key, max_length=3)
    if text is not None and not _CURRENCY_RE.match(text):
        raise _RowError(key, "must be a three-letter code such as GBP")
    return text.upper() if text is not None else None


def _datetime(raw: Mapping[str, Any], key: str, *, zone: dt.tzinfo) -> dt.datetime | None:
    if not _given(raw, key):
        return None
    value = raw[key]
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise _RowError(key, f"must be an ISO 8601 date and time, got {value!r}") from None
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=zone)
    return moment


# --- Categories --------------------------------------------------------------------------


def _category_parts(path: str) -> list[str]:
    parts = [part.strip() for part in path.split("/")]
    if not all(parts):
        raise _RowError("category", f"{path!r} has an empty level")
    if len(parts) > 5:
        raise _RowError("category", "at most 5 levels")
    for part in parts:
        if len(part) > 200:
            raise _RowError("category", "each level must be at most 200 characters")
        if not slugify(part):
            raise _RowError("category", f"{part!r} has no letters or digits")
    return parts


def category_slug(parts: Sequence[str]) -> str:
    """The slug of a category path: ``Home/Kitchen`` is ``home-kitchen``."""
    return "-".join(slugify(part) for part in parts)[:200]


def categories_ensure(*, paths: Iterable[Sequence[str]]) -> tuple[dict[tuple[str, ...], int], int]:
    """Create every level of these category paths that is missing; keyed by slug.

    Returns ({path: category id}, how many categories were created). Existing categories (same
    slug) are reused whatever their name, so renaming one in the admin survives re-imports.
    """
    wanted: dict[tuple[str, ...], None] = {}
    for path in paths:
        for depth in range(1, len(path) + 1):
            wanted[tuple(path[:depth])] = None
    ids: dict[tuple[str, ...], int] = {}
    created = 0
    for depth in sorted({len(path) for path in wanted}):
        level = [path for path in wanted if len(path) == depth]
        slugs = {category_slug(path): path for path in level}
        existing = dict(Category.objects.filter(slug__in=slugs).values_list("slug", "id"))
        new = [
            Category(
                name=path[-1][:200],
                slug=slug,
                parent_id=ids[path[:-1]] if depth > 1 else None,
            )
            for slug, path in slugs.items()
            if slug not in existing
        ]
        if new:
            Category.objects.bulk_create(new, ignore_conflicts=True)
            created += len(new)
            existing = dict(Category.objects.filter(slug__in=slugs).values_list("slug", "id"))
        for slug, path in slugs.items():
            ids[path] = existing[slug]
    return ids, created


def category_get_or_create(*, path: str) -> Category:
    """The category at this path ("Home/Kitchen"), creating missing levels."""
    try:
        parts = tuple(_category_parts(path))
    except _RowError as error:
        raise ValidationError(f"category: {error.message}", code="invalid") from None
    ids, _ = categories_ensure(paths=[parts])
    return Category.objects.get(pk=ids[parts])


# --- Catalog rows ------------------------------------------------------------------------

CATALOG_FIELDS = (
    "sku",
    "title",
    "description",
    "category",
    "price",
    "currency",
    "stock",
    "image_url",
    "url",
    "active",
)


@dataclass(frozen=True)
class CatalogRow:
    """One product of a catalog file; ``None`` means "not given" (keep or default)."""

    sku: str
    title: str | None = None
    description: str | None = None
    category: tuple[str, ...] | None = None
    price: Decimal | None = None
    currency: str | None = None
    stock: int | None = None
    image_url: str | None = None
    url: str | None = None
    active: bool | None = None


def catalog_row_parse(raw: Mapping[str, Any], *, row: int) -> CatalogRow:
    """Validate one catalog row (strings from CSV or values from JSON) into a CatalogRow."""
    try:
        sku = _text(raw, "sku", max_length=64, required=True)
        assert sku is not None
        category = _text(raw, "category", max_length=1100)
        return CatalogRow(
            sku=sku,
            title=_text(raw, "title", max_length=300),
            description=_text(raw, "description", max_length=20_000),
            category=tuple(_category_parts(category)) if category is not None else None,
            price=_decimal(raw, "price", minimum=ZERO),
            currency=_currency(raw),
            stock=_integer(raw, "stock", minimum=-MAX_STOCK - 1, maximum=MAX_STOCK),
            image_url=_url(raw, "image_url"),
            url=_url(raw, "url"),
            active=_boolean(raw, "active"),
        )
    except _RowError as error:
        raise _row_error(row, error) from None


def catalog_rows_parse(*, rows: Iterable[Mapping[str, Any]]) -> list[CatalogRow]:
    """Validate every row; the first bad one raises, naming its 1-based row number."""
    parsed = [catalog_row_parse(raw, row=number) for number, raw in enumerate(rows, start=1)]
    seen: dict[str, int] = {}
    for number, item in enumerate(parsed, start=1):
        if item.sku in seen:
            raise ValidationError(
                f"row {number}: sku: {item.sku!r} already appears in row {seen[item.sku]}",
                code="invalid_row",
                extra={"row": number, "field": "sku"},
            )
        seen[item.sku] = number
    return parsed


@dataclass(frozen=True)
class CatalogImportSummary:
    products_created: int
    products_updated: int
    products_unchanged: int
    categories_created: int
    created_skus: tuple[str, ...] = ()


_PRODUCT_COLUMNS = ("title", "description", "price", "currency", "stock", "image_url", "url")


@transaction.atomic
def catalog_import(*, rows: Sequence[CatalogRow]) -> CatalogImportSummary:
    """Upsert these products by SKU in one transaction (all or nothing).

    A new product needs a title and a price. For an existing product only the fields a row
    gives are written; fields it leaves out keep their values. Rows are locked in primary-key
    order, so two imports touching the same products wait for each other.
    """
    category_ids, categories_created = categories_ensure(
        paths=[item.category for item in rows if item.category is not None]
    )
    by_sku = {item.sku: item for item in rows}
    existing = {
        product.sku: product
        for product in Product.objects.select_for_update()
        .filter(sku__in=list(by_sku))
        .order_by("pk")
    }
    new: list[Product] = []
    changed: list[Product] = []
    changed_fields: set[str] = set()
    unchanged = 0
    for number, item in enumerate(rows, start=1):
        values: dict[str, Any] = {
            name: getattr(item, name)
            for name in _PRODUCT_COLUMNS
            if getattr(item, name) is not None
        }
        if item.active is not None:
            values["active"] = item.active
        if item.category is not None:
            values["category_id"] = category_ids[item.category]
        product = existing.get(item.sku)
        if product is None:
            missing = [name for name in ("title", "price") if name not in values]
            if missing:
                raise ValidationError(
                    f"row {number}: {missing[0]}: is required for a new product ({item.sku})",
                    code="invalid_row",
                    extra={"row": number, "field": missing[0]},
                )
            new.append(Product(sku=item.sku, **values))
            continue
        diff = {name: value for name, value in values.items() if getattr(product, name) != value}
        if not diff:
            unchanged += 1
            continue
        for name, value in diff.items():
            setattr(product, name, value)
        changed.append(product)
        changed_fields.update(diff)
    Product.objects.bulk_create(new, batch_size=1000)
    if changed:
        Product.objects.bulk_update(
            changed, fields=[*sorted(changed_fields), "updated_at"], batch_size=1000
        )
    return CatalogImportSummary(
        products_created=len(new),
        products_updated=len(changed),
        products_unchanged=unchanged,
        categories_created=categories_created,
        created_skus=tuple(product.sku for product in new),
    )


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


# --- The UCI Online Retail file ----------------------------------------------------------

ONLINE_RETAIL_FILE = "online_retail.csv.gz"
ONLINE_RETAIL_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
ONLINE_RETAIL_ZONE = ZoneInfo("Europe/London")
ORDER_PREFIX = "UCI-"
# The file's non-product stock codes (its README): postage, manual lines, fees, vouchers.
NON_PRODUCT_CODES = frozenset(
    {"POST", "DOT", "M", "m", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "B", "PADS"}
)
NON_PRODUCT_PREFIXES = ("DCGS", "gift_0001_")
DEFAULT_STOCK = 100

# The file has no categories: a product goes to the first category one of whose keywords is a
# word of its title (upper-cased, split on anything but letters and digits), else to "Other".
_CATEGORY_WORDS = {
    "Christmas": "CHRISTMAS XMAS ADVENT SANTA REINDEER SNOWFLAKE SNOWMAN NATIVITY BAUBLE BAUBLES",
    "Easter": "EASTER CHICK CHICKS",
    "Candles & Lights": "CANDLE CANDLES LIGHT LIGHTS TEALIGHT LANTERN LANTERNS LAMP LAMPSHADE "
    "INCENSE NIGHTLIGHT",
    "Jewellery": "NECKLACE NECKLACES BRACELET BRACELETS EARRINGS RING RINGS CHARM BEAD BEADS "
    "BEADED DIAMANTE PEARL BANGLE BROOCH PENDANT AMETHYST JEWELLED HAIR HAIRCLIP",
    "Bags & Purses": "BAG BAGS PURSE HANDBAG TOTE SHOPPER WALLET WASHBAG",
    "Kitchen & Dining": "MUG MUGS CUP CUPS SAUCER BOWL BOWLS PLATE PLATES CUTLERY TEA TEAPOT "
    "COFFEE CAKE CAKESTAND BAKING KITCHEN JAR JARS JAM LUNCH DINNER TRAY SPOON SPOONS APRON "
    "PANTRY GLASS GLASSES BOTTLE NAPKINS CHOPSTICKS EGG DISH COASTER COASTERS OVEN FRIDGE JUG "
    "MILK FOOD BIN",
    "Party & Celebration": "PARTY BUNTING BALLOON BALLOONS GARLAND BIRTHDAY CONFETTI CRACKER "
    "CRACKERS",
    "Stationery & Gift Wrap": "CARD CARDS NOTEBOOK PENCIL PENCILS PEN PENS STICKERS STICKER WRAP "
    "PAPER TAPE ENVELOPE ENVELOPES JOURNAL CALENDAR ERASER RUBBER RIBBON RIBBONS TAG TAGS "
    "NOTEPAD BOOK",
    "Toys & Kids": "TOY TOYS CHILDRENS CHILDS KIDS DOLLY DOLL JIGSAW GAME GAMES SPACEBOY "
    "PLAYHOUSE SKIPPING TEDDY SOLDIER SOLDIERS BABY PUZZLE FELTCRAFT KIT",
    "Bath & Beauty": "BATHROOM BATH SOAP TISSUES TOWEL SPONGE COSMETIC MAKEUP LIP",
    "Garden & Outdoors": "GARDEN PARASOL UMBRELLA PICNIC WATERING BIRD BIRDHOUSE PLANT PLANTER "
    "FLOWERPOT",
    "Home Decor": "FRAME MIRROR CLOCK SIGN CUSHION DOORMAT HOOK HOOKS KNOB WALL ART DECORATION "
    "ORNAMENT VASE PLAQUE SHELF CABINET TILE PHOTO PICTURE THROW QUILT BLANKET DOORSTOP HANGER "
    "HEART HEARTS WREATH CURTAIN SLATE LETTERS BUTTERFLY",
    "Storage": "BOX BOXES TIN TINS BASKET BASKETS STORAGE CASE CASES DRAWER CRATE",
    "Fashion & Accessories": "SCARF GLOVES HAT SLIPPERS SUNGLASSES KEYRING PHONE PASSPORT WARMER",
}
CATEGORY_KEYWORDS: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (name, frozenset(words.split())) for name, words in _CATEGORY_WORDS.items()
)
OTHER_CATEGORY = "Other"
CATEGORY_NAMES = (*(name for name, _ in CATEGORY_KEYWORDS), OTHER_CATEGORY)
_WORD_RE = re.compile(r"[A-Z0-9]+")


def is_product_code(code: str) -> bool:
    """Whether a UCI StockCode names a product (not postage, a fee, a voucher or an adjustment)."""
    return code not in NON_PRODUCT_CODES and not code.startswith(NON_PRODUCT_PREFIXES)


def category_for_title(title: str) -> str:
    """The category of a UCI product, from the first keyword rule its title matches."""
    words = set(_WORD_RE.findall(title.upper()))
    for name, keywords in CATEGORY_KEYWORDS:
        if words & keywords:
            return name
    return OTHER_CATEGORY


def category_image_url(name: str) -> str:
    """The local placeholder image of a category (no network needed)."""
    return f"/static/patron/img/categories/{slugify(name)}.svg"


def online_retail_default_path() -> Path | None:
    """Where the UCI file is: ``$PATRON_DATA_DIR``, else ``../shared/data`` beside the checkout."""
    import os

    from django.conf import settings

    data_dir = os.environ.get("PATRON_DATA_DIR", "").strip()
    candidates = [Path(data_dir) / ONLINE_RETAIL_FILE] if data_dir else []
    candidates.append(Path(settings.BASE_DIR).parent / "shared" / "data" / ONLINE_RETAIL_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


@dataclass
class _Sale:
    """One aggregated order line: a (stock code, unit price) within an invoice."""

    code: str
    title: str
    quantity: int
    unit_price: Decimal


@dataclass
class _Invoice:
    number: str
    customer_id: str
    placed_at: dt.datetime
    country: str
    lines: dict[tuple[str, Decimal], _Sale] = field(default_factory=dict)


@dataclass
class _Cancellation:
    number: str
    customer_id: str
    at: dt.datetime
    rows: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _Parsed:
    rows: int = 0
    customers: dict[str, tuple[str, dt.datetime]] = field(default_factory=dict)
    products: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    invoices: dict[str, _Invoice] = field(default_factory=dict)
    cancellations: dict[str, _Cancellation] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _online_retail_rows(path: Path, *, progress: bool, desc: str) -> Iterator[list[str]]:
    """The file's data rows after checking its header; the progress bar counts file bytes."""
    with (
        path.open("rb") as raw,
        tqdm.wrapattr(
            raw,
            "read",
            total=path.stat().st_size,
            desc=desc,
            unit="B",
            unit_scale=True,
            disable=not progress,
            leave=False,
        ) as counted,
        (
            gzip.open(counted, "rt", encoding="utf-8", newline="")
            if path.suffix == ".gz"
            else io.TextIOWrapper(counted, encoding="utf-8", newline="")
        ) as handle,
    ):
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ONLINE_RETAIL_COLUMNS:
            raise ValidationError(
                f"{path.name}: expected the UCI Online Retail columns "
                f"{','.join(ONLINE_RETAIL_COLUMNS)}, got {header}",
                code="invalid_file",
            )
        yield from reader


def _online_retail_parse(
    path: Path, *, since: dt.datetime | None, include_guests: bool, progress: bool
) -> _Parsed:
    parsed = _Parsed()
    times: dict[str, dt.datetime] = {}
    skipped = parsed.skipped
    prices: dict[str, Decimal] = {}
    for row in _online_retail_rows(path, progress=progress, desc="reading"):
        parsed.rows += 1
        invoice, code, description, quantity_text, when, price_text, customer, country = row
        at = times.get(when)
        if at is None:
            at = times[when] = dt.datetime.fromisoformat(when).replace(tzinfo=ONLINE_RETAIL_ZONE)
        if since is not None and at < since:
            skipped["before_slice"] += 1
            continue
        if customer.endswith(".0"):
            customer = customer[:-2]
        quantity = int(quantity_text)
        price = prices.get(price_text)
        if price is None:
            price = prices[price_text] = Decimal(price_text)
        if customer:
            # A customer's country is the one on their latest row (8 customers have two).
            first = parsed.customers.get(customer)
            parsed.customers[customer] = (country, first[1] if first else at)
        if invoice.startswith("A"):
            skipped["bad_debt"] += 1
            continue
        if invoice.startswith("C"):
            if not customer:
                skipped["cancellation_without_customer"] += 1
                continue
            cancellation = parsed.cancellations.get(invoice)
            if cancellation is None:
                cancellation = parsed.cancellations[invoice] = _Cancellation(
                    number=invoice, customer_id=customer, at=at
                )
            cancellation.rows.append((code, -quantity))
            continue
        if quantity <= 0 or price <= ZERO:
            skipped["adjustment_or_free"] += 1
            continue
        title = description.strip()
        if is_product_code(code):
            # Rows come in time order: the last one seen is the most recent.
            known = parsed.products.get(code)
            parsed.products[code] = (title or (known[0] if known else code), price)
        if not customer and not include_guests:
            skipped["guest"] += 1
            continue
        order = parsed.invoices.get(invoice)
        if order is None:
            order = parsed.invoices[invoice] = _Invoice(
                number=invoice, customer_id=customer, placed_at=at, country=country
            )
        unit_price = price.quantize(CENT)
        sale = order.lines.get((code, unit_price))
        if sale is None:
            order.lines[(code, unit_price)] = _Sale(code, title, quantity, unit_price)
        else:
            sale.quantity += quantity
            sale.title = sale.title or title
    return parsed


def online_retail_last_time(*, path: Path) -> dt.datetime:
    """The latest InvoiceDate in the file, aware (Europe/London)."""
    latest = ""
    for row in _online_retail_rows(path, progress=False, desc="scanning"):
        latest = max(latest, row[4])
    if not latest:
        raise ValidationError(f"{path.name}: has no rows", code="invalid_file")
    return dt.datetime.fromisoformat(latest).replace(tzinfo=ONLINE_RETAIL_ZONE)


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


@transaction.atomic
def _online_retail_shoppers(parsed: _Parsed) -> tuple[dict[str, int], int]:
    _lock_imports()
    customer_ids = list(parsed.customers)
    before = Shopper.objects.filter(customer_id__in=customer_ids).count()
    Shopper.objects.bulk_create(
        (
            Shopper(customer_id=customer, country=country, created_at=first_seen)
            for customer, (country, first_seen) in parsed.customers.items()
        ),
        batch_size=2000,
        ignore_conflicts=True,
    )
    ids: dict[str, int] = {}
    for customer, pk, merged_into in Shopper.objects.filter(
        customer_id__in=customer_ids
    ).values_list("customer_id", "id", "merged_into_id"):
        assert customer is not None
        ids[customer] = merged_into or pk
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
      row, created at their first row's time;
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


# --- The built-in demo catalog -----------------------------------------------------------

DEMO_CATALOG = Path(__file__).resolve().parent / "fixtures" / "demo_catalog.json"


@dataclass(frozen=True)
class DemoCatalogSummary:
    catalog: CatalogImportSummary
    orders: OrdersImportSummary
    shoppers: int


@transaction.atomic
def demo_catalog_load(*, path: Path = DEMO_CATALOG) -> DemoCatalogSummary:
    """Load the built-in demo catalog, its shoppers and their orders; a re-run changes nothing.

    Demo order rows say ``days_ago`` instead of ``placed_at`` so the orders stay recent; they
    are placed at noon UTC that many days before today.
    """
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle)
    catalog = catalog_import(rows=catalog_rows_parse(rows=data["products"]))
    for person in data["shoppers"]:
        shopper = services.shopper_resolve(customer_id=person["customer_id"])
        services.shopper_update_traits(
            shopper=shopper,
            traits={
                key: person[key]
                for key in ("email", "first_name", "last_name", "country", "email_consent")
                if key in person and not getattr(shopper, key)
            },
        )
    today = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    rows = [
        {**row, "placed_at": today - dt.timedelta(days=int(row.pop("days_ago", 0)))}
        for row in data["orders"]
    ]
    orders = orders_import(orders=order_rows_group(rows=rows))
    return DemoCatalogSummary(catalog=catalog, orders=orders, shoppers=len(data["shoppers"]))


def months_before(moment: dt.datetime, *, months: int) -> dt.datetime:
    """The start of the day ``months`` calendar months before ``moment`` (day clamped to 28)."""
    month_index = moment.year * 12 + moment.month - 1 - months
    return moment.replace(
        year=month_index // 12,
        month=month_index % 12 + 1,
        day=min(moment.day, 28),
        hour=0,
        minute=0,
        second=0,
        microsecond=0,
    )
