"""Merchants' templates run in a sandbox: the shopper, the trigger's context and the shop.

A hostile template tries every road out that Django's template language offers (attributes,
managers, reverse relations, settings, the request, tag libraries) and the test asserts
exactly what it printed.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from chat import emails
from chat.models import Conversation, Message
from commerce import services as commerce_services
from commerce.models import Product
from engagement import services
from engagement.rendering import template_render, template_value
from tests.engagement.conftest import make_campaign, make_shopper

pytestmark = pytest.mark.django_db

# Each probe prints "name=[value]" so the output can be compared as a whole.
PROBES = [
    ("agent_password", "conversation.assigned_agent.password"),
    ("agent", "conversation.assigned_agent"),
    ("messages", "conversation.messages.all"),
    ("conversation_shopper", "conversation.shopper.email"),
    ("other_conversations", "conversation.shopper.conversations.all"),
    ("shopper_orders", "shopper.orders.all"),
    ("shopper_conversations", "shopper.conversations.all"),
    ("shopper_manager", "shopper.objects.all"),
    ("shopper_traits", "shopper.traits"),
    ("shopper_merged", "shopper.merged_into"),
    ("campaign_steps", "campaign.steps.all"),
    ("campaign_messages", "campaign.messages.all"),
    ("campaign_trigger", "campaign.trigger"),
    ("request", "request.user"),
    ("settings", "settings.SECRET_KEY"),
    ("user", "user.password"),
    ("perms", "perms"),
    ("shopper_first_name", "shopper.first_name"),
    ("shopper_email", "shopper.email"),
    ("conversation_id", "conversation.id"),
    ("shop", "shop.name"),
    ("campaign", "campaign.name"),
]
HOSTILE = "".join(f"{name}=[{{{{ {path} }}}}]\n" for name, path in PROBES)


def _probe_output(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.strip().splitlines())
    return {name: value[1:-1] for name, value in pairs}


@pytest.fixture
def conversation_with_secrets():
    agent = get_user_model().objects.create_user(
        username="agent", password="s3cret-agent-pass", is_staff=True
    )
    shopper = make_shopper(first_name="Ada", email="ada@example.com", traits={"vip": "internal"})
    other = make_shopper(first_name="Bob", email="bob@example.com")
    commerce_services.order_create(
        number="ADA-1",
        shopper=shopper,
        lines=[commerce_services.LineInput(sku="S", quantity=1, unit_price=Decimal("3"))],
    )
    conversation = Conversation.objects.create(
        shopper=shopper, state=Conversation.State.ASSIGNED, assigned_agent=agent, last_seq=2
    )
    Message.objects.create(
        conversation=conversation, seq=1, author_kind=Message.Author.SHOPPER, body="hello"
    )
    Message.objects.create(
        conversation=conversation,
        seq=2,
        author_kind=Message.Author.AGENT,
        author_agent=agent,
        body="NOTE: refund fraud suspected",
        internal=True,
    )
    Conversation.objects.create(shopper=other, follow_up_email="bob@example.com")
    return agent, shopper, conversation


def test_a_hostile_transcript_template_prints_only_the_shopper_the_context_and_the_shop(
    conversation_with_secrets,
):
    agent, shopper, conversation = conversation_with_secrets
    campaign = make_campaign(
        emails.TRANSCRIPT,
        name="Transcript",
        transactional=True,
        requires_consent=False,
        steps=[{"subject": "Transcript", "body": "", "body_text": HOSTILE, "channel": "email"}],
    )

    rendered = services.step_preview(step=campaign.steps.get(), shopper=shopper)

    assert _probe_output(rendered.text) == {
        "agent_password": "",
        "agent": "",
        "messages": "",
        "conversation_shopper": "",
        "other_conversations": "",
        "shopper_orders": "",
        "shopper_conversations": "",
        "shopper_manager": "",
        "shopper_traits": "",
        "shopper_merged": "",
        "campaign_steps": "",
        "campaign_messages": "",
        "campaign_trigger": "",
        "request": "",
        "settings": "",
        "user": "",
        "perms": "",
        "shopper_first_name": "Ada",
        "shopper_email": "ada@example.com",
        "conversation_id": str(conversation.pk),
        "shop": "Patron",
        "campaign": "Transcript",
    }
    assert agent.password.split("$")[-1] not in rendered.text
    assert "refund fraud" not in rendered.text
    assert "bob@example.com" not in rendered.text


def test_an_order_template_reaches_the_lines_and_products_but_not_the_shopper_behind_them():
    shopper = make_shopper(first_name="Ada")
    other = make_shopper(first_name="Bob", email="bob@example.com")
    product = Product.objects.create(sku="S", title="Socks", price=Decimal("3"))
    for number, owner in (("A-1", shopper), ("B-1", other)):
        commerce_services.order_create(
            number=number,
            shopper=owner,
            lines=[commerce_services.LineInput(sku="S", quantity=1, unit_price=Decimal("3"))],
        )
    campaign = make_campaign(
        "review_request",
        steps=[
            {
                "subject": "s",
                "body": "",
                "body_text": (
                    "{% for l in order.lines %}{{ l.title }} {{ l.product.sku }} "
                    "{{ l.product.orderline_set.all }}{{ l.product.reviews.all }}{% endfor %}|"
                    "{{ order.shopper.email }}|{{ order.email }}|{{ order.lines.0.order.number }}|"
                    "{{ lines.0.product.title }}|{{ product.objects.all }}|{{ order.number }}"
                ),
            }
        ],
    )

    rendered = services.step_preview(step=campaign.steps.get(), shopper=shopper)

    assert rendered.text.splitlines()[0] == f"Socks S ||||{product.title}||A-1"
    assert "bob@example.com" not in rendered.text


def test_tag_libraries_includes_and_debug_are_not_available():
    context = {"shopper": template_value(make_shopper(first_name="Ada"))}

    with pytest.raises(Exception, match="not a registered tag library"):
        template_render("{% load log %}{% get_admin_log 10 as log %}", context, autoescape=False)
    with pytest.raises(Exception, match=r"admin/base\.html"):
        template_render('{% include "admin/base.html" %}', context, autoescape=False)
    with pytest.raises(Exception, match="debug"):
        template_render("{% debug %}", context, autoescape=False)
    # A read-only mapping: a template cannot empty it for the variables read after.
    assert (
        template_render("{{ shopper.clear }}{{ shopper.first_name }}", context, autoescape=False)
        == "Ada"
    )


def test_template_value_keeps_plain_data_and_drops_everything_else():
    now = timezone.now()

    assert template_value({"a": [1, "x", Decimal("2.50"), now, None], "f": print}) == {
        "a": (1, "x", Decimal("2.50"), now, None),
        "f": None,
    }
    assert template_value(get_user_model()(username="x", password="hash")) is None
