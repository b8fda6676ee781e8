"""The transcripts an agent sends from the console socket are limited per agent, as through the
console API (``chat.services.transcript_agent_rate_limit``): a real uvicorn with the limit at
one transcript an hour, a real console socket."""

from __future__ import annotations

import asyncio
from typing import Any

from chat.models import Conversation
from commerce.models import Shopper
from engagement.models import Message as OutboxMessage
from tests.chat.conftest import make_agent
from tests.support.chat_protocol import console_socket, session_cookie
from tests.support.processes import asgi_server_fixture
from tests.system.chat_fixtures import CHAT_SYSTEM

pytestmark = CHAT_SYSTEM


server = asgi_server_fixture(PATRON_RATE_TRANSCRIPTS_PER_AGENT="1/3600")


def test_a_second_transcript_within_the_hour_is_refused_and_not_sent(
    server: str,
    chat_settings: Any,
) -> None:
    agent = make_agent("anna", online=False)
    shopper = Shopper.objects.create(email="ada@example.com")
    first, second = (Conversation.objects.create(shopper=shopper) for _ in range(2))
    cookie = session_cookie(agent)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        console, _ = await console_socket(server, cookie)
        await console.send(
            {"type": "transcript.send", "conversation_id": first.pk, "email": "a@example.com"}
        )
        queued = await console.expect("transcript.queued")
        await console.send(
            {
                "type": "transcript.send",
                "conversation_id": second.pk,
                "email": "b@example.com",
                "ref": "again",
            }
        )
        refused = await console.expect("error", ref="again")
        await console.close()
        return queued, refused

    queued, refused = asyncio.run(scenario())

    assert queued["email"] == "a@example.com"
    assert refused["code"] == "rate_limited"
    assert refused["retry_after_ms"] > 0
    assert not OutboxMessage.objects.filter(recipient="b@example.com").exists()
