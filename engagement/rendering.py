"""Turning a campaign step's templates into a message for one shopper.

Templates use the Django template language with the trigger's context plus the variables
every message has: ``shopper``, ``first_name``, ``campaign``, ``shop``, ``unsubscribe_url``,
``preferences_url``, ``nps_links`` (eleven ``{score, url}`` for an NPS question), ``base_url``.

Merchants write these templates, so they run in a sandbox (DESIGN.md, "Trust"): they see the
shopper, the trigger's context and the shop, and nothing else. Every value reaches the template
through :func:`template_value`, which turns model instances into read-only mappings of the
fields registered for their model (:func:`template_fields_register`; an unregistered model
becomes ``None``), querysets and related managers into tuples, and drops anything else that is
not plain data; so no template reaches a staff user, a password hash, a manager
(``.objects``), another shopper or an internal note by following attributes. Templates are
compiled by an engine of their own: Django's built-in tags and filters only (no ``{% load %}``
of installed libraries such as the admin's log, no template loaders for ``{% include %}``), and
without ``{% debug %}``.
HTML email bodies get their links rewritten through the signed click redirect and an open
pixel; the plain-text part is the step's ``body_text`` or the HTML made readable. Marketing
email gets an unsubscribe link and List-Unsubscribe headers; transactional email does not.
"""

from __future__ import annotations

import datetime as dt
import html as html_lib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parseaddr
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.db import models
from django.template import Context, Engine, Library, Template
from django.utils import translation
from django.utils.functional import Promise
from django.utils.html import escape
from django.utils.translation import gettext

from commerce.models import Category, Coupon, Order, OrderLine, Product, Shopper
from core.i18n import language_normalise
from engagement import tokens
from engagement.models import Campaign, CampaignStep, Channel
from engagement.registry import Occurrence, TriggerType

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_ANCHOR = re.compile(r"""<a\b[^>]*?\bhref\s*=\s*["']([^"']+)["'][^>]*>(.*?)</a>""", re.I | re.S)
_BREAK = re.compile(r"<br\s*/?>|</p\s*>|</div\s*>|</h[1-6]\s*>|</li\s*>|</tr\s*>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_STYLE = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BLANK_LINES = re.compile(r"\n\s*\n\s*\n+")


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    link_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


# --- The sandbox -------------------------------------------------------------------------

logger = logging.getLogger(__name__)

# How deep relations are followed (order -> lines -> product -> category) and how many rows a
# related manager or queryset gives a template.
MAX_DEPTH = 6
MAX_ITEMS = 200

_PLAIN = (str, int, float, Decimal, bool, dt.date, dt.time, dt.timedelta)
_TEMPLATE_FIELDS: dict[type[models.Model], tuple[str, ...]] = {}


def template_fields_register(model: type[models.Model], *, fields: Iterable[str]) -> None:
    """Let templates read ``fields`` of ``model`` instances found in a trigger's context.

    Name only what the recipient may read (their own data, the product, the order). A field
    that is a relation is followed and sandboxed in turn; a property is read like a field.
    Apps register their models in ``AppConfig.ready``, beside their triggers.
    """
    _TEMPLATE_FIELDS[model] = tuple(fields)


def template_value(value: Any, *, depth: int = 0) -> Any:
    """``value`` as a template may see it: plain data, read-only, reaching nothing else.

    Strings, numbers, booleans, dates and None pass; mappings become read-only mappings with
    string keys, sequences tuples, querysets and related managers tuples of at most
    ``MAX_ITEMS``; a model instance becomes a read-only mapping of its registered fields, or
    None when its model is not registered. Anything else (functions, settings, requests,
    arbitrary objects) becomes None.
    """
    if value is None or isinstance(value, _PLAIN):
        return value
    if isinstance(value, Promise):  # a lazy translation
        return str(value)
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, models.Model):
        fields = _TEMPLATE_FIELDS.get(type(value))
        if fields is None:
            logger.warning("template context: %s is not registered, hidden", type(value).__name__)
            return None
        return MappingProxyType(
            {name: template_value(getattr(value, name, None), depth=depth + 1) for name in fields}
        )
    if isinstance(value, models.Manager):
        value = value.all()
    if isinstance(value, models.QuerySet):
        value = value[:MAX_ITEMS]
    if isinstance(value, Mapping):
        return MappingProxyType(
            {
                key: template_value(item, depth=depth + 1)
                for key, item in value.items()
                if isinstance(key, str)
            }
        )
    if isinstance(value, (list, tuple, models.QuerySet)):
        return tuple(template_value(item, depth=depth + 1) for item in list(value)[:MAX_ITEMS])
    return None


template_fields_register(Category, fields=("name", "slug"))
template_fields_register(
    Product,
    fields=(
        "sku",
        "title",
        "description",
        "category",
        "price",
        "currency",
        "stock",
        "in_stock",
        "image_url",
        "url",
        "average_rating",
        "rating_count",
        "active",
    ),
)
template_fields_register(
    OrderLine,
    fields=("sku", "title", "quantity", "unit_price", "total", "refunded_quantity", "product"),
)
template_fields_register(
    Order,
    fields=(
        "number",
        "status",
        "currency",
        "subtotal",
        "discount_total",
        "shipping_total",
        "tax_total",
        "total",
        "refunded_total",
        "coupon_code",
        "country",
        "placed_at",
        "lines",
    ),
)
template_fields_register(
    Coupon,
    fields=("code", "kind", "value", "currency", "min_spend", "valid_from", "valid_until"),
)
# The recipient's own contact details and preferences; not traits or tags, which hold what
# the store knows about them, nor links to other rows.
template_fields_register(
    Shopper,
    fields=(
        "customer_id",
        "first_name",
        "last_name",
        "name",
        "email",
        "phone",
        "locale",
        "time_zone",
        "country",
        "birthday",
    ),
)
template_fields_register(Campaign, fields=("name",))


def _sandbox_engine() -> Engine:
    """Django's built-in tags and filters, and its i18n tags (``{% translate %}``,
    ``{% blocktranslate %}``, without ``{% load %}``: a message renders in its recipient's
    language), nothing loadable or includable, no ``{% debug %}``."""
    engine = Engine(
        loaders=[],
        libraries={},
        builtins=["django.templatetags.i18n"],
        debug=False,
        app_dirs=False,
    )
    builtins = []
    for library in engine.template_builtins:
        copy = Library()
        copy.tags = {name: tag for name, tag in library.tags.items() if name != "debug"}
        copy.filters = dict(library.filters)
        builtins.append(copy)
    engine.template_builtins = builtins
    return engine


_ENGINE = _sandbox_engine()


def shop_context() -> Mapping[str, str]:
    """The shop as templates see it: its name (the sender's display name) and its URL."""
    name = parseaddr(settings.DEFAULT_FROM_EMAIL)[0]
    return MappingProxyType({"name": name, "url": settings.PATRON_BASE_URL})


@lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    return _ENGINE.from_string(source)


def template_render(source: str, context: Mapping[str, Any], *, autoescape: bool) -> str:
    if not source:
        return ""
    return _compile(source).render(Context(dict(context), autoescape=autoescape))


def html_to_text(markup: str) -> str:
    text = _STYLE.sub("", markup)
    text = _ANCHOR.sub(
        lambda m: (
            f"{_TAG.sub('', m.group(2)).strip()} ({m.group(1)})"
            if _TAG.sub("", m.group(2)).strip() not in ("", m.group(1))
            else m.group(1)
        ),
        text,
    )
    text = _BREAK.sub("\n", text)
    text = html_lib.unescape(_TAG.sub("", text))
    lines = [line.strip() for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip() + "\n"


def _track_links(markup: str, message_id: int, untracked: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3))
        if url in untracked:
            return match.group(0)
        return (
            f"{match.group(1)}{match.group(2)}{tokens.click_url(message_id, url)}{match.group(2)}"
        )

    return _HREF.sub(replace, markup)


def _with_pixel(markup: str, message_id: int) -> str:
    pixel = (
        f'<img src="{tokens.open_url(message_id)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px">'
    )
    index = markup.lower().rfind("</body>")
    if index == -1:
        return markup + pixel
    return markup[:index] + pixel + markup[index:]


class _NpsLinks:
    """The eleven NPS links, signed only if a template iterates them."""

    def __init__(self, message_id: int) -> None:
        self.message_id = message_id
        self._links: list[dict[str, Any]] | None = None

    def _all(self) -> list[dict[str, Any]]:
        if self._links is None:
            token_url = tokens.nps_url(self.message_id, 0).removesuffix("?score=0")
            self._links = [{"score": s, "url": f"{token_url}?score={s}"} for s in range(11)]
        return self._links

    def __iter__(self) -> Any:
        return iter(self._all())

    def __len__(self) -> int:
        return 11

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._all()[index]


def base_context(
    *,
    message_id: int,
    shopper: Shopper,
    campaign: Campaign,
    channel: str,
    trigger: TriggerType | None,
    occurrence: Occurrence,
    test: bool = False,
) -> dict[str, Any]:
    """Every variable of a message's templates, each sandboxed (see the module's docstring).

    ``test`` (previews and test sends): the unsubscribe and preference links are test links
    that act on nobody, whoever the shopper previewed.
    """
    if trigger is not None:
        trigger_context: Mapping[str, Any] = trigger.build_context(shopper, occurrence)
    else:
        trigger_context = occurrence.data
    context: dict[str, Any] = {
        key: template_value(value) for key, value in trigger_context.items() if isinstance(key, str)
    }
    context.update(
        shopper=template_value(shopper),
        first_name=shopper.first_name or gettext("there"),
        campaign=template_value(campaign),
        shop=shop_context(),
        base_url=settings.PATRON_BASE_URL,
        unsubscribe_url=(
            tokens.test_unsubscribe_url(channel)
            if test
            else tokens.unsubscribe_url(message_id, shopper.pk, channel)
        ),
        preferences_url=(
            tokens.test_preferences_url() if test else tokens.preferences_url(shopper.pk)
        ),
        nps_links=_NpsLinks(message_id),
    )
    return context


def message_render(
    *,
    message_id: int,
    shopper: Shopper,
    campaign: Campaign,
    step: CampaignStep,
    trigger: TriggerType | None,
    occurrence: Occurrence,
    track: bool = True,
    test: bool = False,
) -> Rendered:
    """Render ``step`` for ``shopper``; ``track`` adds the click redirect and the open pixel;
    ``test`` gives it links that act on nothing (see ``base_context``).

    Patron's own words in it (the footer, a missing first name) are in the message's language:
    the occurrence's ``language`` (chat emails: the conversation's), else the shopper's
    ``locale``, else ``LANGUAGE_CODE``.
    """
    language = (
        language_normalise(str(occurrence.data.get("language") or ""))
        or language_normalise(shopper.locale)
        or settings.LANGUAGE_CODE
    )
    with translation.override(language):
        return _message_render(
            message_id=message_id,
            shopper=shopper,
            campaign=campaign,
            step=step,
            trigger=trigger,
            occurrence=occurrence,
            track=track,
            test=test,
        )


def _message_render(
    *,
    message_id: int,
    shopper: Shopper,
    campaign: Campaign,
    step: CampaignStep,
    trigger: TriggerType | None,
    occurrence: Occurrence,
    track: bool,
    test: bool,
) -> Rendered:
    context = base_context(
        message_id=message_id,
        shopper=shopper,
        campaign=campaign,
        channel=step.channel,
        trigger=trigger,
        occurrence=occurrence,
        test=test,
    )
    subject = " ".join(template_render(step.subject, context, autoescape=False).split())
    link_url = template_render(step.link_url, context, autoescape=False).strip()
    if step.channel != Channel.EMAIL:
        body = template_render(step.body, context, autoescape=False).strip()
        return Rendered(subject=subject, html="", text=body, link_url=link_url)

    headers: dict[str, str] = {}
    if occurrence.email_reply_to:
        headers["Reply-To"] = occurrence.email_reply_to
    if campaign.transactional:
        # A receipt or a reply is not a subscription: no unsubscribe link or header (the
        # recipient may not even be the shopper whose marketing choices the link changes).
        body_html = template_render(step.body, context, autoescape=True)
        if step.body_text:
            text = template_render(step.body_text, context, autoescape=False).strip() + "\n"
        else:
            text = html_to_text(body_html)
        if track:
            body_html = _with_pixel(_track_links(body_html, message_id, set()), message_id)
        return Rendered(
            subject=subject, html=body_html, text=text, link_url=link_url, headers=headers
        )

    unsubscribe = context["unsubscribe_url"]
    preferences = context["preferences_url"]
    body_html = template_render(step.body, context, autoescape=True)
    if unsubscribe not in body_html:
        # Outside the f-string, where makemessages (xgettext) finds them.
        preferences_label = escape(gettext("Email preferences"))
        unsubscribe_label = escape(gettext("Unsubscribe"))
        body_html += (
            '<p style="font-size:12px;color:#666">'
            f'<a href="{preferences}">{preferences_label}</a> · '
            f'<a href="{unsubscribe}">{unsubscribe_label}</a></p>'
        )
    if step.body_text:
        text = template_render(step.body_text, context, autoescape=False).strip() + "\n"
        if unsubscribe not in text:
            text += "\n" + gettext("Unsubscribe: %(url)s") % {"url": unsubscribe} + "\n"
    else:
        text = html_to_text(body_html)
    if track:
        untracked = {unsubscribe, preferences}
        body_html = _with_pixel(_track_links(body_html, message_id, untracked), message_id)
    headers.update(
        {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    )
    return Rendered(subject=subject, html=body_html, text=text, link_url=link_url, headers=headers)
