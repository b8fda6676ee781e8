"""Campaigns, the message outbox, consent records and what the triggers remember.

The outbox (:class:`Message`) is the heart of this app: one row per message, written in the
same transaction as the decision to send it, unique per (campaign, step, shopper, trigger
occurrence), moved through its states by ``engagement.services`` only.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from commerce.models import Product, Shopper


class Channel(models.TextChoices):
    # Translated: the unsubscribe page and the preference centre show a shopper these labels.
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    PUSH = "push", _("Web push")
    ONSITE = "onsite", _("On-site message")
    WEBHOOK = "webhook", _("Webhook")


# Channels a shopper can opt out of; on-site messages and webhooks to the merchant's own
# systems are not messages to the shopper's inbox.
SUBSCRIBABLE_CHANNELS = (Channel.EMAIL, Channel.SMS, Channel.PUSH)


class Topic(models.Model):
    """A kind of message a shopper can opt out of in the preference centre (offers, surveys)."""

    key = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Segment(models.Model):
    """A named group of shoppers.

    ``filter`` segments are evaluated from ``rules`` (see ``engagement.audience``) whenever they
    are used; ``static`` and ``computed`` segments list their members in
    :class:`SegmentMembership` (computed ones, such as RFM groups, are rewritten by the job that
    computes them, named in ``computed_by``).
    """

    class Kind(models.TextChoices):
        FILTER = "filter", "Filter on shopper fields and tags"
        STATIC = "static", "Fixed list of shoppers"
        COMPUTED = "computed", "Computed (RFM and other periodic jobs)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.FILTER)
    rules = models.JSONField(
        default=list,
        blank=True,
        help_text='Conditions, all of which must hold: [{"field": "country", "op": "eq", "value": "LV"}, {"field": "tags", "op": "contains", "value": "vip"}]',
    )
    computed_by = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class SegmentMembership(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="memberships")
    shopper = models.ForeignKey(
        Shopper, on_delete=models.CASCADE, related_name="segment_memberships"
    )
    added_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["segment", "shopper"], name="engagement_segment_member_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.shopper_id} in {self.segment_id}"


class Campaign(models.Model):
    """A sequence of messages started by a trigger for the shoppers of an audience."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused (messages wait)"
        ARCHIVED = "archived", "Archived (scheduled messages are cancelled)"

    class Audience(models.TextChoices):
        ALL = "all", "All shoppers"
        SEGMENT = "segment", "A saved segment"
        FILTER = "filter", "A filter on shopper fields and tags"

    name = models.CharField(max_length=200)
    trigger = models.CharField(max_length=64, db_index=True, help_text="A registered trigger key")
    trigger_options = models.JSONField(
        default=dict, blank=True, help_text="Options of the trigger (see its description)"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    audience = models.CharField(max_length=16, choices=Audience.choices, default=Audience.ALL)
    segment = models.ForeignKey(
        Segment, null=True, blank=True, on_delete=models.PROTECT, related_name="campaigns"
    )
    audience_rules = models.JSONField(
        default=list, blank=True, help_text="For the filter audience; same form as segment rules"
    )
    topic = models.ForeignKey(
        Topic, null=True, blank=True, on_delete=models.SET_NULL, related_name="campaigns"
    )
    requires_consent = models.BooleanField(
        default=True,
        help_text="Send only to shoppers who opted in to the channel (unsubscribes apply unless "
        "the campaign is transactional)",
    )
    transactional = models.BooleanField(
        default=False,
        help_text="Messages the shopper asked for or must get (a receipt, a reply, a transcript): "
        "sent without marketing consent and despite unsubscribes, pauses, topics and frequency "
        "caps, with no unsubscribe link; suppressed addresses (bounces, complaints) are still never sent to. "
        "Needs consent off and no control group.",
    )
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Enrols from this time")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Enrols until this time")
    frequency_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="At most this many messages per shopper and channel (from any campaign) ...",
    )
    frequency_cap_hours = models.PositiveIntegerField(
        default=24, validators=[MinValueValidator(1)], help_text="... within this many hours"
    )
    quiet_hours_start = models.TimeField(
        null=True, blank=True, help_text="Shopper's local time; messages wait until the end"
    )
    quiet_hours_end = models.TimeField(null=True, blank=True)
    smart_sending = models.BooleanField(
        default=True,
        help_text="Skip a shopper who got any marketing message on the same channel (from "
        "another campaign or run) within the store's smart-sending window (Engagement "
        "settings). Transactional campaigns and messages a shopper asked for are never skipped.",
    )
    control_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=0,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Share of enrolled shoppers held out (recorded, sent nothing) to measure uplift",
    )
    flow_filters = models.JSONField(
        default=list,
        blank=True,
        help_text="Conditions every step checks before it is sent; a run that fails one exits "
        "(see engagement.services.conditions for the language)",
    )
    split_condition = models.JSONField(
        default=list,
        blank=True,
        help_text="Conditional split: shoppers for whom these conditions hold take the steps of "
        "the yes branch, the others the no branch (decided when the first branch step is due)",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["trigger", "status"], name="engagement_campaign_trigger")]
        constraints = [
            models.CheckConstraint(
                condition=Q(control_percent__gte=0, control_percent__lte=100),
                name="engagement_campaign_control_0_100",
            ),
            models.CheckConstraint(
                condition=Q(quiet_hours_start__isnull=True, quiet_hours_end__isnull=True)
                | Q(quiet_hours_start__isnull=False, quiet_hours_end__isnull=False),
                name="engagement_campaign_quiet_hours_both",
            ),
            # A receipt held out for a control group, or one waiting for marketing consent,
            # would be a message the shopper asked for and never got.
            models.CheckConstraint(
                condition=Q(transactional=False) | Q(requires_consent=False, control_percent=0),
                name="engagement_campaign_transactional_unconditional",
                violation_error_message="A transactional campaign needs consent off and no "
                "control group.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def enrols_at(self, when: dt.datetime) -> bool:
        return (
            self.status == self.Status.ACTIVE
            and (self.starts_at is None or self.starts_at <= when)
            and (self.ends_at is None or when < self.ends_at)
        )


class WebhookEndpoint(models.Model):
    """A URL of the merchant's that receives signed POSTs (``X-Patron-Signature``)."""

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=128, help_text="Shared secret for the HMAC-SHA256 signature"
    )
    event_types = models.JSONField(
        default=list, blank=True, help_text='Event types it receives, e.g. ["campaign.message"]'
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class CampaignStep(models.Model):
    """One message of a campaign, sent ``delay`` after the previous step (or the trigger).

    With a conditional split (``Campaign.split_condition``), the steps on the ``yes`` and
    ``no`` branches follow every step before the split (``branch`` empty), each branch with
    its own delays counted from the last step before the split.
    """

    class Branch(models.TextChoices):
        NONE = "", "Every shopper (before the split)"
        YES = "yes", "Yes branch (the split's conditions hold)"
        NO = "no", "No branch"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(default=1)
    delay = models.DurationField(default=dt.timedelta(0), help_text="After the previous step")
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.EMAIL)
    subject = models.CharField(
        max_length=300, blank=True, default="", help_text="Template; title for push and on-site"
    )
    body = models.TextField(
        help_text="Django template with the trigger's context; HTML for email, text elsewhere"
    )
    body_text = models.TextField(
        blank=True, default="", help_text="Plain-text email part; derived from the HTML if empty"
    )
    link_url = models.CharField(
        max_length=500, blank=True, default="", help_text="Template; where push/on-site lead"
    )
    webhook_endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="steps"
    )
    branch = models.CharField(max_length=3, choices=Branch.choices, blank=True, default="")

    class Meta:
        ordering = ["campaign", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "position"], name="engagement_step_position_once"
            ),
            models.CheckConstraint(
                condition=~Q(channel="webhook") | Q(webhook_endpoint__isnull=False),
                name="engagement_step_webhook_has_endpoint",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} step {self.position} ({self.channel})"


class Run(models.Model):
    """A shopper's passage through a campaign for one trigger occurrence."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        HELD_OUT = "held_out", "Held out (control group)"
        STOPPED = "stopped", "Stopped by its end condition"
        DONE = "done", "Done"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    shopper = models.ForeignKey(Shopper, on_delete=models.CASCADE, related_name="engagement_runs")
    occurrence_key = models.CharField(max_length=200)
    data = models.JSONField(default=dict, blank=True, help_text="What the trigger passed")
    email_to = models.EmailField(
        blank=True,
        default="",
        help_text="Email steps go to this address instead of the shopper's (an address given "
        "in a form, a staff inbox)",
    )
    email_reply_to = models.EmailField(blank=True, default="", help_text="Reply-To of email steps")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    stop_reason = models.CharField(max_length=200, blank=True, default="")
    started_at = models.DateTimeField(default=timezone.now)
    occurred_at = models.DateTimeField(
        default=timezone.now, help_text="When the firing event happened (end events after it count)"
    )
    stopped_at = models.DateTimeField(null=True, blank=True)
    branch = models.CharField(
        max_length=3,
        choices=CampaignStep.Branch.choices,
        blank=True,
        default="",
        help_text="The conditional split's outcome (empty until decided)",
    )
    branch_decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "shopper", "occurrence_key"], name="engagement_run_once"
            )
        ]
        indexes = [
            models.Index(
                fields=["shopper", "state"],
                name="engagement_run_shopper_active",
                condition=Q(state="active"),
            ),
            models.Index(fields=["campaign", "state"], name="engagement_run_campaign_state"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of campaign {self.campaign_id}"

    @property
    def is_control(self) -> bool:
        return self.state == self.State.HELD_OUT


class Message(models.Model):
    """One message in the outbox.

    State machine: ``scheduled`` -> ``sending`` (claimed by a worker; ``handed_at`` is set and
    committed just before the point after which the provider may have it) -> ``sent`` /
    ``failed``; or ``scheduled`` -> ``skipped`` (a send-time check said no) / ``cancelled`` (the
    sequence ended). The sweeper returns ``sending`` rows without ``handed_at`` to ``scheduled``;
    rows with ``handed_at`` are resolved per channel (see ``services.outbox_sweep``).
    """

    class State(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        CANCELLED = "cancelled", "Cancelled"

    id = models.BigAutoField(primary_key=True)
    delivery_id = models.UUIDField(
        default=uuid.uuid4, unique=True, editable=False, help_text="Stable across retries"
    )
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="messages")
    step = models.ForeignKey(CampaignStep, on_delete=models.CASCADE, related_name="messages")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="messages")
    shopper = models.ForeignKey(
        Shopper, on_delete=models.CASCADE, related_name="engagement_messages"
    )
    occurrence_key = models.CharField(max_length=200)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.SCHEDULED)
    reason = models.CharField(
        max_length=200, blank=True, default="", help_text="Why skipped, cancelled or failed"
    )
    due_at = models.DateTimeField()
    attempts = models.PositiveSmallIntegerField(default=0)
    postponed = models.PositiveSmallIntegerField(default=0, help_text="Times quiet hours moved it")
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    handed_at = models.DateTimeField(
        null=True, blank=True, help_text="Set just before the provider could have accepted it"
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    confirmed = models.BooleanField(
        default=False, help_text="False when a worker died after handing it over"
    )
    recipient = models.CharField(max_length=500, blank=True, default="")
    subject = models.CharField(max_length=300, blank=True, default="")
    body = models.TextField(blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    clicked_url = models.URLField(max_length=2000, blank=True, default="")
    seen_at = models.DateTimeField(null=True, blank=True, help_text="On-site: shown by the widget")
    variant = models.ForeignKey(
        "StepVariant",
        null=True,
        blank=True,
        # Deleting a variant (or its campaign) takes its figures with it; the messages stay.
        on_delete=models.SET_NULL,
        related_name="messages",
        help_text="The A/B test variant this message carried",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "step", "shopper", "occurrence_key"],
                name="engagement_message_once",
            ),
        ]
        indexes = [
            models.Index(
                fields=["due_at", "id"],
                name="engagement_message_due",
                condition=Q(state="scheduled"),
            ),
            models.Index(
                fields=["claimed_at"],
                name="engagement_message_sending",
                condition=Q(state="sending"),
            ),
            models.Index(fields=["shopper", "channel", "-sent_at"], name="engagement_msg_cap"),
            models.Index(fields=["campaign", "state"], name="engagement_msg_campaign_state"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} message {self.pk} ({self.state})"

    @property
    def message_id_header(self) -> str:
        """The RFC 5322 Message-ID: deterministic, so it is the provider-side idempotency key."""
        return f"<msg-{self.pk}.{self.delivery_id.hex[:12]}@patron>"


class StepTest(models.Model):
    """An A/B test of a step: its variants share the recipients until a winner is chosen.

    Each recipient's variant is drawn from the weights by a hash of the run (stable across
    retries) and recorded on the message. ``decide_after`` the first send, the variant with
    the best ``metric`` wins (ties: the first label) and every later recipient gets it.
    """

    class Metric(models.TextChoices):
        OPEN_RATE = "open_rate", "Open rate (opens / sent)"
        CLICK_RATE = "click_rate", "Click rate (clicks / sent)"
        CONVERSION_RATE = "conversion_rate", "Conversion rate (attributed orders / sent)"

    step = models.OneToOneField(CampaignStep, on_delete=models.CASCADE, related_name="ab_test")
    metric = models.CharField(max_length=20, choices=Metric.choices, default=Metric.CLICK_RATE)
    decide_after = models.DurationField(
        default=dt.timedelta(hours=24),
        help_text="Time from the test's first send to choosing the winner",
    )
    started_at = models.DateTimeField(null=True, blank=True, help_text="The first send")
    winner = models.ForeignKey(
        "StepVariant", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision = models.CharField(
        max_length=500, blank=True, default="", help_text="The figures the winner was chosen on"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(decide_after__gt=dt.timedelta(0)),
                name="engagement_step_test_decide_after_positive",
            )
        ]

    def __str__(self) -> str:
        return f"A/B test of {self.step}"


class StepVariant(models.Model):
    """One version of a tested step; blank fields use the step's own subject or content."""

    test = models.ForeignKey(StepTest, on_delete=models.CASCADE, related_name="variants")
    label = models.CharField(max_length=20, help_text="A, B, ...")
    weight = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="Share of recipients, relative"
    )
    subject = models.CharField(max_length=300, blank=True, default="")
    body = models.TextField(blank=True, default="")
    body_text = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["test", "label"]
        constraints = [
            models.UniqueConstraint(fields=["test", "label"], name="engagement_variant_label_once"),
            models.CheckConstraint(condition=Q(weight__gte=1), name="engagement_variant_weight"),
        ]

    def __str__(self) -> str:
        return f"variant {self.label}"


class Unsubscribe(models.Model):
    """A shopper said no to a channel (one-click, preference centre, a reply, the admin)."""

    shopper = models.ForeignKey(Shopper, on_delete=models.CASCADE, related_name="unsubscribes")
    channel = models.CharField(max_length=16, choices=Channel.choices)
    source = models.CharField(max_length=32, default="link")
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shopper", "channel"], name="engagement_unsubscribe_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.shopper_id} from {self.channel}"


class Suppression(models.Model):
    """An address never to send to (bounced, complained, entered by staff), whoever owns it."""

    class Reason(models.TextChoices):
        BOUNCE = "bounce", "Hard bounce"
        COMPLAINT = "complaint", "Spam complaint"
        MANUAL = "manual", "Manual"

    channel = models.CharField(max_length=16, choices=Channel.choices)
    address = models.CharField(max_length=500, help_text="Email address or phone, normalised")
    reason = models.CharField(max_length=16, choices=Reason.choices, default=Reason.MANUAL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "address"], name="engagement_suppression_once"
            )
        ]

    def __str__(self) -> str:
        # No address: the str shows in titles and logs seen without the personal-data permission.
        return f"{self.channel} suppression {self.pk} ({self.reason})"


class Preference(models.Model):
    """What a shopper chose in the preference centre: a pause and topics they left."""

    shopper = models.OneToOneField(
        Shopper, on_delete=models.CASCADE, related_name="engagement_preference"
    )
    paused_until = models.DateTimeField(null=True, blank=True)
    topics_opted_out = models.ManyToManyField(Topic, blank=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"preferences of {self.shopper_id}"


class PushSubscription(models.Model):
    """A browser's Push API subscription (endpoint and keys) for a shopper."""

    shopper = models.ForeignKey(
        Shopper, on_delete=models.CASCADE, related_name="push_subscriptions"
    )
    endpoint = models.URLField(max_length=1000, unique=True)
    p256dh = models.CharField(max_length=200)
    auth = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        # Not the endpoint: it addresses one shopper's device, and the str shows in titles.
        return f"push subscription {self.pk}"


class ProductView(models.Model):
    """How often a shopper viewed a product lately (kept by the Product Viewed handler)."""

    shopper = models.ForeignKey(Shopper, on_delete=models.CASCADE, related_name="product_views")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    views = models.PositiveIntegerField(default=0)
    first_viewed_at = models.DateTimeField()
    last_viewed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shopper", "product"], name="engagement_product_view_once"
            )
        ]
        indexes = [
            models.Index(fields=["product", "-last_viewed_at"], name="engagement_view_product")
        ]

    def __str__(self) -> str:
        return f"{self.shopper_id} viewed {self.product_id} x{self.views}"


class ProductWatch(models.Model):
    """A "notify me" request: tell this shopper when the product is back or cheaper."""

    class Kind(models.TextChoices):
        BACK_IN_STOCK = "back_in_stock", "Back in stock"
        PRICE_DROP = "price_drop", "Price drop"

    shopper = models.ForeignKey(Shopper, on_delete=models.CASCADE, related_name="product_watches")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(default=timezone.now)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["shopper", "product", "kind"], name="engagement_watch_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.shopper_id} watches {self.product_id} ({self.kind})"


class ProductSnapshot(models.Model):
    """Stock and price as last seen, to detect restocks and price drops."""

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="+")
    stock = models.IntegerField()
    price = models.DecimalField(max_digits=12, decimal_places=2)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.product_id}: {self.stock} at {self.price}"


class ProductChange(models.Model):
    """A detected restock or price drop; its id is the trigger occurrence."""

    class Kind(models.TextChoices):
        BACK_IN_STOCK = "back_in_stock", "Back in stock"
        PRICE_DROP = "price_drop", "Price drop"

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    old_price = models.DecimalField(max_digits=12, decimal_places=2)
    new_price = models.DecimalField(max_digits=12, decimal_places=2)
    old_stock = models.IntegerField()
    new_stock = models.IntegerField()
    detected_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.kind} of {self.product_id}"


class Broadcast(models.Model):
    """One send of a broadcast campaign (a limited-time offer) to its audience."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="broadcasts")
    send_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    enrolled = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"broadcast {self.pk} of {self.campaign_id}"


class NpsResponse(models.Model):
    """An answer to an NPS survey message (0-10, and an optional comment)."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="nps")
    shopper = models.ForeignKey(Shopper, on_delete=models.CASCADE, related_name="nps_responses")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    score = models.PositiveSmallIntegerField(validators=[MaxValueValidator(10)])
    comment = models.TextField(blank=True, default="")
    answered_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(score__lte=10), name="engagement_nps_0_10")
        ]

    def __str__(self) -> str:
        return f"{self.score}/10 from {self.shopper_id}"


class EngagementSettings(models.Model):
    """The store's engagement settings; one row (pk 1), edited in the admin.

    Read through ``selectors.engagement_settings()``, which answers the defaults while the row
    does not exist yet.
    """

    smart_sending_hours = models.PositiveIntegerField(
        default=16,
        validators=[MaxValueValidator(24 * 30)],
        help_text="Smart sending: a shopper who received a marketing message on a channel "
        "within this many hours is skipped by the next one there (campaigns with smart sending "
        "on). 0 turns smart sending off for the whole store.",
    )
    attribution_window_days = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(90)],
        help_text="An order counts for a campaign when placed within this many days after an "
        "open or click of its message (and, for uplift, after the shopper's enrolment).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "engagement settings"
        verbose_name_plural = "engagement settings"
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="engagement_settings_single_row"),
            models.CheckConstraint(
                condition=Q(attribution_window_days__gte=1, attribution_window_days__lte=90),
                name="engagement_settings_window_1_90",
            ),
        ]

    def __str__(self) -> str:
        return "Engagement settings"
