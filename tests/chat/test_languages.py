"""A conversation speaks the shopper's language (#11 point 3): the locale the widget sends, else
the identified locale, else the language the shopper writes in; the bot, the system messages,
the widget's labels, the help centre and the chat emails follow it, with the merchant's
fallback where there is nothing in that language."""

from __future__ import annotations

from typing import Any

from django.core import mail
from django.test import Client

from chat import services
from chat.models import ChatSettings, Conversation, KnowledgeArticle, Message
from commerce.models import Shopper, WriteKey
from tests.chat.conftest import make_agent


def _bodies(conversation_id: int, kind: str) -> list[str]:
    return list(
        Message.objects.filter(conversation_id=conversation_id, author_kind=kind)
        .order_by("seq")
        .values_list("body", flat=True)
    )


def test_the_widgets_locale_makes_the_system_messages_turkish(shopper: Shopper) -> None:
    make_agent("anna")
    post = services.shopper_message_post(
        shopper=shopper, body="human", client_id="c1", language="tr-TR"
    )

    conversation = Conversation.objects.get(pk=post.conversation_id)
    assert conversation.language == "tr"
    assert conversation.state == Conversation.State.ASSIGNED
    services.conversation_resolve(conversation_id=conversation.pk)
    assert _bodies(conversation.pk, "system") == [
        "Sizi ekibimizden birine aktarıyorum.",
        "Anna sohbete katıldı.",
        "Bu sohbet çözüldü olarak kapatıldı.",
    ]


def test_without_a_locale_the_conversation_speaks_the_language_written_in(
    shopper: Shopper,
) -> None:
    post = services.shopper_message_post(
        shopper=shopper, body="Kur ir mans pasūtījums?", client_id="c1"
    )

    conversation = Conversation.objects.get(pk=post.conversation_id)
    assert conversation.language == "lv"
    # Anonymous shopper: the bot's built-in question for the order number, in Latvian.
    assert _bodies(conversation.pk, "bot") == [
        "Varu to pārbaudīt. Lūdzu, atsūtiet pasūtījuma numuru un e-pasta adresi, ar kuru "
        'pasūtījāt, piem., "1001 ada@example.com".'
    ]
    # Later English words do not change it back.
    handed_off = services.shopper_message_post(
        shopper=shopper, body="human", client_id="c2", conversation_id=conversation.pk
    )
    conversation.refresh_from_db()
    assert conversation.language == "lv"
    # No agent is online: the honest no-agents notice, in Latvian too, in the thread and in the
    # widget's offline.prompt.
    no_agents = (
        "Pašlaik neviens no mūsu komandas nav tiešsaistē. Atstājiet savu e-pasta adresi un "
        "jautājumu, un mēs atbildēsim pa e-pastu."
    )
    assert _bodies(conversation.pk, "system") == [no_agents]
    assert handed_off.offline_prompt is not None
    assert handed_off.offline_prompt["message"] == no_agents
    assert handed_off.offline_prompt["reason"] == "no_agents"


def test_the_identified_locale_counts_when_the_widget_sends_none(db: Any) -> None:
    shopper = Shopper.objects.create(first_name="Līga", locale="lv_LV")

    conversation = services.conversation_start(shopper=shopper, language="")

    assert conversation.language == "lv"


def test_a_locale_patron_does_not_ship_is_not_kept(shopper: Shopper) -> None:
    conversation = services.conversation_start(shopper=shopper, language="de-DE")

    assert conversation.language == ""


def test_the_bot_answers_in_the_merchants_fallback_when_it_has_nothing_in_the_language(
    shopper: Shopper, chat_settings: ChatSettings
) -> None:
    # The Latvian shipping article is withdrawn; the merchant's fallback is Turkish.
    KnowledgeArticle.objects.filter(slug="piegade", language="lv").update(published=False)
    ChatSettings.objects.filter(pk=1).update(fallback_language="tr")
    services.chat_settings_invalidate()
    conversation = services.conversation_start(shopper=shopper, language="lv")

    services.shopper_message_post(
        shopper=shopper,
        body="Cik ilgi notiek piegāde?",
        client_id="c1",
        conversation_id=conversation.pk,
    )

    assert _bodies(conversation.pk, "bot") == [
        "Siparişler 2 iş günü içinde kargoya verilir; teslimat 3-5 iş günü sürer."
    ]


def test_a_merchants_own_sentence_is_said_as_written_and_built_in_ones_translated(
    shopper: Shopper, chat_settings: ChatSettings
) -> None:
    make_agent("anna")  # the hand-off message is said when an agent is online to take it
    ChatSettings.objects.filter(pk=1).update(handoff_message="Bir saniye, lütfen.")
    services.chat_settings_invalidate()
    post = services.shopper_message_post(
        shopper=shopper, body="human", client_id="c1", language="lv"
    )
    services.conversation_resolve(conversation_id=post.conversation_id)

    assert _bodies(post.conversation_id, "system") == [
        "Bir saniye, lütfen.",
        "Anna pievienojās sarunai.",
        "Šī saruna ir atrisināta un slēgta.",
    ]


def test_widget_config_gives_the_widgets_labels_and_greeting_in_the_pages_language(
    write_key: WriteKey,
) -> None:
    client = Client()

    turkish = client.get(
        "/api/chat/widget-config/", {"write_key": write_key.key, "locale": "tr-TR"}
    ).json()
    latvian = client.get(
        "/api/chat/widget-config/", {"write_key": write_key.key, "locale": "lv"}
    ).json()
    other = client.get(
        "/api/chat/widget-config/", {"write_key": write_key.key, "locale": "de-DE"}
    ).json()

    assert turkish["language"] == "tr"
    assert turkish["greeting"] == "Merhaba! Bugün size nasıl yardımcı olabiliriz?"
    assert turkish["strings"]["Talk to a person"] == "Bir temsilciyle görüş"
    assert latvian["language"] == "lv"
    assert latvian["greeting"] == "Sveiki! Kā varam jums šodien palīdzēt?"
    assert latvian["strings"]["Write a message…"] == "Rakstiet ziņu…"
    assert other["language"] == "en"
    assert other["greeting"] == "Hi! How can we help you today?"
    assert other["strings"] == {}


def test_the_help_centre_shows_the_readers_language_then_the_fallback(
    chat_settings: ChatSettings,
) -> None:
    client = Client()

    turkish = client.get("/help/", headers={"accept-language": "tr"}).content.decode()
    latvian_article = client.get(
        "/help/piegade/", headers={"accept-language": "lv"}
    ).content.decode()
    assert "Yardım merkezi" in turkish
    assert "Kargo ve teslimat" in turkish
    assert "Shipping and delivery" not in turkish
    assert "Palīdzības centrs" in latvian_article

    # No Latvian articles: the merchant's fallback language (Turkish here) is shown.
    KnowledgeArticle.objects.filter(language="lv").update(published=False)
    ChatSettings.objects.filter(pk=1).update(fallback_language="tr")
    services.chat_settings_invalidate()
    fallback = client.get("/help/", headers={"accept-language": "lv"}).content.decode()
    assert "Palīdzības centrs" in fallback
    assert "Kargo ve teslimat" in fallback
    assert "Shipping and delivery" not in fallback


def test_the_offline_receipt_speaks_the_conversations_language(
    shopper: Shopper, django_capture_on_commit_callbacks: Any
) -> None:
    from django.utils import timezone

    from chat.models import BusinessHours

    # Open only tomorrow: closed now.
    tomorrow = (timezone.now().weekday() + 1) % 7
    BusinessHours.objects.create(weekday=tomorrow, opens="00:00", closes="23:59")
    post = services.shopper_message_post(
        shopper=shopper, body="human", client_id="c1", language="lv-LV"
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.offline_message_leave(
            shopper=shopper,
            conversation_id=post.conversation_id,
            email="liga@example.com",
            body="Lūdzu, piezvaniet man.",
            client_id="c2",
        )

    receipt = next(m for m in mail.outbox if m.to == ["liga@example.com"])
    assert receipt.subject == "Jūsu ziņa ir saņemta"
    assert receipt.body.startswith(
        "Paldies par jūsu ziņu! Šobrīd neesam tiešsaistē un atbildēsim uz šo adresi, tiklīdz "
        "atgriezīsimies."
    )
    assert "Jūs: Lūdzu, piezvaniet man." in receipt.body


def test_the_transcript_email_speaks_the_conversations_language(
    shopper: Shopper, django_capture_on_commit_callbacks: Any
) -> None:
    post = services.shopper_message_post(
        shopper=shopper, body="merhaba", client_id="c1", language="tr"
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.transcript_send(conversation_id=post.conversation_id, email="ada@example.com")

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == "Sohbet dökümünüz"
    assert "Siz: merhaba" in mail.outbox[0].body
    assert f"Sohbet {post.conversation_id} — " in mail.outbox[0].body


def test_the_console_follows_the_agents_language_and_its_switch() -> None:
    anna = make_agent("anna")
    client = Client()
    client.force_login(anna)

    by_browser = client.get("/console/", headers={"accept-language": "lv"}).content.decode()
    switched = client.post("/i18n/setlang/", {"language": "tr", "next": "/console/"})
    by_switch = client.get("/console/", headers={"accept-language": "lv"}).content.decode()
    catalog = client.get("/jsi18n/").content.decode()

    assert '<html lang="lv">' in by_browser
    assert "Nepiešķirtās" in by_browser  # "Unassigned"
    assert switched.status_code == 302
    assert switched["Location"] == "/console/"
    assert '<html lang="tr">' in by_switch
    assert "Atanmamış" in by_switch
    assert "Bana ata" in by_switch  # "Assign to me"
    # The console script's own strings, in the switched language.
    assert '"Add note": "Not ekle"' in catalog
