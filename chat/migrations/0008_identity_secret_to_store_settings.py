"""Data: the identity secret moves from the chat settings to the store's settings.

Verified identity is one rule for every browser-facing entry (tracking, chat, widget APIs), so
its secret belongs to the store (``commerce.StoreSettings``). The existing value is kept, so
the hashes a shop already computes keep working. Reversible: the value is copied back.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.db import migrations


def copy_to_store(apps: Any, schema_editor: Any) -> None:
    ChatSettings = apps.get_model("chat", "ChatSettings")
    StoreSettings = apps.get_model("commerce", "StoreSettings")
    chat = ChatSettings.objects.filter(pk=1).first()
    secret = chat.identity_secret if chat is not None and chat.identity_secret else ""
    store = StoreSettings.objects.filter(pk=1).first()
    if store is None:
        StoreSettings.objects.create(pk=1, identity_secret=secret or secrets.token_hex(32))
    elif secret:
        store.identity_secret = secret
        store.save(update_fields=["identity_secret"])


def copy_to_chat(apps: Any, schema_editor: Any) -> None:
    ChatSettings = apps.get_model("chat", "ChatSettings")
    StoreSettings = apps.get_model("commerce", "StoreSettings")
    store = StoreSettings.objects.filter(pk=1).first()
    if store is not None:
        ChatSettings.objects.filter(pk=1).update(identity_secret=store.identity_secret[:64])


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0007_message_path_indexes"),
        ("commerce", "0004_store_settings_identity_secret"),
    ]

    operations = [migrations.RunPython(copy_to_store, copy_to_chat)]
