"""Web push through pywebpush with VAPID keys, to every active subscription of the shopper.

The Web Push protocol's ``Topic`` header makes the push service replace an undelivered message
with the same topic, so a message sent again after a worker died is collapsed: this channel
is ``idempotent``. A 404 or 410 from the push service means the subscription is gone.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from pywebpush import WebPushException, webpush

from engagement.channels.base import ChannelBackend, DeliveryError, Handing, Outbound

logger = logging.getLogger(__name__)


def push_payload(outbound: Outbound) -> dict[str, Any]:
    return {
        "title": outbound.subject,
        "body": outbound.text,
        "url": outbound.link_url,
        "id": outbound.delivery_id,
    }


class WebPushBackend(ChannelBackend):
    idempotent = True

    def __init__(self) -> None:
        self.gone: list[str] = []

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        if not settings.PATRON_VAPID_PRIVATE_KEY:
            raise DeliveryError("PATRON_VAPID_PRIVATE_KEY is not set", transient=False)
        data = json.dumps(push_payload(outbound))
        handing()
        delivered = 0
        errors: list[str] = []
        transient = False
        uncertain = False
        for subscription in outbound.push_subscriptions:
            try:
                response = webpush(
                    subscription_info={
                        "endpoint": subscription["endpoint"],
                        "keys": {"p256dh": subscription["p256dh"], "auth": subscription["auth"]},
                    },
                    data=data,
                    vapid_private_key=settings.PATRON_VAPID_PRIVATE_KEY,
                    vapid_claims={"sub": settings.PATRON_VAPID_SUBJECT},
                    ttl=settings.PATRON_PUSH_TTL_SECONDS,
                    headers={"Topic": f"m{outbound.message_id}", "Urgency": "normal"},
                    timeout=10,
                )
            except WebPushException as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in (404, 410):
                    self.gone.append(subscription["endpoint"])
                else:
                    transient = transient or status is None or status >= 500 or status == 429
                errors.append(f"{status}: {exc}")
                continue
            except OSError as exc:
                transient = uncertain = True
                errors.append(str(exc))
                continue
            status_code = getattr(response, "status_code", 201)
            if 200 <= status_code < 300:
                delivered += 1
        if delivered:
            return f"push:{delivered}"
        raise DeliveryError(
            "; ".join(errors) or "no push subscription",
            transient=transient,
            maybe_delivered=uncertain,
        )


class ConsolePushBackend(ChannelBackend):
    idempotent = True

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        handing()
        logger.info("push to shopper %s: %s", outbound.shopper_id, push_payload(outbound))
        return f"console-{outbound.delivery_id}"
