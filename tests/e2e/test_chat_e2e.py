"""Live chat end to end in headless Chromium: a shopper on the demo shop, an agent in the console.

One story, two browser contexts (separate cookies and storage), one real uvicorn server:
the shopper chats with the bot, asks for a person, the agent answers from the console, and
markup typed on either side stays text on both.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from chat.models import (
    BusinessHours,
    CannedResponse,
    Conversation,
    CsatRating,
    KnowledgeArticle,
    Message,
)
from chat.selectors import AGENT_GROUP_PERMISSIONS
from commerce.models import Order, Product, WriteKey
from tests.support.permissions import permissions
from tests.support.processes import asgi_server, child_env, free_port

pytestmark = pytest.mark.e2e

HOSTILE = "<script>alert(1)</script><b>x</b>"
SHIPPING_ANSWER = "We ship within 2 working days from our warehouse in Riga."
AGENT_PASSWORD = "a-long-agent-password-42"


def _given_a_shop_with_an_agent() -> dict[str, Any]:
    key = WriteKey.objects.create(name="demo shop")
    Product.objects.create(sku="MUG-1", title="Blue mug", price=Decimal("9.00"), stock=5)
    # The chat migrations seed a shipping article and the Agents group; earlier transactional
    # tests may have flushed them. Either way the test states what it relies on.
    KnowledgeArticle.objects.update_or_create(
        slug="shipping",
        language="en",
        defaults={
            "title": "Shipping times",
            "body": SHIPPING_ANSWER,
            "keywords": ["shipping", "delivery", "ship"],
        },
    )
    CannedResponse.objects.create(
        shortcut="thanks", title="Thanks for waiting", body="Thanks for waiting, I'm on it."
    )
    agents, _ = Group.objects.get_or_create(name="Agents")
    agents.permissions.add(*permissions(*AGENT_GROUP_PERMISSIONS))  # as chat 0009 gives it
    agent = get_user_model().objects.create_user(
        username="anna",
        password=AGENT_PASSWORD,
        first_name="Anna",
        last_name="Berzina",
        is_staff=True,
    )
    agent.groups.add(agents)
    return {"key": key, "agent": agent}


def _widget(page: Any) -> Any:
    return page.get_by_test_id("patron-panel")


def _shopper_messages(page: Any, author: str) -> Any:
    return page.locator(f'[data-testid="patron-message"][data-author="{author}"] .bubble')


NOBODY_ONLINE = (
    "No one from our team is online right now. Leave your email below and we'll reply by email."
)


def _assert_newest_message_in_view(page: Any) -> None:
    """The newest message is inside the visible part of the widget's message log (the queue
    banner and the offline form take room from it)."""
    log = page.get_by_test_id("patron-messages")
    newest = log.locator("li").last
    log_box, newest_box = log.bounding_box(), newest.bounding_box()
    assert log_box is not None
    assert newest_box is not None
    assert newest_box["y"] + newest_box["height"] <= log_box["y"] + log_box["height"] + 1, (
        log_box,
        newest_box,
    )


def _agent_messages(page: Any, author: str) -> Any:
    return page.locator(f'[data-testid="console-message"][data-author="{author}"] .message__body')


def test_shopper_hands_off_to_an_agent_who_answers_and_markup_stays_text(
    live_server_url: str, new_context: Any, dialogs: list[str], csp_violations: list[str]
) -> None:
    from playwright.sync_api import expect

    given = _given_a_shop_with_an_agent()
    agent = given["agent"]

    # -- The shopper opens a product page of the demo shop and the widget. --------------------
    shopper = new_context().new_page()
    shopper.goto(f"{live_server_url}/products/MUG-1/")
    expect(shopper).to_have_title("Blue mug · Patron Demo Shop")
    shopper.get_by_role("button", name="Open chat").click()
    widget = _widget(shopper)
    expect(widget).to_be_visible()
    composer = shopper.get_by_role("textbox", name="Message", exact=True)

    # -- The bot answers first. --------------------------------------------------------------
    composer.fill("How long does shipping take?")
    composer.press("Enter")
    expect(_shopper_messages(shopper, "shopper")).to_have_text(["How long does shipping take?"])
    expect(_shopper_messages(shopper, "bot").last).to_contain_text(SHIPPING_ANSWER)
    expect(shopper.get_by_test_id("patron-status")).to_have_text("Our assistant answers right away")

    # -- The shopper asks for a person; nobody is online yet: the widget says so honestly, ---
    # -- offers to take an email, and keeps them in the queue in case someone comes. ---------
    shopper.get_by_role("button", name="Talk to a person").click()
    queue = shopper.get_by_test_id("patron-queue")
    expect(queue).to_have_text(NOBODY_ONLINE)
    expect(shopper.get_by_test_id("patron-status")).to_have_text("No one is online right now")
    expect(shopper.get_by_test_id("patron-offline-form")).to_be_visible()
    assert "shortly" not in (shopper.get_by_test_id("patron-panel").text_content() or "")
    _assert_newest_message_in_view(shopper)
    conversation = Conversation.objects.get()
    assert conversation.state == Conversation.State.QUEUED

    # -- A reload while queued: the banner is back. ------------------------------------------
    shopper.reload()
    expect(queue).to_have_text(NOBODY_ONLINE)
    expect(_shopper_messages(shopper, "shopper")).to_have_text(["How long does shipping take?"])
    _assert_newest_message_in_view(shopper)

    # An order of the shopper's from two years ago, partly refunded: the console must say so.
    placed = timezone.now() - dt.timedelta(days=800)
    Order.objects.create(
        number="1001",
        shopper_id=conversation.shopper_id,
        status=Order.Status.PARTIALLY_REFUNDED,
        total=Decimal("40.00"),
        placed_at=placed,
    )

    # -- The agent logs in through the admin and opens the console: online, routed to them. ---
    console = new_context().new_page()
    console.goto(f"{live_server_url}/admin/login/?next=/console/")
    console.get_by_label("Username").fill("anna")
    console.get_by_label("Password").fill(AGENT_PASSWORD)
    console.get_by_role("button", name="Log in").click()
    expect(console).to_have_url(f"{live_server_url}/console/")
    expect(console.get_by_test_id("connection-status")).to_have_text("Connected")
    expect(console.get_by_test_id("presence-select")).to_have_value("online")

    # The hand-off was routed to Anna as she came online: the console opens on "Mine".
    expect(console.get_by_role("tab", name=re.compile(r"^Mine"))).to_have_attribute(
        "aria-selected", "true"
    )
    item = console.get_by_test_id("inbox-item")
    expect(item).to_have_count(1)
    expect(console.get_by_role("tab", name=re.compile(r"^Mine"))).to_contain_text("1")
    item.click()
    expect(_agent_messages(console, "shopper")).to_have_text(["How long does shipping take?"])
    expect(_agent_messages(console, "bot").last).to_contain_text(SHIPPING_ANSWER)
    expect(console.get_by_test_id("thread-title")).to_have_text(re.compile(r"^Visitor #\d+$"))
    expect(console.get_by_test_id("context-current_page")).to_contain_text(
        "Blue mug · Patron Demo Shop"
    )
    orders = console.get_by_test_id("context-recent_orders")
    expect(orders).to_contain_text("Partially refunded")
    expect(orders).to_contain_text(str(placed.year))
    assert "partially_refunded" not in (orders.text_content() or "")
    expect(shopper.get_by_test_id("patron-status")).to_have_text(
        "You're chatting with Anna Berzina"
    )
    expect(shopper.get_by_test_id("patron-offline-form")).to_be_hidden()
    conversation.refresh_from_db()
    assert conversation.state == Conversation.State.ASSIGNED
    assert conversation.assigned_agent_id == agent.pk

    # -- The agent types (the shopper sees it) and answers with a canned response. ------------
    reply = console.get_by_test_id("composer-input")
    reply.fill("Let me look")
    reply.press("Space")
    expect(shopper.get_by_test_id("patron-typing")).to_have_text("Anna Berzina is typing…")
    reply.fill("/than")
    expect(console.get_by_test_id("canned-option")).to_have_count(1)
    reply.press("Enter")
    expect(reply).to_have_value("Thanks for waiting, I'm on it.")
    reply.press("Enter")
    expect(_shopper_messages(shopper, "agent")).to_have_text(["Thanks for waiting, I'm on it."])
    expect(shopper.get_by_test_id("patron-typing")).to_be_hidden()

    # -- A private note stays with the agents. -----------------------------------------------
    console.get_by_test_id("note-toggle").click()
    reply.fill("VIP: ships abroad often")
    reply.press("Enter")
    expect(console.locator(".message--note")).to_have_text(re.compile("VIP: ships abroad often"))
    console.get_by_test_id("mode-reply").click()

    # -- Markup typed on either side arrives as text. ----------------------------------------
    composer.fill(HOSTILE)
    composer.press("Enter")
    expect(_agent_messages(console, "shopper").last).to_have_text(HOSTILE)
    reply.fill(HOSTILE)
    reply.press("Enter")
    expect(_shopper_messages(shopper, "agent").last).to_have_text(HOSTILE)
    expect(_agent_messages(console, "agent").last).to_have_text(HOSTILE)
    expect(_shopper_messages(shopper, "shopper").last).to_have_text(HOSTILE)
    for page in (shopper, console):
        assert page.locator("b").count() == 0  # CSS locators pierce the widget's shadow root
        assert page.locator("[data-testid$='messages'] script").count() == 0
    assert dialogs == []
    assert csp_violations == []
    assert shopper.evaluate("typeof window.PatronChat") == "object"

    # -- The shopper moves to another page: the widget resumes, the agent sees the new page. --
    shopper.goto(f"{live_server_url}/")
    expect(console.get_by_test_id("context-current_page")).to_contain_text(
        "Patron Demo Shop", timeout=10_000
    )
    expect(console.get_by_test_id("context-current_page")).not_to_contain_text("Blue mug")
    expect(_widget(shopper)).to_be_visible()  # the panel stays open across page loads
    expect(_shopper_messages(shopper, "agent")).to_have_text(
        ["Thanks for waiting, I'm on it.", HOSTILE]
    )
    expect(_shopper_messages(shopper, "shopper")).to_have_text(
        ["How long does shipping take?", HOSTILE]
    )
    assert shopper.locator("[data-testid='patron-messages'] b").count() == 0

    shopper.screenshot(path="/tmp/patron-widget.png")
    console.screenshot(path="/tmp/patron-console.png")

    # -- The agent resolves; the shopper rates the conversation. -----------------------------
    console.get_by_test_id("resolve-button").click()
    csat = shopper.get_by_test_id("patron-csat")
    expect(csat).to_be_visible()
    csat.get_by_role("button", name="Rate 5 out of 5").click()
    csat.get_by_role("button", name="Send rating").click()
    expect(csat).to_be_hidden()
    expect(console.get_by_test_id("console-messages")).to_contain_text(
        "The shopper rated this conversation 5/5."
    )

    # -- What was stored: every message once, the note never visible to the shopper. ---------
    conversation.refresh_from_db()
    assert conversation.state == Conversation.State.RESOLVED
    assert CsatRating.objects.get(conversation=conversation).rating == 5
    stored = list(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("author_kind", "body", "internal")
    )
    people = [row for row in stored if row[0] in ("shopper", "agent")]
    assert people == [
        ("shopper", "How long does shipping take?", False),
        ("agent", "Thanks for waiting, I'm on it.", False),
        ("agent", "VIP: ships abroad often", True),
        ("shopper", HOSTILE, False),
        ("agent", HOSTILE, False),
    ]
    seqs = list(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert seqs == list(range(1, len(stored) + 1))  # no gaps, no duplicates
    assert "VIP: ships abroad often" not in (
        shopper.get_by_test_id("patron-messages").text_content() or ""
    )
    assert dialogs == []
    assert csp_violations == []


def test_the_widget_survives_a_server_restart_and_sends_what_was_typed_while_offline(
    transactional_db: None, new_context: Any, dialogs: list[str], csp_violations: list[str]
) -> None:
    from playwright.sync_api import expect

    _given_a_shop_with_an_agent()
    port = free_port()
    env = child_env()
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    shopper = new_context().new_page()
    composer = shopper.get_by_role("textbox", name="Message", exact=True)

    with asgi_server(port=port, env=env) as url:
        shopper.goto(f"{url}/")
        shopper.get_by_role("button", name="Open chat").click()
        composer.fill("How long does shipping take?")
        composer.press("Enter")
        expect(_shopper_messages(shopper, "bot")).to_have_count(1)
        expect(_shopper_messages(shopper, "bot")).to_contain_text([SHIPPING_ANSWER])

    # The server is gone: the widget says so and keeps what the shopper types.
    expect(shopper.get_by_test_id("patron-connection")).to_contain_text("Reconnecting")
    composer.fill("Do you ship to Tallinn?")
    composer.press("Enter")
    expect(shopper.locator(".message--pending .bubble")).to_have_text(["Do you ship to Tallinn?"])

    with asgi_server(port=port, env=env):
        # Back with backoff; the unacknowledged message is sent once, the bot answers it.
        expect(shopper.locator(".message--pending")).to_have_count(0, timeout=20_000)
        expect(shopper.get_by_test_id("patron-connection")).to_be_hidden()
        expect(_shopper_messages(shopper, "shopper")).to_have_text(
            ["How long does shipping take?", "Do you ship to Tallinn?"]
        )
        expect(_shopper_messages(shopper, "bot")).to_have_count(2)
        seqs = shopper.locator("[data-testid='patron-message'][data-seq]").evaluate_all(
            "nodes => nodes.map(n => Number(n.dataset.seq))"
        )

    stored = list(Message.objects.order_by("seq").values_list("seq", "author_kind", "body"))
    assert [row[2] for row in stored if row[1] == "shopper"] == [
        "How long does shipping take?",
        "Do you ship to Tallinn?",
    ]
    assert seqs == [row[0] for row in stored]  # every stored message shown once, in order
    assert Conversation.objects.count() == 1
    assert dialogs == []
    assert csp_violations == []


def test_outside_business_hours_the_widget_takes_an_email_instead_of_queueing(
    live_server_url: str, new_context: Any, dialogs: list[str], csp_violations: list[str]
) -> None:
    from playwright.sync_api import expect

    _given_a_shop_with_an_agent()
    # Open one minute a week, tomorrow: closed now.
    tomorrow = (dt.datetime.now(dt.UTC).weekday() + 1) % 7
    BusinessHours.objects.create(weekday=tomorrow, opens=dt.time(0, 0), closes=dt.time(0, 1))
    shopper = new_context().new_page()
    shopper.goto(f"{live_server_url}/products/MUG-1/")
    shopper.get_by_role("button", name="Open chat").click()
    expect(shopper.get_by_test_id("patron-status")).to_have_text("We're offline. Leave a message.")

    shopper.get_by_role("button", name="Talk to a person").click()
    form = shopper.get_by_test_id("patron-offline-form")
    expect(form).to_be_visible()
    form.get_by_label("Your email").fill("ada@example.com")
    form.get_by_label("Your message").fill("Can you gift-wrap the <b>blue</b> mug?")
    form.get_by_role("button", name="Send message").click()

    expect(form).to_be_hidden()
    expect(shopper.get_by_test_id("patron-messages")).to_contain_text(
        "Thanks! We'll reply to ada@example.com by email."
    )
    expect(_shopper_messages(shopper, "shopper").last).to_have_text(
        "Can you gift-wrap the <b>blue</b> mug?"
    )
    conversation = Conversation.objects.get()
    assert conversation.channel == Conversation.Channel.EMAIL
    assert conversation.follow_up_email == "ada@example.com"
    assert conversation.assigned_agent_id is None  # nobody was assigned outside the hours
    assert list(
        conversation.messages.filter(author_kind="shopper").values_list("body", flat=True)
    ) == ["Can you gift-wrap the <b>blue</b> mug?"]
    assert shopper.locator("b").count() == 0
    assert dialogs == []
    assert csp_violations == []
