"""The condition language of flow filters and conditional splits.

A campaign's ``flow_filters`` and ``split_condition`` are JSON lists of conditions, all of
which must hold (an empty list always holds). A condition is one object:

``{"type": "event", "event": "Order Completed", "op": "eq", "value": 0, "since": "flow_start"}``
    how many times the shopper did a tracked event (by name);
``{"type": "orders", "op": "eq", "value": 0, "since": "flow_start"}``
    how many orders the shopper placed (cancelled ones do not count), from the order history
    whichever way the orders arrived (tracking, API, import, the shop's checkout);
``{"type": "email", "metric": "opened", "op": "eq", "value": 0, "days": 90}``
    how many emails the shopper ``received``, ``opened`` or ``clicked`` (any campaign);
``{"type": "property", "field": "country", "op": "eq", "value": "LV"}``
    a shopper property, in the language of segment rules (fields, ``traits.<name>``, tags);
``{"type": "any", "conditions": [...]}``
    at least one of the nested conditions holds.

Counting conditions compare the count with ``value`` (a whole number, 0 or more) by ``op``:
``eq``, ``ne``, ``gt``, ``gte``, ``lt`` or ``lte``. They count over a window: ``"since":
"flow_start"`` (since the run started), ``"days": N`` (the last N days, 1-3650), or, with
neither, the shopper's whole history. Unknown types, keys or operators are refused with a
message that names the condition, so a merchant's typo never silently filters everyone.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from commerce.models import Event, Order, Shopper
from core.exceptions import ValidationError
from engagement import selectors
from engagement.models import Channel, Message

_COUNT_OPS: dict[str, tuple[str, Callable[[int, int], bool]]] = {
    "eq": ("=", operator.eq),
    "ne": ("≠", operator.ne),
    "gt": (">", operator.gt),
    "gte": ("≥", operator.ge),
    "lt": ("<", operator.lt),
    "lte": ("≤", operator.le),
}
_EMAIL_METRICS = {"received", "opened", "clicked"}
_WINDOW_KEYS = {"since", "days"}
_KEYS = {
    "event": {"type", "event", "op", "value", *_WINDOW_KEYS},
    "orders": {"type", "op", "value", *_WINDOW_KEYS},
    "email": {"type", "metric", "op", "value", *_WINDOW_KEYS},
    "property": {"type", "field", "op", "value"},
    "any": {"type", "conditions"},
}
_MAX_DEPTH = 3
_MAX_DAYS = 3650


@dataclass(frozen=True)
class ConditionContext:
    """Who a condition is evaluated for: the shopper, when their run started, and now."""

    shopper: Shopper
    flow_started_at: dt.datetime
    now: dt.datetime


def _fail(where: str, problem: str) -> ValidationError:
    return ValidationError(f"{where}: {problem}", code="invalid_condition")


def _validate_count(condition: Mapping[str, Any], where: str) -> None:
    op = condition.get("op")
    if op not in _COUNT_OPS:
        raise _fail(where, f"op must be one of {', '.join(_COUNT_OPS)}")
    value = condition.get("value")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(where, "value must be a whole number, 0 or more")
    if "since" in condition and "days" in condition:
        raise _fail(where, 'give either "since" or "days", not both')
    if "since" in condition and condition["since"] != "flow_start":
        raise _fail(where, 'since must be "flow_start"')
    if "days" in condition:
        days = condition["days"]
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= _MAX_DAYS:
            raise _fail(where, f"days must be a whole number from 1 to {_MAX_DAYS}")


def _validate_one(condition: Any, where: str, depth: int) -> None:
    if not isinstance(condition, Mapping):
        raise _fail(where, "must be an object")
    kind = condition.get("type")
    if kind not in _KEYS:
        raise _fail(where, f"type must be one of {', '.join(_KEYS)}")
    unknown = sorted(set(condition) - _KEYS[kind])
    if unknown:
        raise _fail(where, f"unknown key {unknown[0]!r} for a {kind} condition")
    if kind == "any":
        nested = condition.get("conditions")
        if not isinstance(nested, list) or not nested:
            raise _fail(where, "conditions must be a non-empty list")
        if depth >= _MAX_DEPTH:
            raise _fail(where, f"conditions nest at most {_MAX_DEPTH} deep")
        for index, item in enumerate(nested, start=1):
            _validate_one(item, f"{where}, alternative {index}", depth + 1)
        return
    if kind == "property":
        try:
            selectors.rules_q([{k: v for k, v in condition.items() if k != "type"}])
        except ValidationError as exc:
            raise _fail(where, exc.message) from None
        return
    if kind == "event":
        name = condition.get("event")
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise _fail(where, "event must be the event's name (1-255 characters)")
    if kind == "email" and condition.get("metric") not in _EMAIL_METRICS:
        raise _fail(where, f"metric must be one of {', '.join(sorted(_EMAIL_METRICS))}")
    _validate_count(condition, where)


def conditions_validate(conditions: Any, *, field: str = "conditions") -> list[dict[str, Any]]:
    """Check a list of conditions; returns it unchanged or raises ``ValidationError``.

    The error's message names the condition ("flow_filters, condition 2: op must be ...").
    """
    if conditions in (None, ""):
        return []
    if not isinstance(conditions, list):
        raise ValidationError(f"{field} must be a list of conditions", code="invalid_condition")
    for index, condition in enumerate(conditions, start=1):
        _validate_one(condition, f"{field}, condition {index}", 1)
    return conditions


def _window_start(condition: Mapping[str, Any], context: ConditionContext) -> dt.datetime | None:
    if condition.get("since") == "flow_start":
        return context.flow_started_at
    if "days" in condition:
        return context.now - dt.timedelta(days=int(condition["days"]))
    return None


def _count(condition: Mapping[str, Any], context: ConditionContext) -> int:
    start = _window_start(condition, context)
    shopper = context.shopper
    kind = condition["type"]
    if kind == "event":
        events = Event.objects.filter(
            shopper_id=shopper.pk, type=Event.Type.TRACK, name=condition["event"]
        )
        if start is not None:
            events = events.filter(timestamp__gte=start)
        return events.count()
    if kind == "orders":
        orders = Order.objects.filter(shopper_id=shopper.pk).exclude(status=Order.Status.CANCELLED)
        if start is not None:
            orders = orders.filter(placed_at__gte=start)
        return orders.count()
    column = {"received": "sent_at", "opened": "opened_at", "clicked": "clicked_at"}[
        condition["metric"]
    ]
    messages = Message.objects.filter(
        shopper_id=shopper.pk, channel=Channel.EMAIL, **{f"{column}__isnull": False}
    )
    if condition["metric"] == "received":
        messages = messages.filter(state=Message.State.SENT)
    if start is not None:
        messages = messages.filter(**{f"{column}__gte": start})
    return messages.count()


def condition_describe(condition: Mapping[str, Any]) -> str:
    """A short English description of a (valid) condition, for stop reasons and the admin."""
    kind = condition.get("type")
    if kind == "any":
        return "any of (" + "; ".join(condition_describe(c) for c in condition["conditions"]) + ")"
    if kind == "property":
        return f"{condition.get('field')} {condition.get('op', 'eq')} {condition.get('value')!r}"
    what = {
        "event": f"{condition.get('event')} events",
        "orders": "orders",
        "email": f"emails {condition.get('metric')}",
    }[str(kind)]
    window = ""
    if condition.get("since") == "flow_start":
        window = " since the flow started"
    elif "days" in condition:
        window = f" in the last {condition['days']} days"
    return f"{what}{window} {_COUNT_OPS[condition['op']][0]} {condition['value']}"


def _holds(condition: Mapping[str, Any], context: ConditionContext) -> bool:
    kind = condition["type"]
    if kind == "any":
        return any(_holds(c, context) for c in condition["conditions"])
    if kind == "property":
        rule = {k: v for k, v in condition.items() if k != "type"}
        return Shopper.objects.filter(selectors.rules_q([rule]), pk=context.shopper.pk).exists()
    return _COUNT_OPS[condition["op"]][1](_count(condition, context), int(condition["value"]))


def conditions_first_failing(
    conditions: Sequence[Mapping[str, Any]], *, context: ConditionContext
) -> Mapping[str, Any] | None:
    """The first of ``conditions`` (valid, see ``conditions_validate``) that does not hold for
    the context's shopper, or None when all hold. One or two queries per condition read."""
    for condition in conditions:
        if not _holds(condition, context):
            return condition
    return None


def conditions_hold(conditions: Sequence[Mapping[str, Any]], *, context: ConditionContext) -> bool:
    """Whether every one of ``conditions`` holds for the context's shopper (empty: True)."""
    return conditions_first_failing(conditions, context=context) is None
