"""The Agents group gets what the agent console needs and no more (issue #8, section 2).

Answering conversations, reading conversations and their messages, canned responses and the
other agents' presence (for transfers). Not commerce's permissions: an agent sees the personal
data of the shoppers in the conversations assigned to them, through chat, and nothing of the
catalog, orders, refunds or the shopper list. ``chat.view_chat_metrics`` stays with managers.
"""

from django.db import migrations

AGENT_PERMISSIONS = [
    ("chat", "answer_conversations"),
    ("chat", "view_conversation"),
    ("chat", "view_message"),
    ("chat", "view_cannedresponse"),
    ("chat", "view_agentstatus"),
]


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are made after all migrations by post_migrate; this one needs them now.
    app_config = apps.get_app_config("chat")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Agents")
    for app_label, codename in AGENT_PERMISSIONS:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Agents").first()
    if group is None:
        return
    for app_label, codename in AGENT_PERMISSIONS[1:]:  # 0002 gave the first
        group.permissions.remove(
            *Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0010_chat_metrics_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
