"""Every periodic task is scheduled: a task whose docstring starts with "Beat:" is one."""

from __future__ import annotations

import inspect

from django.conf import settings

from config.celery import app


def _periodic_tasks() -> set[str]:
    app.loader.import_default_modules()  # autodiscover every app's tasks module
    return {
        name
        for name, task in app.tasks.items()
        if not name.startswith("celery.") and (inspect.getdoc(task.run) or "").startswith("Beat:")
    }


def test_the_beat_schedule_names_every_periodic_task_and_only_existing_tasks():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    periodic = _periodic_tasks()

    assert periodic - scheduled == set()
    assert scheduled - set(app.tasks) == set()
    assert scheduled == periodic
    # The sweeper for events whose processing task was lost, forgotten once.
    assert "commerce.tasks.events_process_pending" in scheduled
    assert {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}[
        "commerce.tasks.events_process_pending"
    ] == 60.0
