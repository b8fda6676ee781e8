"""Helpers for data migrations that give a staff group its model permissions.

Django creates permissions in ``post_migrate``, after every migration has run, so a migration
that grants them must create them first; these helpers do both, with the historical models
(``apps`` as ``RunPython`` passes it). Use them inside a ``RunPython`` function::

    def grant(apps, schema_editor):
        group_permissions_add(apps, group="Agents", permissions=[("chat", "view_message")])

Permissions are ``(app_label, codename)`` pairs. The migration depends on
``("auth", "0012_alter_user_first_name_max_length")`` and
``("contenttypes", "0002_remove_content_type_name")`` as well as on the migrations that made
the models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Permissions = Iterable[tuple[str, str]]


def permissions_create(apps: Any, *app_labels: str) -> None:
    """Create the permissions of these apps' models now (normally ``post_migrate`` does)."""
    from django.contrib.auth.management import create_permissions

    for label in app_labels:
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None


def group_permissions_add(apps: Any, *, group: str, permissions: Permissions) -> None:
    """Give the group named ``group`` (created if missing) these permissions, creating them
    first. An unknown permission raises ``DoesNotExist``: a typo fails the migration."""
    wanted = list(permissions)
    permissions_create(apps, *sorted({label for label, _ in wanted}))
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    row, _ = Group.objects.get_or_create(name=group)
    for app_label, codename in wanted:
        row.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def group_permissions_remove(apps: Any, *, group: str, permissions: Permissions) -> None:
    """Take these permissions from the group named ``group``, if both exist (the reverse of
    ``group_permissions_add`` for a group that existed before)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    row = Group.objects.filter(name=group).first()
    if row is None:
        return
    for app_label, codename in permissions:
        row.permissions.remove(
            *Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        )


def group_delete(apps: Any, *, group: str) -> None:
    """Delete the group named ``group`` (the reverse of a migration that created it)."""
    apps.get_model("auth", "Group").objects.filter(name=group).delete()
