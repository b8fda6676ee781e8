"""Marketers run A/B tests of their campaigns' steps: the tests and their variants."""

from django.db import migrations

PERMISSIONS = [
    ("engagement", f"{action}_{model}")
    for model in ("steptest", "stepvariant")
    for action in ("add", "change", "delete", "view")
]


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are made after all migrations by post_migrate; this one needs them now.
    app_config = apps.get_app_config("engagement")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Marketers")
    for app_label, codename in PERMISSIONS:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Marketers").first()
    if group is None:
        return
    for app_label, codename in PERMISSIONS:
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("engagement", "0006_flow_filters_splits_and_ab_tests"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
