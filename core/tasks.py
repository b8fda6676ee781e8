"""The kind of Celery task that carries work queued after a commit, so its options have one home.

No tasks live here (``core`` knows no app); the apps' ``tasks.py`` declare theirs with
``retrying_task``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.db import OperationalError

_P = ParamSpec("_P")
_R = TypeVar("_R")


def retrying_task(
    *, max_retries: int, retry_backoff_max: int = 600, ignore_result: bool = False
) -> Callable[[Callable[_P, _R]], DjangoTask[_P, _R]]:
    """Declare a task that a transaction queues with ``task.delay_on_commit(...)``.

    It is acknowledged only after it ran and re-queued when its worker dies (``acks_late``,
    ``reject_on_worker_lost``), so its body must be idempotent; a transient database error
    (``OperationalError``: connection lost, lock or statement timeout) retries it with
    exponential backoff, at most ``max_retries`` times, waiting at most ``retry_backoff_max``
    seconds. Other errors are not retried.
    """
    decorator: Any = shared_task(
        base=DjangoTask,
        acks_late=True,
        reject_on_worker_lost=True,
        autoretry_for=(OperationalError,),
        retry_backoff=True,
        retry_backoff_max=retry_backoff_max,
        max_retries=max_retries,
        ignore_result=ignore_result,
    )
    return cast("Callable[[Callable[_P, _R]], DjangoTask[_P, _R]]", decorator)
