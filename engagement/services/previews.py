"""Admin tools: previews and test sends of a campaign step."""

from __future__ import annotations

from django.utils import timezone

from commerce.models import Shopper
from core.exceptions import ValidationError
from engagement import registry
from engagement.channels import backend_for
from engagement.channels.base import DeliveryError, Outbound
from engagement.models import CampaignStep, Channel
from engagement.registry import Occurrence
from engagement.rendering import Rendered, message_render
from engagement.services._common import _json

# --- Admin: preview and test sends -------------------------------------------------------


def preview_sample_shopper() -> Shopper:
    """A made-up shopper (unsaved, id 0: no row of anyone's matches it) to preview steps with
    when the viewer may not read real shoppers' personal data."""
    return Shopper(
        pk=0,
        customer_id="sample",
        email="sample.shopper@example.com",
        first_name="Sam",
        last_name="Sample",
        locale="en",
        country="LV",
        email_consent=True,
    )


def step_preview(*, step: CampaignStep, shopper: Shopper) -> Rendered:
    """The step rendered for a real shopper, with the trigger's preview data, untracked, and
    with unsubscribe and preference links that act on nobody (a test send carries them)."""
    trigger = registry.trigger_get(step.campaign.trigger)
    data = dict(trigger.preview(shopper)) if trigger and trigger.preview else {}
    occurrence = Occurrence(key="preview", data=_json(data), fired_at=timezone.now())
    return message_render(
        message_id=0,
        shopper=shopper,
        campaign=step.campaign,
        step=step,
        trigger=trigger,
        occurrence=occurrence,
        track=False,
        test=True,
    )


def step_test_send(*, step: CampaignStep, shopper: Shopper, address: str) -> str:
    """Send the step rendered for ``shopper`` to ``address`` (not the shopper), outside the outbox."""
    if step.channel not in (Channel.EMAIL, Channel.SMS):
        raise ValidationError("test sends go to an email address or a phone number")
    address = address.strip()
    if not address:
        raise ValidationError("give an address to send the test to")
    rendered = step_preview(step=step, shopper=shopper)
    outbound = Outbound(
        message_id=0,
        delivery_id=f"test-{step.pk}-{timezone.now().timestamp()}",
        idempotency_key=f"<test-{step.pk}.{int(timezone.now().timestamp() * 1000)}@patron>",
        channel=step.channel,
        recipient=address,
        subject=f"[TEST] {rendered.subject}",
        html=rendered.html,
        text=rendered.text,
        headers=rendered.headers,
    )
    backend = backend_for(step.channel)
    try:
        return backend.send(outbound, handing=lambda: None)
    except DeliveryError as exc:
        raise ValidationError(f"test send failed: {exc}", code="send_failed") from exc
    finally:
        backend.close()
