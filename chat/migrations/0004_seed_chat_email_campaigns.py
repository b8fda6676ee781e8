"""Seed data: chat's emails become engagement campaigns, and the unsent ``ChatEmail`` rows move
to engagement's outbox before 0005 drops the table.

One active, transactional email campaign per chat trigger (``chat/emails.py``), with the
subjects and texts chat used to hard-code; merchants edit them in the admin like any other
campaign. Seeding skips a trigger that already has a campaign, so running it again (or after a
merchant made their own) adds nothing.

Unsent rows (pending, or claimed by a worker that may have died) become runs and due messages
of those campaigns, with the occurrence keys chat's services now use, so nothing queued before
the upgrade is lost or sent twice; beat's outbox dispatch sends them. Stop chat's old Celery
workers before migrating.
"""

from django.db import migrations
from django.utils import timezone

PRE = '<pre style="font-family:inherit;white-space:pre-wrap;margin:0">{{ transcript }}</pre>'

CAMPAIGNS = [
    {
        "trigger": "chat_offline_receipt",
        "name": "Chat: offline message receipt",
        "subject": "We got your message",
        "body": "<p>Thanks for your message. We're offline right now and will reply to this "
        "address as soon as we're back.</p>\n" + PRE,
        "body_text": "Thanks for your message. We're offline right now and will reply to this "
        "address as soon as we're back.\n\n{{ transcript }}",
    },
    {
        "trigger": "chat_offline_notice",
        "name": "Chat: offline message notice to the support inbox",
        "subject": "Offline chat message from {{ shopper_email }}",
        "body": PRE + '\n<p>Reply from the agent console: <a href="{{ console_url }}">'
        "{{ console_url }}</a></p>",
        "body_text": "{{ transcript }}\nReply from the agent console: {{ console_url }}",
    },
    {
        "trigger": "chat_follow_up",
        "name": "Chat: agent's reply by email",
        "subject": "Re: your message",
        "body": "<p>{{ reply|linebreaksbr }}</p>\n<p>— {{ agent_name }}</p>",
        "body_text": "{{ reply }}\n\n— {{ agent_name }}",
    },
    {
        "trigger": "chat_transcript",
        "name": "Chat: transcript by email",
        "subject": "Your chat transcript",
        "body": PRE,
        "body_text": "{{ transcript }}",
    },
]

KIND_TRIGGER = {
    "offline_receipt": "chat_offline_receipt",
    "offline_notice": "chat_offline_notice",
    "follow_up": "chat_follow_up",
    "transcript": "chat_transcript",
}


def seed_campaigns(apps, schema_editor):
    Campaign = apps.get_model("engagement", "Campaign")
    CampaignStep = apps.get_model("engagement", "CampaignStep")
    for spec in CAMPAIGNS:
        if Campaign.objects.filter(trigger=spec["trigger"]).exists():
            continue
        campaign = Campaign.objects.create(
            name=spec["name"],
            trigger=spec["trigger"],
            status="active",
            audience="all",
            requires_consent=False,
            transactional=True,
            frequency_cap=None,
            quiet_hours_start=None,
            quiet_hours_end=None,
            control_percent=0,
        )
        CampaignStep.objects.create(
            campaign=campaign,
            position=1,
            channel="email",
            subject=spec["subject"],
            body=spec["body"],
            body_text=spec["body_text"],
        )


def move_unsent_emails(apps, schema_editor):
    ChatEmail = apps.get_model("chat", "ChatEmail")
    Campaign = apps.get_model("engagement", "Campaign")
    Run = apps.get_model("engagement", "Run")
    EngagementMessage = apps.get_model("engagement", "Message")
    Shopper = apps.get_model("commerce", "Shopper")
    now = timezone.now()
    rows = (
        ChatEmail.objects.exclude(state="sent")
        .select_related("conversation", "message")
        .order_by("pk")
    )
    for row in rows:
        campaign = (
            Campaign.objects.filter(trigger=KIND_TRIGGER[row.kind], status="active")
            .order_by("pk")
            .first()
        )
        step = campaign.steps.order_by("position").first() if campaign is not None else None
        if step is None:
            continue
        shopper = Shopper.objects.get(pk=row.conversation.shopper_id)
        seen = set()
        while shopper.merged_into_id and shopper.pk not in seen:
            seen.add(shopper.pk)
            shopper = Shopper.objects.get(pk=shopper.merged_into_id)
        conversation = row.conversation
        data = {"conversation_id": conversation.pk}
        reply_to = ""
        if row.message_id is not None:
            key = f"chat-message:{row.message_id}"
            data["message_id"] = row.message_id
            if row.kind != "follow_up":
                data["upto_seq"] = row.message.seq
        else:
            key = f"chat-transcript:legacy:{row.pk}"
        if row.kind == "offline_notice":
            data["shopper_email"] = conversation.follow_up_email
            reply_to = conversation.follow_up_email
        run, created = Run.objects.get_or_create(
            campaign=campaign,
            shopper=shopper,
            occurrence_key=key,
            defaults={
                "data": data,
                "email_to": row.to.strip().lower(),
                "email_reply_to": reply_to.strip().lower(),
                "state": "active",
                "started_at": now,
                "occurred_at": row.created_at,
            },
        )
        if created:
            EngagementMessage.objects.create(
                campaign=campaign,
                step=step,
                run=run,
                shopper=shopper,
                occurrence_key=key,
                channel="email",
                due_at=now,
            )


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0003_chat_email_outbox"),
        ("commerce", "0001_initial"),
        ("engagement", "0002_transactional_campaigns_and_run_recipient"),
    ]

    operations = [
        migrations.RunPython(seed_campaigns, migrations.RunPython.noop),
        migrations.RunPython(move_unsent_emails, migrations.RunPython.noop),
    ]
