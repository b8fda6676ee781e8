"""Two transactions that store the same client id at once: one message, and no seq skipped.

Two real PostgreSQL connections (one per thread) each store a batch through
``messages_store`` (the sockets' group-commit statement). The first batch holds the
conversation's row lock until its transaction commits; the second, which resends one of the
first batch's client ids, waits on that lock (seen in ``pg_locks``, not guessed with a sleep).
When the first commits, the resend must come back as "not stored" without counting a seq: the
conversation's messages are numbered 1..n with no gap and ``last_seq`` is n.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from chat import services
from chat.models import Conversation, Message
from commerce.models import Shopper

Author = Message.Author

pytestmark = pytest.mark.django_db(transaction=True)


def _shopper_message(conversation: Conversation, client_id: str) -> services.PostRequest:
    return services.post_request(
        conversation_id=conversation.pk,
        author_kind=Author.SHOPPER,
        body=f"message {client_id}",
        client_id=client_id,
        shopper_id=conversation.shopper_id,
    )


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", [pid])
        (waiting,) = cursor.fetchone()
    return bool(waiting)


def _until(condition: Callable[[], bool], *, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def test_a_concurrent_resend_of_the_same_client_id_leaves_no_seq_gap() -> None:
    # Given a conversation, and a first batch (c1, c2) stored but not yet committed
    shopper = Shopper.objects.create(first_name="Ada")
    conversation = Conversation.objects.create(shopper=shopper, state=Conversation.State.QUEUED)
    first = [_shopper_message(conversation, "c1"), _shopper_message(conversation, "c2")]
    second = [_shopper_message(conversation, "c1"), _shopper_message(conversation, "c3")]
    second_pid: list[int] = []
    second_rows: list[Any] = []
    errors: list[BaseException] = []

    def store_second_batch() -> None:
        try:
            connection.ensure_connection()
            assert connection.connection is not None
            second_pid.append(connection.connection.info.backend_pid)
            second_rows.extend(services.messages_store(second, now=timezone.now()))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    other = threading.Thread(target=store_second_batch)
    with transaction.atomic():
        first_rows = services.messages_store(first, now=timezone.now())
        # When the second batch (the resend of c1, then c3) runs meanwhile on another connection
        other.start()
        _until(lambda: bool(second_pid) and _waiting_on_a_lock(second_pid[0]))
    # the first commits here, and the second goes on
    other.join(timeout=30)
    assert not other.is_alive()
    assert not errors, errors

    # Then c1 was stored once, the resend was not stored again, and seqs run 1..3 with no gap
    assert [row[1] if row else None for row in first_rows] == [1, 2]
    assert [row[1] if row else None for row in second_rows] == [None, 3]
    stored = list(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("seq", "client_id")
    )
    assert stored == [(1, "c1"), (2, "c2"), (3, "c3")]
    conversation.refresh_from_db()
    assert conversation.last_seq == 3
