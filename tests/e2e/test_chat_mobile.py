"""On a phone (375 x 700, Playwright in headless Chromium against a real server): the agent
console is usable (open a conversation, reply, go back to the inbox) and the help pages read
like the shop, with the chat bubble (#11 point 4)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.utils import timezone

from chat.models import Conversation, KnowledgeArticle, Message
from commerce.models import Shopper
from tests.e2e.test_chat_e2e import AGENT_PASSWORD, _given_a_shop_with_an_agent

pytestmark = pytest.mark.e2e

PHONE = {"width": 375, "height": 700}


def _no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width


def test_the_console_on_a_phone_opens_a_conversation_and_replies(
    live_server_url: str, new_context: Any, dialogs: list[str], csp_violations: list[str]
) -> None:
    from playwright.sync_api import expect

    agent = _given_a_shop_with_an_agent()["agent"]
    now = timezone.now()
    conversation = Conversation.objects.create(
        shopper=Shopper.objects.create(first_name="Ada"),
        state=Conversation.State.ASSIGNED,
        assigned_agent=agent,
        assigned_at=now,
        last_seq=1,
    )
    Message.objects.create(
        conversation=conversation, seq=1, author_kind="shopper", body="Is the blue mug in stock?"
    )

    console = new_context(viewport=PHONE).new_page()
    console.goto(f"{live_server_url}/admin/login/?next=/console/")
    console.get_by_label("Username").fill("anna")
    console.get_by_label("Password").fill(AGENT_PASSWORD)
    console.get_by_role("button", name="Log in").click()
    expect(console.get_by_test_id("connection-status")).to_have_text("Connected")
    expect(console.get_by_role("tab", name=re.compile(r"^Mine"))).to_have_attribute(
        "aria-selected", "true"
    )
    _no_sideways_scroll(console)

    # The inbox fills the screen; a tap opens the conversation full width.
    item = console.get_by_test_id("inbox-item")
    expect(item).to_be_visible()
    item.click()
    expect(console.get_by_test_id("inbox-list")).to_be_hidden()
    expect(console.get_by_test_id("console-messages")).to_contain_text("Is the blue mug in stock?")
    reply = console.get_by_test_id("composer-input")
    expect(reply).to_be_visible()
    reply.fill("Yes, five left.")
    console.get_by_test_id("send-button").click()
    expect(console.locator('[data-testid="console-message"][data-author="agent"]')).to_contain_text(
        "Yes, five left."
    )
    _no_sideways_scroll(console)
    box = console.get_by_test_id("send-button").bounding_box()
    assert box is not None
    assert box["x"] + box["width"] <= PHONE["width"]

    # Back to the inbox.
    console.get_by_test_id("back-button").click()
    expect(console.get_by_test_id("inbox-list")).to_be_visible()
    expect(console.get_by_test_id("console-messages")).to_be_hidden()

    assert list(
        Message.objects.filter(conversation=conversation, author_kind="agent").values_list(
            "body", flat=True
        )
    ) == ["Yes, five left."]
    assert dialogs == []
    assert csp_violations == []


def test_a_help_page_on_a_phone_reads_like_the_shop_with_the_chat_bubble(
    live_server_url: str, new_context: Any, dialogs: list[str], csp_violations: list[str]
) -> None:
    from playwright.sync_api import expect

    _given_a_shop_with_an_agent()
    KnowledgeArticle.objects.update_or_create(
        slug="returns",
        language="en",
        defaults={
            "title": "Returns and refunds",
            "question": "How do I return an item?",
            "body": "You can return unused items within 30 days.\n\nReply in the chat.",
        },
    )

    page = new_context(viewport=PHONE).new_page()
    page.goto(f"{live_server_url}/help/returns/")

    expect(page.get_by_role("heading", level=1)).to_have_text("Returns and refunds")
    expect(page.get_by_role("link", name="Northwind Goods")).to_be_visible()
    expect(page.get_by_role("button", name="Open chat")).to_be_visible()
    _no_sideways_scroll(page)
    paragraph = page.locator("article p").first
    font_px = float(paragraph.evaluate("node => getComputedStyle(node).fontSize").rstrip("px"))
    assert font_px >= 16  # readable without zooming
    # The page is laid out for the phone (viewport meta), not a shrunk desktop page.
    assert page.evaluate("() => window.innerWidth") == PHONE["width"]
    assert dialogs == []
    assert csp_violations == []


def test_the_console_labels_filters_and_snoozes_a_conversation(
    live_server_url: str, new_context: Any, dialogs: list[str], csp_violations: list[str]
) -> None:
    from playwright.sync_api import expect

    agent = _given_a_shop_with_an_agent()["agent"]
    conversation = Conversation.objects.create(
        shopper=Shopper.objects.create(first_name="Ada"),
        state=Conversation.State.ASSIGNED,
        assigned_agent=agent,
        assigned_at=timezone.now(),
        last_seq=1,
    )
    Message.objects.create(conversation=conversation, seq=1, author_kind="shopper", body="Hi")

    console = new_context().new_page()
    console.goto(f"{live_server_url}/admin/login/?next=/console/")
    console.get_by_label("Username").fill("anna")
    console.get_by_label("Password").fill(AGENT_PASSWORD)
    console.get_by_role("button", name="Log in").click()
    item = console.get_by_test_id("inbox-item")
    expect(item).to_have_count(1)
    item.click()

    # A label: on the conversation and in the inbox; the label filter keeps only its own.
    console.get_by_test_id("label-input").fill("VIP")
    console.get_by_test_id("label-input").press("Enter")
    expect(console.get_by_test_id("label-pill")).to_contain_text(["vip"])
    expect(console.get_by_role("button", name="Remove label vip")).to_be_visible()
    expect(console.get_by_test_id("inbox-label-pill")).to_have_text(["vip"])
    console.get_by_test_id("inbox-label").fill("billing")
    expect(item).to_have_count(0)
    console.get_by_test_id("inbox-label").fill("vip")
    expect(item).to_have_count(1)
    console.get_by_test_id("inbox-label").fill("")

    # Snoozed until the shopper writes: out of "Mine", into "Snoozed".
    console.get_by_test_id("snooze-select").select_option("reply")
    expect(item).to_have_count(0)
    expect(console.get_by_test_id("tab-snoozed")).to_contain_text("1")
    console.get_by_test_id("tab-snoozed").click()
    expect(item).to_have_count(1)
    console.get_by_test_id("unsnooze-button").click()
    expect(item).to_have_count(0)
    console.get_by_test_id("tab-mine").click()
    expect(item).to_have_count(1)

    conversation.refresh_from_db()
    assert (conversation.labels, conversation.snoozed_at) == (["vip"], None)
    assert dialogs == []
    assert csp_violations == []
