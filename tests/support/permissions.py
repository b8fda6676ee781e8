"""Granting Django permissions in tests, as the admin would (after a flush too)."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.management import create_permissions
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType


def permissions(*names: str) -> list[Permission]:
    """The Permission rows for ``"app_label.codename"`` names, made when a flush (transactional
    tests) removed what the migrations made."""
    ContentType.objects.clear_cache()  # ids from before a flush would be stale
    rows = []
    for name in names:
        app_label, codename = name.split(".")
        row = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        if not row.exists():
            create_permissions(apps.get_app_config(app_label), verbosity=0)
        rows.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return rows


def grant(user: Any, *names: str) -> Any:
    """``user`` with ``names`` added to their own permissions, reloaded (no permission cache)."""
    user.user_permissions.add(*permissions(*names))
    return get_user_model().objects.get(pk=user.pk)
