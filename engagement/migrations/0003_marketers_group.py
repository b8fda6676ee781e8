"""A Marketers group: campaigns, their steps, broadcasts, segments and topics; reading what
campaigns sent and the catalog they promote. Not refunds, orders, prices or shoppers' personal
data (issue #8, section 2). Give it to staff users who run campaigns."""

from django.db import migrations

MARKETER_PERMISSIONS = [
    *(
        ("engagement", f"{action}_{model}")
        for model in ("campaign", "campaignstep", "segment", "topic")
        for action in ("add", "change", "delete", "view")
    ),
    ("engagement", "add_broadcast"),
    ("engagement", "view_broadcast"),
    ("engagement", "view_message"),
    ("engagement", "view_run"),
    ("engagement", "view_npsresponse"),
    ("commerce", "view_product"),
    ("commerce", "view_category"),
    ("commerce", "view_coupon"),
]


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are made after all migrations by post_migrate; this one needs them now.
    for label in ("commerce", "engagement"):
        app_config = apps.get_app_config(label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Marketers")
    for app_label, codename in MARKETER_PERMISSIONS:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Marketers").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("engagement", "0002_transactional_campaigns_and_run_recipient"),
        ("commerce", "0005_shopper_personal_data_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, remove)]
