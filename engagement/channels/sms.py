"""SMS through a pluggable backend (``PATRON_SMS_BACKEND``); a real gateway is a subclass.

``ConsoleSMSBackend`` logs; ``FileSMSBackend`` appends JSON lines to ``PATRON_SMS_FILE`` (a
record a developer or a test in another process can read); ``MemorySMSBackend`` keeps them in
``MemorySMSBackend.outbox`` for tests in the same process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings

from engagement.channels.base import ChannelBackend, Handing, Outbound

logger = logging.getLogger(__name__)


class ConsoleSMSBackend(ChannelBackend):
    idempotent = False

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        handing()
        logger.info("SMS to %s: %s", outbound.recipient, outbound.text)
        return f"console-{outbound.delivery_id}"


class MemorySMSBackend(ChannelBackend):
    idempotent = True
    outbox: ClassVar[list[dict[str, Any]]] = []

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        handing()
        self.outbox.append(
            {"to": outbound.recipient, "body": outbound.text, "id": outbound.delivery_id}
        )
        return f"memory-{outbound.delivery_id}"


class FileSMSBackend(ChannelBackend):
    idempotent = False

    def send(self, outbound: Outbound, *, handing: Handing) -> str:
        path = Path(settings.PATRON_SMS_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"to": outbound.recipient, "body": outbound.text, "id": outbound.delivery_id}
        )
        handing()
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        return f"file-{outbound.delivery_id}"
