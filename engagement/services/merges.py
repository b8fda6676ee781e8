"""Shopper merges: keeping the outbox's unique keys valid when two shoppers become one."""

from __future__ import annotations

from commerce.models import Shopper
from engagement.models import (
    Message,
    Preference,
    ProductView,
    ProductWatch,
    Run,
    SegmentMembership,
    Unsubscribe,
)
from engagement.services.enrolment import run_stop

# --- Shopper merges ----------------------------------------------------------------------


def shopper_merge_fold(source: Shopper, target: Shopper) -> None:
    """Commerce merge handler: keep the outbox's unique keys valid when two shoppers become one.

    Rows of the source that the target already has (same campaign and occurrence) are renamed
    and cancelled, so the generic re-pointing cannot collide and nobody is messaged twice.
    """
    target_runs = set(
        Run.objects.filter(shopper=target).values_list("campaign_id", "occurrence_key")
    )
    for run in Run.objects.filter(shopper=source).order_by("pk"):
        if (run.campaign_id, run.occurrence_key) in target_runs:
            renamed = f"{run.occurrence_key}#merged-{source.pk}"[:200]
            run_stop(run=run, reason="shopper merged")
            Message.objects.filter(run=run).update(occurrence_key=renamed)
            Run.objects.filter(pk=run.pk).update(occurrence_key=renamed)
    taken_channels = set(
        Unsubscribe.objects.filter(shopper=target).values_list("channel", flat=True)
    )
    Unsubscribe.objects.filter(shopper=source, channel__in=taken_channels).delete()
    taken_segments = set(
        SegmentMembership.objects.filter(shopper=target).values_list("segment_id", flat=True)
    )
    SegmentMembership.objects.filter(shopper=source, segment_id__in=taken_segments).delete()
    if Preference.objects.filter(shopper=target).exists():
        Preference.objects.filter(shopper=source).delete()
    else:
        Preference.objects.filter(shopper=source).update(shopper=target)
    taken_views = set(
        ProductView.objects.filter(shopper=target).values_list("product_id", flat=True)
    )
    ProductView.objects.filter(shopper=source, product_id__in=taken_views).delete()
    taken_watches = set(
        ProductWatch.objects.filter(shopper=target).values_list("product_id", "kind")
    )
    for watch in ProductWatch.objects.filter(shopper=source):
        if (watch.product_id, watch.kind) in taken_watches:
            watch.delete()
