"""Hooks through which the apps above commerce react to its events without commerce importing them.

Apps register in ``AppConfig.ready``:

- event handlers, called with the tracked events of a name (or of every name) once the events
  are stored; they run in the event-processing task, in a transaction, and must be idempotent
  (an event may be handed to them again after a worker dies mid-batch);
- shopper-merge handlers, called inside the merge transaction before the generic re-pointing of
  foreign keys, to fold rows that are unique per shopper (a loyalty account, a cart).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commerce.models import Event, Shopper

EventHandler = Callable[[Sequence["Event"]], None]
MergeHandler = Callable[["Shopper", "Shopper"], None]

ALL_EVENTS = "*"

_event_handlers: dict[str, list[EventHandler]] = defaultdict(list)
_merge_handlers: list[MergeHandler] = []


def register_event_handler(event_name: str, handler: EventHandler) -> None:
    """Call ``handler`` with stored track events named ``event_name`` (``"*"``: every event).

    Identify, page and other call types are delivered under ``"$identify"``, ``"$page"``, ...
    """
    if handler not in _event_handlers[event_name]:
        _event_handlers[event_name].append(handler)


def event_handlers(event_name: str) -> list[EventHandler]:
    return [*_event_handlers.get(event_name, ()), *_event_handlers.get(ALL_EVENTS, ())]


def handled_event_names() -> set[str]:
    return {name for name, handlers in _event_handlers.items() if handlers}


def register_shopper_merge_handler(handler: MergeHandler) -> None:
    """Call ``handler(source, target)`` when ``source`` is merged into ``target``.

    Runs inside the merge transaction with both shopper rows locked; afterwards every foreign
    key still pointing at ``source`` is re-pointed at ``target``.
    """
    if handler not in _merge_handlers:
        _merge_handlers.append(handler)


def merge_handlers() -> list[MergeHandler]:
    return list(_merge_handlers)
