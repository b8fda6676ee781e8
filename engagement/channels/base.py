"""The one interface every channel backend implements, and the errors it may raise.

A backend delivers :class:`Outbound` messages. Its ``send`` must call ``handing()`` exactly
once, immediately before the point after which the provider may have accepted the message
(the SMTP end-of-data, the HTTP request); ``handing`` commits that fact, so a worker that dies
afterwards leaves a message the sweeper knows may have gone. If ``handing`` raises, the backend
must not hand the message over.

``idempotent`` says whether the provider collapses a second hand-over of the same message
(by our idempotency key: a webhook's delivery id, a web push ``Topic``): only then may a
message that was possibly handed over be sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Outbound:
    message_id: int
    delivery_id: str
    idempotency_key: str
    channel: str
    recipient: str
    subject: str = ""
    html: str = ""
    text: str = ""
    link_url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    payload: Mapping[str, Any] = field(default_factory=dict)
    shopper_id: int | None = None
    endpoint_url: str = ""
    endpoint_secret: str = ""
    push_subscriptions: tuple[Mapping[str, str], ...] = ()


class DeliveryError(Exception):
    """A send that did not succeed.

    ``transient``: worth retrying later (a timeout, a 4xx SMTP reply, an HTTP 503).
    ``maybe_delivered``: the provider may have the message (the connection broke after the
    hand-over); only an idempotent backend's messages are then sent again.
    """

    def __init__(self, message: str, *, transient: bool, maybe_delivered: bool = False):
        super().__init__(message)
        self.transient = transient
        self.maybe_delivered = maybe_delivered


Handing = Callable[[], None]
# Commits the hand-over of a group in one transaction; returns the message ids still claimed
# by this worker (only those may be handed over).
GroupHanding = Callable[[Sequence[Outbound]], set[int]]
# Per message: the provider's id, a DeliveryError, or None when the claim was lost.
Result = str | DeliveryError | None


class ClaimLost(Exception):
    """The message is no longer this worker's to send (the sweeper or staff took it back)."""


class ChannelBackend:
    idempotent: bool = False
    # Messages handed over together (one commit for the group): SMTP uses one connection each.
    group_size: int = 1

    def open(self) -> None:
        """Open a connection reused for a batch (optional)."""

    def close(self) -> None:
        """Close what ``open`` opened."""

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        """Deliver one message; return the provider's id for it."""
        raise NotImplementedError

    def send_many(self, outbounds: Sequence[Outbound], *, handing: GroupHanding) -> list[Result]:
        """Deliver a group; by default one at a time, each with its own hand-over commit."""
        results: list[Result] = []
        for outbound in outbounds:

            def handing_one(outbound: Outbound = outbound) -> None:
                if outbound.message_id not in handing([outbound]):
                    raise ClaimLost(outbound.message_id)

            try:
                results.append(self.send(outbound, handing=handing_one))
            except ClaimLost:
                results.append(None)
            except DeliveryError as error:
                results.append(error)
        return results
