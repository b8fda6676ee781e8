"""``chat_messages_post`` version 3, from chat/sql/chat_messages_post_v3.sql.

Version 3 takes the conversation's row lock before it checks a message's client id, so two
transactions resending one client id at once no longer leave a gap in the seqs (see the file's
header). Reversing it restores version 2.
"""

from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent.parent / "sql"


class Migration(migrations.Migration):
    dependencies = [("chat", "0015_agentstatus_presence_by_heartbeats")]

    operations = [
        migrations.RunSQL(
            (SQL / "chat_messages_post_v3.sql").read_text(encoding="utf-8"),
            reverse_sql=(SQL / "chat_messages_post_v2.sql").read_text(encoding="utf-8"),
        )
    ]
