"""The UCI Online Retail file: its columns, categories by title words, and parsing it into sales and cancellations."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from django.utils.text import slugify
from tqdm import tqdm

from commerce.importers.parsing import CENT
from commerce.models import ZERO
from core.exceptions import ValidationError

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
