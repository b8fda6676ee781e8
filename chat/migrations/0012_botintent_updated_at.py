"""BotIntent.updated_at: part of the bot model's version stamp, so every process rebuilds its
classifier when a merchant edits an intent (chat.nlu.understanding)."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0011_agents_group_console_permissions"),
    ]

    operations = [
        migrations.AddField(
            model_name="botintent",
            name="updated_at",
            field=models.DateTimeField(auto_now=True, default=django.utils.timezone.now),
            preserve_default=False,
        ),
    ]
