"""Smart sending against real processes: a Celery worker on Redis delivering to an SMTP server
sends each shopper one of two marketing emails fired at once, and records why the other stayed."""

from __future__ import annotations

import pytest
from django.utils import timezone

from engagement import services
from engagement.models import Message
from tests.engagement.conftest import make_campaign, make_shopper
from tests.support.processes import sending_worker_fixture
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.system, pytest.mark.django_db(transaction=True)]


worker = sending_worker_fixture(concurrency=2, PATRON_OUTBOX_BATCH_SIZE="2")


def _decided() -> None:
    wait_until(
        lambda: (
            not Message.objects.filter(
                state__in=["scheduled", "sending"], due_at__lte=timezone.now()
            ).exists()
        ),
        what="every message decided",
    )


def test_a_real_worker_sends_each_shopper_one_of_two_campaigns(worker, sink):
    make_campaign("welcome", name="welcome", steps=[{"subject": "Welcome"}])
    make_campaign("welcome", name="first order offer", steps=[{"subject": "10% off"}])
    shoppers = [make_shopper() for _ in range(3)]

    for shopper in shoppers:
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    # Small batches on two processes: the two smart-sending emails of a shopper may be
    # claimed by different workers at once; the per-shopper channel lock decides them in turn.
    _decided()
    # A campaign that opts out goes to shoppers who just got marketing. It starts after the
    # others were decided: its own email counts as marketing received for them (as any email
    # does), so fired together it would sometimes be claimed first and shut both out.
    opted_out = make_campaign(
        "welcome", name="account notice", steps=[{"subject": "Your account"}], smart_sending=False
    )
    for shopper in shoppers:  # the same occurrence: only the new campaign enrols
        services.trigger_fire(trigger="welcome", shopper=shopper, occurrence_key="welcome")
    _decided()

    received = sink.wait_for(6)
    by_shopper = {
        s.email: sorted(str(r.message["Subject"]) for r in received if r.rcpt_tos == [s.email])
        for s in shoppers
    }
    for subjects in by_shopper.values():
        assert len(subjects) == 2
        assert "Your account" in subjects
    assert len(received) == 6
    skipped = Message.objects.filter(state="skipped").exclude(campaign=opted_out)
    assert sorted(skipped.values_list("shopper_id", "reason")) == [
        (s.pk, "smart sending: marketing received within 16 h") for s in shoppers
    ]
    assert Message.objects.filter(state="sent").count() == 6
