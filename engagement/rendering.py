"""Turning a campaign step's templates into a message for one shopper.

Templates use the Django template language with the trigger's context plus the variables
every message has: ``shopper``, ``first_name``, ``campaign``, ``unsubscribe_url``,
``preferences_url``, ``nps_links`` (eleven ``{score, url}`` for an NPS question), ``base_url``.
HTML email bodies get their links rewritten through the signed click redirect and an open
pixel; the plain-text part is the step's ``body_text`` or the HTML made readable. Marketing
email gets an unsubscribe link and List-Unsubscribe headers; transactional email does not.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.template import Context, Template

from commerce.models import Shopper
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


@lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    return Template(source)


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
) -> dict[str, Any]:
    context: dict[str, Any] = {}
    if trigger is not None:
        context.update(trigger.build_context(shopper, occurrence))
    else:
        context.update(occurrence.data)
    context.update(
        shopper=shopper,
        first_name=shopper.first_name or "there",
        campaign=campaign,
        base_url=settings.PATRON_BASE_URL,
        unsubscribe_url=tokens.unsubscribe_url(message_id, shopper.pk, channel),
        preferences_url=tokens.preferences_url(shopper.pk),
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
) -> Rendered:
    """Render ``step`` for ``shopper``; ``track`` adds the click redirect and the open pixel."""
    context = base_context(
        message_id=message_id,
        shopper=shopper,
        campaign=campaign,
        channel=step.channel,
        trigger=trigger,
        occurrence=occurrence,
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
        body_html += (
            '<p style="font-size:12px;color:#666">'
            f'<a href="{preferences}">Email preferences</a> · '
            f'<a href="{unsubscribe}">Unsubscribe</a></p>'
        )
    if step.body_text:
        text = template_render(step.body_text, context, autoescape=False).strip() + "\n"
        if unsubscribe not in text:
            text += f"\nUnsubscribe: {unsubscribe}\n"
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
