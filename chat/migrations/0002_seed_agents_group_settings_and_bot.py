"""Seed data: the Agents group with the agent permission, the chat settings row with hand-off
phrases in the store's languages, starter knowledge-base articles and bot intents. Merchants
edit all of it in the admin."""

import secrets

from django.db import migrations

from core.permission_migrations import group_delete, group_permissions_add

HANDOFF_PHRASES = [
    # English
    "human", "agent", "operator", "person", "real person", "talk to someone", "live agent",
    "customer service", "representative",
    # Latvian
    "cilvēks", "cilvēku", "operators", "operatoru", "konsultants", "konsultantu",
    # Turkish
    "insan", "temsilci", "canlı destek", "müşteri temsilcisi", "yetkili",
]

ARTICLES = [
    {
        "slug": "shipping",
        "language": "en",
        "title": "Shipping and delivery",
        "question": "How long does delivery take and what does it cost?",
        "body": "We ship within 2 working days. Standard delivery takes 3-5 working days and is "
        "free on orders over 50; express delivery takes 1-2 working days.",
        "keywords": ["shipping", "delivery", "deliver", "ship", "how long", "courier", "postage"],
    },
    {
        "slug": "returns",
        "language": "en",
        "title": "Returns and refunds",
        "question": "How do I return an item?",
        "body": "You can return unused items within 30 days. Start a return from your account "
        "or reply here with your order number; refunds reach your card within 5 days of us "
        "receiving the parcel.",
        "keywords": ["return", "returns", "refund", "send back", "exchange", "money back"],
    },
    {
        "slug": "piegade",
        "language": "lv",
        "title": "Piegāde",
        "question": "Cik ilgi notiek piegāde?",
        "body": "Mēs nosūtām 2 darba dienu laikā; piegāde aizņem 3-5 darba dienas.",
        "keywords": ["piegāde", "piegādes", "sūtījums", "nosūtīšana"],
    },
    {
        "slug": "kargo",
        "language": "tr",
        "title": "Kargo ve teslimat",
        "question": "Kargom ne zaman gelir?",
        "body": "Siparişler 2 iş günü içinde kargoya verilir; teslimat 3-5 iş günü sürer.",
        "keywords": ["kargo", "teslimat", "gönderim"],
    },
    {
        "slug": "iade",
        "language": "tr",
        "title": "İade ve değişim",
        "question": "Ürünü nasıl iade ederim?",
        "body": "Kullanılmamış ürünleri 30 gün içinde iade edebilirsiniz.",
        "keywords": ["iade", "değişim", "geri ödeme"],
    },
]

INTENTS = [
    {
        "key": "order_status",
        "language": "en",
        "kind": "order_status",
        "phrases": ["where is my order", "order status", "track my order", "my order", "parcel"],
        "answer": "Here's what I found:\n{orders}",
    },
    {
        "key": "order_status",
        "language": "lv",
        "kind": "order_status",
        "phrases": ["kur ir mans pasūtījums", "pasūtījuma statuss", "pasūtījums"],
        "answer": "Lūk, ko atradu:\n{orders}",
    },
    {
        "key": "order_status",
        "language": "tr",
        "kind": "order_status",
        "phrases": ["siparişim nerede", "sipariş durumu", "siparişim", "sipariş takibi"],
        "answer": "Bulduğum bilgiler:\n{orders}",
    },
    {
        "key": "points_balance",
        "language": "en",
        "kind": "registered",
        "phrases": ["points balance", "how many points", "my points", "loyalty points"],
        "answer": "",
    },
    {
        "key": "recommendations",
        "language": "en",
        "kind": "registered",
        "phrases": ["recommend", "recommendation", "suggest something", "what should i buy", "gift ideas"],
        "answer": "",
    },
    {
        "key": "greeting",
        "language": "en",
        "kind": "answer",
        "phrases": ["hello", "hi there", "good morning", "hey"],
        "answer": "Hello{name_sep}! Ask me about your order, delivery or returns, or say \"agent\" to talk to a person.",
    },
]


def seed(apps, schema_editor):
    group_permissions_add(apps, group="Agents", permissions=[("chat", "answer_conversations")])

    ChatSettings = apps.get_model("chat", "ChatSettings")
    ChatSettings.objects.get_or_create(
        pk=1,
        defaults={
            "languages": ["en", "lv", "tr"],
            "handoff_phrases": HANDOFF_PHRASES,
            "identity_secret": secrets.token_hex(32),
        },
    )

    Article = apps.get_model("chat", "KnowledgeArticle")
    for data in ARTICLES:
        Article.objects.get_or_create(slug=data["slug"], language=data["language"], defaults=data)

    BotIntent = apps.get_model("chat", "BotIntent")
    for data in INTENTS:
        data = dict(data)
        data["answer"] = data["answer"].replace("{name_sep}", "")
        BotIntent.objects.get_or_create(key=data["key"], language=data["language"], defaults=data)

    CannedResponse = apps.get_model("chat", "CannedResponse")
    CannedResponse.objects.get_or_create(
        shortcut="hello",
        defaults={"title": "Greeting", "body": "Hi, thanks for waiting! Let me look into this for you."},
    )
    CannedResponse.objects.get_or_create(
        shortcut="bye",
        defaults={"title": "Closing", "body": "Is there anything else I can help with?"},
    )


def unseed(apps, schema_editor):
    group_delete(apps, group="Agents")


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0001_conversations_messages_bot_kb"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(seed, unseed)]
