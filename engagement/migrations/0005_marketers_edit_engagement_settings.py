"""Marketers may set up, read and change the store's engagement settings (smart sending, attribution
window): they decide how often shoppers hear from the shop."""

from django.db import migrations

PERMISSIONS = ("add_engagementsettings", "view_engagementsettings", "change_engagementsettings")


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are made after all migrations by post_migrate; this one needs them now.
    app_config = apps.get_app_config("engagement")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    group = apps.get_model("auth", "Group").objects.filter(name="Marketers").first()
    if group is None:
        return
    Permission = apps.get_model("auth", "Permission")
    for codename in PERMISSIONS:
        group.permissions.add(
            Permission.objects.get(content_type__app_label="engagement", codename=codename)
        )


def revoke(apps, schema_editor):
    group = apps.get_model("auth", "Group").objects.filter(name="Marketers").first()
    if group is not None:
        group.permissions.remove(
            *apps.get_model("auth", "Permission").objects.filter(
                content_type__app_label="engagement", codename__in=PERMISSIONS
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("engagement", "0004_engagement_settings_and_smart_sending"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
