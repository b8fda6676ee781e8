"""The Agents group gets what the agent console needs and no more (issue #8, section 2).

Answering conversations, reading conversations and their messages, canned responses and the
other agents' presence (for transfers). Not commerce's permissions: an agent sees the personal
data of the shoppers in the conversations assigned to them, through chat, and nothing of the
catalog, orders, refunds or the shopper list. ``chat.view_chat_metrics`` stays with managers.
"""

from django.db import migrations

from core.permission_migrations import group_permissions_add, group_permissions_remove

AGENT_PERMISSIONS = [
    ("chat", "answer_conversations"),
    ("chat", "view_conversation"),
    ("chat", "view_message"),
    ("chat", "view_cannedresponse"),
    ("chat", "view_agentstatus"),
]


def grant(apps, schema_editor):
    group_permissions_add(apps, group="Agents", permissions=AGENT_PERMISSIONS)


def revoke(apps, schema_editor):
    # 0002 gave the first.
    group_permissions_remove(apps, group="Agents", permissions=AGENT_PERMISSIONS[1:])


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0010_chat_metrics_permission"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
