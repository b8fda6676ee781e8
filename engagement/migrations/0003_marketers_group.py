"""A Marketers group: campaigns, their steps, broadcasts, segments and topics; reading what
campaigns sent and the catalog they promote. Not refunds, orders, prices or shoppers' personal
data (issue #8, section 2). Give it to staff users who run campaigns."""

from django.db import migrations

from core.permission_migrations import group_delete, group_permissions_add

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
    group_permissions_add(apps, group="Marketers", permissions=MARKETER_PERMISSIONS)


def remove(apps, schema_editor):
    group_delete(apps, group="Marketers")


class Migration(migrations.Migration):
    dependencies = [
        ("engagement", "0002_transactional_campaigns_and_run_recipient"),
        ("commerce", "0005_shopper_personal_data_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, remove)]
