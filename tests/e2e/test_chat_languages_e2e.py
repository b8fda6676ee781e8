"""The shopper chats in Turkish and in Latvian in headless Chromium (#11 point 3).

The browser's locale is the shopper's: the demo shop renders in it (LocaleMiddleware, so
``<html lang>``), the widget sends it in hello and fetches its own labels in it, and the
conversation speaks it: the widget's labels, the greeting, the bot's answer and the system
message all arrive in that language.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from chat.models import BotIntent, ChatSettings, Conversation, KnowledgeArticle
from commerce.models import Product, WriteKey

pytestmark = pytest.mark.e2e

CASES = [
    pytest.param(
        {
            "locale": "tr-TR",
            "language": "tr",
            "article": {
                "slug": "kargo",
                "title": "Kargo ve teslimat",
                "question": "Kargom ne zaman gelir?",
                "body": "Siparişler 2 iş günü içinde kargoya verilir; teslimat 3-5 iş günü sürer.",
                "keywords": ["kargo", "teslimat", "gönderim"],
            },
            "order_question": "siparişim nerede",
            "order_phrases": ["siparişim nerede", "sipariş durumu", "siparişim"],
            "order_answer": "Hemen bakabilirim. Lütfen sipariş numaranızı ve siparişi verdiğiniz "
            'e-posta adresini yazın, ör. "1001 ada@example.com".',
            "shop_heading": "Her gün kullanılan, özenle yapılmış ürünler.",
            "launcher": "Sohbeti aç",
            "title": "Bizimle sohbet edin",
            "greeting": "Merhaba! Bugün size nasıl yardımcı olabiliriz?",
            "composer": "Mesaj",
            "placeholder": "Bir mesaj yazın…",
            "status": "Asistanımız hemen yanıt verir",
            "talk_to_a_person": "Bir temsilciyle görüş",
            # No agent is online: the honest no-agents notice, not a promise of a person.
            "handoff": "Şu anda ekibimizden kimse çevrim içi değil. E-posta adresinizi ve "
            "sorunuzu bırakın, size e-postayla yanıt verelim.",
        },
        id="turkish",
    ),
    pytest.param(
        {
            "locale": "lv-LV",
            "language": "lv",
            "article": {
                "slug": "piegade",
                "title": "Piegāde",
                "question": "Cik ilgi notiek piegāde?",
                "body": "Mēs nosūtām 2 darba dienu laikā; piegāde aizņem 3-5 darba dienas.",
                "keywords": ["piegāde", "piegādes", "sūtījums"],
            },
            "order_question": "kur ir mans pasūtījums",
            "order_phrases": ["kur ir mans pasūtījums", "pasūtījuma statuss", "pasūtījums"],
            "order_answer": "Varu to pārbaudīt. Lūdzu, atsūtiet pasūtījuma numuru un e-pasta "
            'adresi, ar kuru pasūtījāt, piem., "1001 ada@example.com".',
            "shop_heading": "Ikdienas lietas, labi izgatavotas.",
            "launcher": "Atvērt tērzēšanu",
            "title": "Tērzējiet ar mums",
            "greeting": "Sveiki! Kā varam jums šodien palīdzēt?",
            "composer": "Ziņa",
            "placeholder": "Rakstiet ziņu…",
            "status": "Mūsu asistents atbild uzreiz",
            "talk_to_a_person": "Runāt ar cilvēku",
            "handoff": "Pašlaik neviens no mūsu komandas nav tiešsaistē. Atstājiet savu e-pasta "
            "adresi un jautājumu, un mēs atbildēsim pa e-pastu.",
        },
        id="latvian",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_a_shopper_chats_in_their_language(
    case: dict[str, Any],
    live_server_url: str,
    new_context: Any,
    dialogs: list[str],
    csp_violations: list[str],
) -> None:
    from playwright.sync_api import expect

    # Given a shop with a help article in the shopper's language (earlier transactional tests
    # may have flushed what the migrations seed, so the test says what it relies on).
    WriteKey.objects.create(name="demo shop")
    Product.objects.create(sku="MUG-1", title="Blue mug", price=Decimal("9.00"), stock=5)
    ChatSettings.objects.update_or_create(pk=1, defaults={"fallback_language": "en"})
    article = case["article"]
    KnowledgeArticle.objects.update_or_create(
        slug=article["slug"], language=case["language"], defaults={**article, "published": True}
    )
    BotIntent.objects.update_or_create(
        key="order_status",
        language=case["language"],
        defaults={"kind": "order_status", "phrases": case["order_phrases"], "active": True},
    )

    # When a shopper whose browser speaks the language opens the shop and the chat
    page = new_context(locale=case["locale"]).new_page()
    page.goto(f"{live_server_url}/")
    expect(page.locator("html")).to_have_attribute("lang", case["language"])
    expect(page.get_by_role("heading", level=1)).to_have_text(case["shop_heading"])
    page.get_by_role("button", name=case["launcher"]).click()

    # Then the widget's own labels and the greeting are in that language
    expect(page.get_by_test_id("patron-panel")).to_be_visible()
    expect(page.get_by_role("heading", name=case["title"])).to_be_visible()
    expect(page.get_by_test_id("patron-status")).to_have_text(case["status"])
    expect(page.locator(".greeting")).to_contain_text(case["greeting"])
    composer = page.get_by_role("textbox", name=case["composer"], exact=True)
    expect(composer).to_have_attribute("placeholder", case["placeholder"])

    # and the bot answers in it: from the merchant's article in that language
    bot = page.locator('[data-testid="patron-message"][data-author="bot"] .bubble')
    composer.fill(article["title"])
    composer.press("Enter")
    expect(bot).to_have_count(1)
    expect(bot.last).to_contain_text(article["body"])
    # and with its own built-in sentences (an anonymous shopper asking about an order)
    composer.fill(case["order_question"])
    composer.press("Enter")
    expect(bot).to_have_count(2)
    expect(bot.last).to_have_text(case["order_answer"])

    # and asking for a person gets the system message in it
    page.get_by_role("button", name=case["talk_to_a_person"]).click()
    system = page.locator('[data-testid="patron-message"][data-author="system"] .bubble')
    expect(system.first).to_have_text(case["handoff"])
    # and the form asking for an email says the same, in it too (offline.prompt)
    expect(page.get_by_test_id("patron-offline-form")).to_contain_text(case["handoff"])

    conversation = Conversation.objects.get()
    assert conversation.language == case["language"]
    assert conversation.state == Conversation.State.QUEUED
    assert dialogs == []
    assert csp_violations == []


def test_an_agent_uses_the_console_in_their_language_and_switches_it(
    live_server_url: str,
    new_context: Any,
    dialogs: list[str],
    csp_violations: list[str],
) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from playwright.sync_api import expect

    from chat.selectors import AGENT_GROUP_PERMISSIONS
    from tests.support.permissions import permissions

    agents, _ = Group.objects.get_or_create(name="Agents")
    agents.permissions.add(*permissions(*AGENT_GROUP_PERMISSIONS))
    agent = get_user_model().objects.create_user(
        username="ayse", password="a-long-agent-password-42", first_name="Ayşe", is_staff=True
    )
    agent.groups.add(agents)

    # An agent whose browser speaks Turkish logs in and opens the console.
    console = new_context(locale="tr-TR").new_page()
    console.goto(f"{live_server_url}/admin/login/?next=/console/")
    console.locator("#id_username").fill("ayse")
    console.locator("#id_password").fill("a-long-agent-password-42")
    console.locator("input[type=submit]").click()
    expect(console).to_have_url(f"{live_server_url}/console/")

    # The page's words and the script's words (from the JavaScript catalog) are Turkish.
    expect(console.locator("html")).to_have_attribute("lang", "tr")
    expect(console.get_by_test_id("tab-unassigned")).to_contain_text("Atanmamış")
    expect(console.get_by_test_id("connection-status")).to_have_text("Bağlandı")

    # The switch in the top bar turns it to Latvian, and it stays so.
    console.get_by_test_id("language-select").select_option("lv")
    expect(console.locator("html")).to_have_attribute("lang", "lv")
    expect(console.get_by_test_id("tab-unassigned")).to_contain_text("Nepiešķirtās")
    expect(console.get_by_test_id("connection-status")).to_have_text("Savienots")
    console.reload()
    expect(console.get_by_test_id("assign-button")).to_have_text("Piešķirt man")
    assert dialogs == []
    assert csp_violations == []
