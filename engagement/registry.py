"""The trigger registry: how the apps above engagement start campaigns without it importing them.

An app registers its triggers in ``AppConfig.ready``::

    from engagement.registry import register_trigger

    register_trigger(
        "cart_abandoned",
        label="Cart abandoned",
        context=lambda shopper, occurrence: {"cart": cart_for(occurrence.data["cart_id"])},
        ends_on=["Order Completed"],                     # tracked events that end a run
        ends_when=lambda shopper, occurrence: cart_is_empty(occurrence.data["cart_id"]),
        description="Fired by carts for a cart idle past the configured delay.",
        preview=lambda shopper: {"cart_id": latest_cart_id(shopper)},
    )

and fires it, inside the transaction that decided so, with
``engagement.services.trigger_fire(trigger="cart_abandoned", shopper=..., occurrence_key=...,
data={...})``. ``occurrence_key`` names this firing (a cart id and its idle period, an order
number): firing the same occurrence twice enrols once and sends once. ``email_to`` sends the
occurrence's email steps to an address that is not (or not yet) the shopper's: the one typed into
a form by an anonymous shopper, a staff inbox; ``email_reply_to`` sets their Reply-To.

What a trigger gives a campaign:

- ``context(shopper, occurrence) -> dict``: the template variables of every message, computed
  when the message is sent (so prices and stock are current). ``occurrence.data`` holds the
  JSON-serialisable dict given to ``trigger_fire``; the keys are also in the template context.
- ``ends_on``: tracked event names (``"Order Completed"``, ``"$identify"``) that end the
  shopper's running sequences of this trigger; ``ends_on_match(event, occurrence) -> bool``
  narrows which events count (the same product, the same cart).
- ``ends_when(shopper, occurrence) -> bool``: polled before each message is sent, for end
  conditions that are not events (an order created through the API, an emptied cart).
- ``preview(shopper) -> dict``: occurrence data for the admin's preview of a step.
- ``description``: shown in the admin, including the trigger's ``trigger_options``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commerce.models import Event, Shopper


@dataclass(frozen=True)
class Occurrence:
    """One firing of a trigger for a shopper, as the trigger's callables see it."""

    key: str
    data: Mapping[str, Any]
    fired_at: dt.datetime
    campaign_id: int | None = None
    run_id: int | None = None
    email_to: str = ""  # the address given to trigger_fire, when not the shopper's
    email_reply_to: str = ""


ContextFn = Callable[["Shopper", Occurrence], Mapping[str, Any]]
EndsWhenFn = Callable[["Shopper", Occurrence], bool]
EndsOnMatchFn = Callable[["Event", Occurrence], bool]
PreviewFn = Callable[["Shopper"], Mapping[str, Any]]


@dataclass(frozen=True)
class TriggerType:
    key: str
    label: str
    context: ContextFn | None = None
    ends_on: tuple[str, ...] = ()
    ends_on_match: EndsOnMatchFn | None = None
    ends_when: EndsWhenFn | None = None
    preview: PreviewFn | None = None
    description: str = ""
    default_options: Mapping[str, Any] = field(default_factory=dict)

    def build_context(self, shopper: Shopper, occurrence: Occurrence) -> dict[str, Any]:
        context: dict[str, Any] = dict(occurrence.data)
        if self.context is not None:
            context.update(self.context(shopper, occurrence))
        return context


_triggers: dict[str, TriggerType] = {}


def register_trigger(
    key: str,
    *,
    label: str,
    context: ContextFn | None = None,
    ends_on: Iterable[str] = (),
    ends_on_match: EndsOnMatchFn | None = None,
    ends_when: EndsWhenFn | None = None,
    preview: PreviewFn | None = None,
    description: str = "",
    default_options: Mapping[str, Any] | None = None,
) -> TriggerType:
    """Register (or re-register, e.g. on autoreload) a trigger type under ``key``."""
    trigger = TriggerType(
        key=key,
        label=label,
        context=context,
        ends_on=tuple(ends_on),
        ends_on_match=ends_on_match,
        ends_when=ends_when,
        preview=preview,
        description=description,
        default_options=dict(default_options or {}),
    )
    _triggers[key] = trigger
    return trigger


def trigger_get(key: str) -> TriggerType | None:
    return _triggers.get(key)


def triggers() -> list[TriggerType]:
    return sorted(_triggers.values(), key=lambda trigger: trigger.label)


def trigger_choices() -> list[tuple[str, str]]:
    return [(trigger.key, trigger.label) for trigger in triggers()]


def triggers_ended_by(event_name: str) -> list[TriggerType]:
    return [trigger for trigger in _triggers.values() if event_name in trigger.ends_on]
