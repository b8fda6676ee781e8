"""Chat settings, business hours and shopper identity: tokens, identified customers, origins."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from dataclasses import dataclass

from django.core import signing
from django.utils import timezone

from chat import selectors
from chat.models import BusinessHours, ChatSettings, Conversation
from commerce import selectors as commerce_selectors
from commerce import services as commerce_services
from commerce.models import Shopper
from core.exceptions import PermissionDenied, ValidationError

TOKEN_SALT = "chat.shopper-token"  # noqa: S105 -- a signing namespace, not a secret
TOKEN_MAX_AGE = 180 * 24 * 3600


# --- Settings, hours, identity -------------------------------------------------------------

_settings_cache: tuple[float, ChatSettings] | None = None
SETTINGS_TTL = 2.0


def chat_settings_get(*, fresh: bool = False) -> ChatSettings:
    """The one settings row (created with defaults); cached in-process for a moment."""
    global _settings_cache
    now = time.monotonic()
    if not fresh and _settings_cache is not None and now - _settings_cache[0] < SETTINGS_TTL:
        return _settings_cache[1]
    settings_row, _ = ChatSettings.objects.get_or_create(pk=1)
    _settings_cache = (now, settings_row)
    return settings_row


def chat_settings_invalidate() -> None:
    global _settings_cache
    _settings_cache = None


def business_hours_open(*, at: dt.datetime | None = None) -> bool:
    """Open when there are no business-hours rows, or ``at`` falls inside one of them."""
    rows = list(BusinessHours.objects.all())
    if not rows:
        return True
    zone = zoneinfo.ZoneInfo(chat_settings_get().time_zone or "UTC")
    local = (at or timezone.now()).astimezone(zone)
    return any(row.contains(local) for row in rows)


def shopper_token_issue(*, shopper_id: int) -> str:
    return signing.dumps({"s": shopper_id}, salt=TOKEN_SALT, compress=True)


def shopper_token_verify(*, token: str) -> int:
    try:
        data = signing.loads(token, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE)
    except signing.BadSignature:
        raise PermissionDenied("The chat token is invalid or expired.", code="forbidden") from None
    if not isinstance(data, dict) or not isinstance(data.get("s"), int):
        raise PermissionDenied("The chat token is invalid.", code="forbidden")
    return int(data["s"])


def customer_hash(*, customer_id: str, secret: str) -> str:
    """The proof of ``customer_id`` (``commerce.selectors.identity_hash``), kept for callers."""
    return commerce_selectors.identity_hash(customer_id=customer_id, secret=secret)


@dataclass(frozen=True)
class ChatIdentity:
    shopper: Shopper
    token: str
    identified: bool


def chat_identify(
    *,
    write_key: str,
    origin: str | None,
    host: str | None = None,
    token: str | None = None,
    anonymous_id: str | None = None,
    customer_id: str | None = None,
    customer_hash_value: str | None = None,
) -> ChatIdentity:
    """Who is on the shopper socket: by a verified customer id, by token, or by anonymous id.

    ``origin`` and ``host`` are the socket handshake's Origin and Host headers (None when
    absent). The key and the origin are checked first, before anything is created or merged,
    by the one origin rule (``commerce.selectors.write_key_origin_allowed``; a socket without
    an Origin is refused: browsers always send one).

    The verified-identity rule (``commerce.services.visitor_resolve``, docs/identity.md): a
    customer is recognised only by ``customer_id`` with ``customer_hash``. Neither a token nor
    an anonymous id that leads to a known customer carries that identity: without the hash
    the visitor gets a new anonymous shopper, with none of the customer's conversations,
    orders or context. ``identified`` is True only for a verified customer.

    Raises ``PermissionDenied`` for an unknown write key, an origin the key does not allow, a
    bad token or a wrong customer hash.
    """
    key = commerce_selectors.write_key_active(key=write_key)
    if key is None:
        raise PermissionDenied("Unknown write key.", code="forbidden")
    if not commerce_selectors.write_key_origin_allowed(
        write_key=key, origin=origin, host=host, origin_required=True
    ):
        raise PermissionDenied(
            f"Pages at {origin or 'an unknown origin'} may not use this write key.",
            code="forbidden",
        )
    customer_id = (customer_id or "").strip() or None
    anonymous_id = (anonymous_id or "").strip() or None
    shopper: Shopper | None = None
    if customer_id is not None:
        if not commerce_selectors.identity_verified(
            customer_id=customer_id, proof=customer_hash_value
        ):
            raise PermissionDenied("customer_hash does not match customer_id.", code="forbidden")
        shopper = commerce_services.visitor_resolve(
            customer_id=customer_id, anonymous_id=anonymous_id, proof=customer_hash_value
        ).shopper
        if token:
            # A token from before login: that visitor's conversations follow the customer.
            previous = Shopper.objects.filter(pk=shopper_token_verify(token=token)).first()
            if previous is not None and previous.pk != shopper.pk and not previous.customer_id:
                Conversation.objects.filter(shopper=previous).update(shopper=shopper)
        identified = True
    else:
        if token:
            found = Shopper.objects.filter(pk=shopper_token_verify(token=token)).first()
            if found is None:
                raise PermissionDenied("The chat token names no shopper.", code="forbidden")
            found = commerce_selectors.shopper_canonical(found)
            # A token held by a known customer (issued while they were logged in, or to a
            # visitor who logged in since) proves nothing without the customer hash: the page
            # after a logout keeps the token and the anonymous id, and the next person on the
            # browser must not get the customer's conversations. They start over anonymously.
            if not found.customer_id:
                shopper = found
        if shopper is None:
            if anonymous_id is not None:
                shopper = commerce_services.visitor_resolve(anonymous_id=anonymous_id).shopper
            elif token:
                raise PermissionDenied(
                    "This chat token belongs to a signed-in customer: send customer_hash.",
                    code="forbidden",
                )
            else:
                raise ValidationError("hello needs a token, an anonymous_id or a customer_id.")
        identified = False
    return ChatIdentity(
        shopper=shopper,
        token=shopper_token_issue(shopper_id=shopper.pk),
        identified=identified,
    )


def conversation_for_shopper(
    *, shopper: Shopper, conversation_id: int | None
) -> Conversation | None:
    """The shopper's conversation ``conversation_id`` (``PermissionDenied`` when it is not
    theirs), or their current one when no id is given."""
    if conversation_id is None:
        return selectors.conversation_current(shopper_id=shopper.pk)
    conversation = (
        Conversation.objects.select_related("assigned_agent").filter(pk=conversation_id).first()
    )
    if conversation is None or conversation.shopper_id != shopper.pk:
        raise PermissionDenied("This conversation is not yours.", code="forbidden")
    return conversation
