"""``chat_messages_post`` version 2, from chat/sql/chat_messages_post_v2.sql.

Version 1 was written inside migration 0006; from version 2 on the function lives in a versioned
file beside the code that calls it (``chat.services.messages.messages_store``). A later version
is a new file and a new migration like this one; reversing a version restores the one before.
"""

import importlib
from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent.parent / "sql"


def _v1() -> str:
    v1 = importlib.import_module("chat.migrations.0006_messages_post_function").CREATE
    return str(v1).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


class Migration(migrations.Migration):
    dependencies = [("chat", "0013_seed_bot_example_phrases")]

    operations = [
        migrations.RunSQL(
            (SQL / "chat_messages_post_v2.sql").read_text(encoding="utf-8"), reverse_sql=_v1()
        )
    ]
