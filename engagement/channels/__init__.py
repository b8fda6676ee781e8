"""Channel backends behind one interface (``base.ChannelBackend``)."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from engagement.channels.base import ChannelBackend


def backend_for(channel: str) -> ChannelBackend:
    """A fresh backend instance for one batch of messages on ``channel``."""
    if channel == "email":
        from engagement.channels.email import email_channel

        return email_channel()
    if channel == "sms":
        sms: ChannelBackend = import_string(settings.PATRON_SMS_BACKEND)()
        return sms
    if channel == "push":
        push: ChannelBackend = import_string(settings.PATRON_PUSH_BACKEND)()
        return push
    if channel == "onsite":
        from engagement.channels.onsite import OnsiteBackend

        return OnsiteBackend()
    if channel == "webhook":
        from engagement.channels.webhook import WebhookBackend

        return WebhookBackend()
    raise ValueError(f"unknown channel {channel!r}")


def channel_is_idempotent(channel: str) -> bool:
    return backend_for(channel).idempotent
