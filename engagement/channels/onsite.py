"""On-site messages: delivering one makes it visible to the widget on the next page view."""

from __future__ import annotations

from engagement.channels.base import ChannelBackend, Handing, Outbound


class OnsiteBackend(ChannelBackend):
    idempotent = True

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        handing()
        return f"onsite-{outbound.message_id}"
