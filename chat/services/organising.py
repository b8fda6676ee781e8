"""Agents organise their work: labels on conversations, and snoozing a conversation until a
time or until the shopper writes (docs/chat-protocol.md §3)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from chat.models import MAX_LABEL_LENGTH, Conversation
from chat.services._common import State, _emit_state, _lock
from chat.services.messages import conversation_wake
from chat.services.routing import _check_agent
from core.exceptions import Conflict, ValidationError

MAX_LABELS = 20


def label_clean(label: Any) -> str:
    """A label as stored: trimmed, inner whitespace collapsed, lower case; 1 to 40 characters.
    Raises ``ValidationError`` otherwise."""
    if not isinstance(label, str):
        raise ValidationError(gettext("label must be text"))
    cleaned = " ".join(label.split()).lower()
    if not cleaned or len(cleaned) > MAX_LABEL_LENGTH:
        raise ValidationError(
            gettext("label must be 1 to %(max)s characters") % {"max": MAX_LABEL_LENGTH}
        )
    return cleaned


def conversation_label_add(*, conversation_id: int, label: str, by: Any) -> Conversation:
    """Add ``label`` to the conversation (already there: nothing changes). At most 20 labels.

    Everyone concerned gets ``conversation.state``, every console ``inbox.update``."""
    _check_agent(by)
    cleaned = label_clean(label)
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if cleaned in conversation.labels:
            return conversation
        if len(conversation.labels) >= MAX_LABELS:
            raise ValidationError(
                gettext("a conversation has at most %(max)s labels") % {"max": MAX_LABELS}
            )
        conversation.labels = sorted([*conversation.labels, cleaned])
        conversation.save(update_fields=["labels"])
        _emit_state(conversation_id)
    return conversation


def conversation_label_remove(*, conversation_id: int, label: str, by: Any) -> Conversation:
    """Remove ``label`` from the conversation (absent: nothing changes)."""
    _check_agent(by)
    cleaned = label_clean(label)
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if cleaned not in conversation.labels:
            return conversation
        conversation.labels = [x for x in conversation.labels if x != cleaned]
        conversation.save(update_fields=["labels"])
        _emit_state(conversation_id)
    return conversation


def conversation_snooze(
    *, conversation_id: int, until: dt.datetime | None, by: Any, now: dt.datetime | None = None
) -> Conversation:
    """Snooze an open conversation: it leaves the inbox tabs (the ``snoozed`` view lists it)
    until ``until`` (aware, in the future; ``conversations_wake_due`` brings it back) or, with
    ``until`` None, until the shopper writes. A shopper message wakes it either way.

    Raises ``ValidationError`` for a naive or past ``until``, ``Conflict`` when resolved."""
    _check_agent(by)
    now = now or timezone.now()
    if until is not None and (timezone.is_naive(until) or until <= now):
        raise ValidationError(gettext("until must be a time in the future, with its timezone"))
    with transaction.atomic():
        conversation = _lock(conversation_id)
        if conversation.state == State.RESOLVED:
            raise Conflict(gettext("A resolved conversation cannot be snoozed."), code="conflict")
        conversation.snoozed_at = now
        conversation.snoozed_until = until
        conversation.save(update_fields=["snoozed_at", "snoozed_until"])
        _emit_state(conversation_id)
    return conversation


def conversation_unsnooze(*, conversation_id: int, by: Any) -> bool:
    """An agent brings a snoozed conversation back to the inbox; False when it was not
    snoozed (``messages.conversation_wake``)."""
    _check_agent(by)
    return conversation_wake(conversation_id=conversation_id)


def conversations_wake_due(*, now: dt.datetime | None = None, batch: int = 500) -> int:
    """Wake every conversation whose snooze time has come (the beat task
    ``chat.tasks.conversations_wake``); returns how many. Idempotent: a conversation woken
    twice is woken once."""
    now = now or timezone.now()
    due = list(
        Conversation.objects.filter(snoozed_at__isnull=False, snoozed_until__lte=now)
        .order_by("snoozed_until", "pk")
        .values_list("pk", flat=True)[:batch]
    )
    return sum(conversation_wake(conversation_id=cid) for cid in due)
