"""Events stored through COPY (psycopg's ``write_row``) keep every character exactly: the
escaping is psycopg's, not ours."""

from __future__ import annotations

import pytest

from commerce.models import Event, WriteKey
from tests.commerce.tracking_support import post, track

pytestmark = pytest.mark.django_db

TRICKY = 'tab\there, line\nbreak, cr\rreturn, back\\slash \\N \\t, quote" ş ā 🛒'


def test_tricky_text_survives_copy_exactly(client):
    key = WriteKey.objects.create(name="web shop").key
    calls = [
        track(
            f"copy-{index}",
            event="Product Viewed",
            anonymousId=f"an\ton\\{index}\\t",
            properties={"note": TRICKY, "nested": {"list": [TRICKY, None, 1.5]}},
            context={"page": {"title": TRICKY}},
        )
        for index in range(3)
    ]

    response = post(client, "/v1/batch", {"batch": calls}, key=key)

    assert response.status_code == 200, response.content
    stored = list(
        Event.objects.order_by("message_id").values_list(
            "message_id", "anonymous_id", "properties", "context"
        )
    )
    assert stored == [
        (
            f"copy-{index}",
            f"an\ton\\{index}\\t",
            {"note": TRICKY, "nested": {"list": [TRICKY, None, 1.5]}},
            {"page": {"title": TRICKY}},
        )
        for index in range(3)
    ]
