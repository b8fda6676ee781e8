"""The seeded English shipping and returns articles agree with the demo shop (#11 point 4):

- shipping quotes the store's own free-shipping threshold with its currency
  (``{free_shipping_threshold}``, filled from *Store settings*: "£40"), not a bare "50";
- returns no longer sends shoppers to an account page the shop does not have.

Only articles still holding the seeded text change: a merchant's own wording stays.
"""

from django.db import migrations

SHIPPING_BEFORE = (
    "We ship within 2 working days. Standard delivery takes 3-5 working days and is "
    "free on orders over 50; express delivery takes 1-2 working days."
)
SHIPPING_AFTER = (
    "We ship within 2 working days. Standard delivery takes 3-5 working days and is "
    "free on orders over {free_shipping_threshold}; express delivery takes 1-2 working days."
)
RETURNS_BEFORE = (
    "You can return unused items within 30 days. Start a return from your account "
    "or reply here with your order number; refunds reach your card within 5 days of us "
    "receiving the parcel."
)
RETURNS_AFTER = (
    "You can return unused items within 30 days. To start a return, reply here with your "
    "order number and the email address you ordered with; refunds reach your card within "
    "5 days of us receiving the parcel."
)
CHANGES = [
    ("shipping", SHIPPING_BEFORE, SHIPPING_AFTER),
    ("returns", RETURNS_BEFORE, RETURNS_AFTER),
]


def forwards(apps, schema_editor):
    Article = apps.get_model("chat", "KnowledgeArticle")
    for slug, before, after in CHANGES:
        Article.objects.filter(slug=slug, language="en", body=before).update(body=after)


def backwards(apps, schema_editor):
    Article = apps.get_model("chat", "KnowledgeArticle")
    for slug, before, after in CHANGES:
        Article.objects.filter(slug=slug, language="en", body=after).update(body=before)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0019_language_choices_for_articles_and_intents"),
        ("commerce", "0008_storesettings_currency_free_shipping_threshold"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
