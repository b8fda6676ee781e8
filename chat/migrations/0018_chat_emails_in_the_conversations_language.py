"""Data: chat's shopper emails speak the conversation's language.

The receipt, the agent's reply by email and the transcript, as 0004 seeded them, become
templates whose fixed words go through ``{% translate %}`` (the sandbox offers Django's i18n
tags; the message renders in the conversation's language, ``engagement.rendering``). Their
msgids are marked in ``chat/emails.py`` (``SHIPPED_EMAIL_TEXTS``) so the catalogs carry them.
A template the merchant changed is left as they wrote it. The support inbox's notice stays as
it is (staff read it).
"""

from django.db import migrations

PRE = '<pre style="font-family:inherit;white-space:pre-wrap;margin:0">{{ transcript }}</pre>'
RECEIPT = (
    "Thanks for your message. We're offline right now and will reply to this address as soon "
    "as we're back."
)

# trigger → (field, as 0004 seeded it, translatable version)
CHANGES = {
    "chat_offline_receipt": [
        ("subject", "We got your message", '{% translate "We got your message" %}'),
        (
            "body",
            f"<p>{RECEIPT}</p>\n{PRE}",
            f'<p>{{% translate "{RECEIPT}" %}}</p>\n{PRE}',
        ),
        (
            "body_text",
            f"{RECEIPT}\n\n{{{{ transcript }}}}",
            f'{{% translate "{RECEIPT}" %}}\n\n{{{{ transcript }}}}',
        ),
    ],
    "chat_follow_up": [
        ("subject", "Re: your message", '{% translate "Re: your message" %}'),
    ],
    "chat_transcript": [
        ("subject", "Your chat transcript", '{% translate "Your chat transcript" %}'),
    ],
}


def _apply(apps, direction):
    CampaignStep = apps.get_model("engagement", "CampaignStep")
    for trigger, changes in CHANGES.items():
        for step in CampaignStep.objects.filter(campaign__trigger=trigger, channel="email"):
            changed = []
            for field, seeded, translatable in changes:
                old, new = (seeded, translatable) if direction == "forward" else (translatable, seeded)
                if getattr(step, field) == old:
                    setattr(step, field, new)
                    changed.append(field)
            if changed:
                step.save(update_fields=changed)


def forward(apps, schema_editor):
    _apply(apps, "forward")


def backward(apps, schema_editor):
    _apply(apps, "backward")


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0017_chat_fallback_language"),
        ("engagement", "0002_transactional_campaigns_and_run_recipient"),
    ]

    operations = [migrations.RunPython(forward, backward)]
