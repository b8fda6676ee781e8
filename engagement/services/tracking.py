"""Opens, clicks, NPS answers and on-site messages seen: what a shopper's fetches record."""

from __future__ import annotations

import datetime as dt
import re

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from commerce.models import Shopper
from core.exceptions import NotFound, ValidationError
from engagement import tokens
from engagement.models import Channel, Message, NpsResponse

# --- Opens, clicks, unsubscribes, preferences, NPS ---------------------------------------


# Link scanners: mail security gateways (Microsoft Defender Safe Links, Proofpoint URL
# Defense, Mimecast, Barracuda, Cisco/IronPort), image proxies and link previewers fetch every
# link of a message, usually within seconds of delivery and often with HEAD. The rule:
# a fetch records an open or a click only when it is a GET, from a browser-like user agent
# (``Mozilla/``) that names no known scanner, made more than PATRON_LINK_SCANNER_SECONDS after
# the message was handed to the provider (scanners fetch on delivery; people take longer).
# Any other fetch still gets its pixel or redirect, and records nothing. NPS answers are never
# recorded by a fetch at all: the score link opens a page the shopper confirms (POST).
_SCANNER_AGENTS = re.compile(
    r"bot\b|crawler|spider|preview|scanner|safelinks|safe links|microsoft office|"
    r"ms-office|outlook-|proofpoint|mimecast|barracuda|ironport|symantec|forcepoint|"
    r"trendmicro|sophos|fortiguard|zscaler|headless|python|curl|wget|go-http|java/|"
    r"okhttp|libwww|httpclient|axios|node-fetch|imageproxy|mailproxy",
    re.IGNORECASE,
)
# Gmail and Yahoo fetch images through their proxies when the reader opens the message, so
# for the open pixel these are people; they never fetch links.
_IMAGE_PROXIES = re.compile(r"GoogleImageProxy|YahooMailProxy", re.IGNORECASE)


def link_fetch_is_human(
    *, method: str, user_agent: str, handed_at: dt.datetime | None, image: bool = False
) -> bool:
    """Whether a fetch of a tracked link or pixel counts as the shopper's (see the rule above).

    ``handed_at`` is when the message went to the provider (None: unknown, no time test).
    """
    if method.upper() != "GET":
        return False
    if image and _IMAGE_PROXIES.search(user_agent):
        return True
    if not user_agent.startswith("Mozilla/") or _SCANNER_AGENTS.search(user_agent):
        return False
    if handed_at is not None:
        quiet = dt.timedelta(seconds=settings.PATRON_LINK_SCANNER_SECONDS)
        if timezone.now() < handed_at + quiet:
            return False
    return True


def message_open_record(*, token: str, method: str = "GET", user_agent: str = "") -> bool:
    """Record the first open of a message; returns whether this call recorded it.

    ``NotFound`` for a bad token. A fetch that ``link_fetch_is_human`` refuses records nothing.
    """
    message_id = tokens.read("open", token)
    if not isinstance(message_id, int):
        raise NotFound("this link is not valid", code="bad_token")
    message = Message.objects.filter(pk=message_id).only("pk", "handed_at", "sent_at").first()
    if message is None:
        raise NotFound("this link is not valid", code="bad_token")
    if not link_fetch_is_human(
        method=method,
        user_agent=user_agent,
        handed_at=message.handed_at or message.sent_at,
        image=True,
    ):
        return False
    return bool(
        Message.objects.filter(pk=message_id, opened_at__isnull=True).update(
            opened_at=timezone.now()
        )
    )


def message_click_record(*, token: str, method: str = "GET", user_agent: str = "") -> str:
    """Record the first click of a message (and its open); returns the URL to redirect to.

    ``NotFound`` for a bad token. The redirect is given to every fetch; the click is recorded
    only for one that ``link_fetch_is_human`` accepts.
    """
    value = tokens.read("click", token)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)):
        raise NotFound("this link is not valid", code="bad_token")
    message_id, url = value
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise NotFound("this link is not valid", code="bad_token")
    message = Message.objects.filter(pk=message_id).only("pk", "handed_at", "sent_at").first()
    if message is None or not link_fetch_is_human(
        method=method, user_agent=user_agent, handed_at=message.handed_at or message.sent_at
    ):
        return url
    now = timezone.now()
    Message.objects.filter(pk=message_id, clicked_at__isnull=True).update(
        clicked_at=now, clicked_url=url[:2000]
    )
    Message.objects.filter(pk=message_id, opened_at__isnull=True).update(opened_at=now)
    return url


def nps_message(*, token: str) -> Message:
    message_id = tokens.read("nps", token)
    message = (
        Message.objects.select_related("campaign").filter(pk=message_id).first()
        if isinstance(message_id, int)
        else None
    )
    if message is None:
        raise NotFound("this link is not valid", code="bad_token")
    return message


@transaction.atomic
def nps_record(*, token: str, score: int, comment: str | None = None) -> NpsResponse:
    """Store (or change) the answer to an NPS message; the latest score counts."""
    if not 0 <= score <= 10:
        raise ValidationError("score must be between 0 and 10")
    message = nps_message(token=token)
    response, created = NpsResponse.objects.get_or_create(
        message=message,
        defaults={
            "shopper_id": message.shopper_id,
            "campaign_id": message.campaign_id,
            "score": score,
            "comment": comment or "",
        },
    )
    if not created:
        response.score = score
        fields = ["score", "answered_at"]
        if comment is not None:
            response.comment = comment
            fields.append("comment")
        response.answered_at = timezone.now()
        response.save(update_fields=fields)
    now = timezone.now()
    Message.objects.filter(pk=message.pk, clicked_at__isnull=True).update(clicked_at=now)
    Message.objects.filter(pk=message.pk, opened_at__isnull=True).update(opened_at=now)
    return response


# --- On-site and push --------------------------------------------------------------------


def onsite_mark_seen(*, shopper: Shopper, message_id: int) -> bool:
    if not 0 < message_id < 2**63:
        raise NotFound("no such message")
    updated = Message.objects.filter(
        pk=message_id, shopper=shopper, channel=Channel.ONSITE, state=Message.State.SENT
    ).update(seen_at=timezone.now())
    if (
        not updated
        and not Message.objects.filter(
            pk=message_id, shopper=shopper, channel=Channel.ONSITE
        ).exists()
    ):
        raise NotFound("no such message")
    return bool(updated)
