"""Thin Celery tasks over engagement's services (ids in, services called, idempotent)."""

from __future__ import annotations

from celery import shared_task

from core.tasks import retrying_task
from engagement import services


@shared_task(acks_late=True, reject_on_worker_lost=True, expires=120, ignore_result=True)
def outbox_deliver() -> int:
    """Deliver due messages in batches; the rows' states, not this task, ensure exactly once."""
    return services.outbox_deliver()


@shared_task(acks_late=True, expires=30, ignore_result=True)
def outbox_dispatch() -> int:
    """Beat: start delivery for due messages (delayed steps, retries, postponed ones)."""
    due = services.outbox_due_count()
    services.outbox_kick(count=due)
    return due


@shared_task(acks_late=True, expires=120, ignore_result=True)
def outbox_sweep(lease_seconds: int | None = None) -> dict[str, int]:
    """Beat: resolve messages left in ``sending`` by a worker that died."""
    return services.outbox_sweep(lease_seconds=lease_seconds)


@retrying_task(max_retries=5, ignore_result=True)
def broadcast_send(broadcast_id: int) -> int:
    return services.broadcast_send(broadcast_id=broadcast_id)


@shared_task(acks_late=True, expires=300, ignore_result=True)
def triggers_scan() -> dict[str, int]:
    """Beat: the triggers that come from time passing rather than from events."""
    return {
        "broadcasts": services.broadcasts_due_send(),
        "win_back": services.win_back_scan(),
        "birthday": services.birthday_scan(),
        "post_purchase": services.post_purchase_scan(),
        "ab_tests_decided": services.ab_tests_decide_due(),
    }


@shared_task(acks_late=True, expires=120, ignore_result=True)
def product_changes_detect(product_ids: list[int] | None = None) -> int:
    """Beat: notify watchers of price drops and restocks since the last look."""
    return len(services.product_changes_detect(product_ids=product_ids))
