"""Live chat: conversations, their messages, agents' presence, the bot's configuration and the
knowledge base.

State changes live in ``chat/services/``; these classes hold fields, constraints and small
pure methods only.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_noop

MAX_LABEL_LENGTH = 40


class ChatSettings(models.Model):
    """The merchant's chat configuration; one row (pk 1), edited in the admin."""

    class ReopenState(models.TextChoices):
        BOT = "bot", "Back to the bot"
        QUEUED = "queued", "Straight to the agents' queue"

    class Routing(models.TextChoices):
        LEAST_BUSY = "least_busy", "Least busy agent"
        ROUND_ROBIN = "round_robin", "Round robin"

    reopen_state = models.CharField(
        max_length=16,
        choices=ReopenState.choices,
        default=ReopenState.BOT,
        help_text="Where a resolved conversation goes when the shopper writes again",
    )
    routing = models.CharField(max_length=16, choices=Routing.choices, default=Routing.LEAST_BUSY)
    bot_enabled = models.BooleanField(default=True)
    bot_confidence_threshold = models.FloatField(
        default=0.55,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Below this the bot asks to clarify instead of answering",
    )
    bot_max_failures = models.PositiveSmallIntegerField(
        default=2, help_text="Hand off after this many answers the bot could not give in a row"
    )
    greeting = models.CharField(
        max_length=500, default=gettext_noop("Hi! How can we help you today?")
    )
    clarify_message = models.CharField(
        max_length=500,
        default=gettext_noop(
            "Sorry, I didn't quite get that. Could you say it another way? "
            "You can also ask for a person."
        ),
    )
    handoff_message = models.CharField(
        max_length=500, default=gettext_noop("I'm passing you to a member of our team.")
    )
    queued_message = models.CharField(
        max_length=500,
        default=gettext_noop(
            "You're number {position} in the queue. An agent will be with you soon."
        ),
    )
    offline_message = models.CharField(
        max_length=500,
        default=gettext_noop(
            "We're offline right now. Leave your email and your question and we'll reply by email."
        ),
    )
    unsupported_message = models.CharField(
        max_length=500,
        default=gettext_noop(
            'I can\'t help with that here. Would you like to talk to a person? Just say "agent".'
        ),
    )
    languages = models.JSONField(default=list, blank=True, help_text='e.g. ["en", "lv", "tr"]')
    fallback_language = models.CharField(
        max_length=8,
        choices=settings.LANGUAGES,
        default="en",
        help_text="The language of the bot's answers, knowledge-base articles and help pages "
        "when there is none in the shopper's language",
    )
    handoff_phrases = models.JSONField(
        default=list,
        blank=True,
        help_text="Words or phrases that ask for a person, in every store language",
    )
    support_email = models.EmailField(
        blank=True, default="", help_text="Where offline messages are sent for follow-up"
    )
    time_zone = models.CharField(max_length=64, default="UTC")

    class Meta:
        verbose_name = "chat settings"
        verbose_name_plural = "chat settings"

    def __str__(self) -> str:
        return "Chat settings"


class BusinessHours(models.Model):
    """One open interval on one weekday (0 = Monday), in ``ChatSettings.time_zone``.

    No rows at all means always open.
    """

    weekday = models.PositiveSmallIntegerField(
        validators=[MaxValueValidator(6)], help_text="0 = Monday … 6 = Sunday"
    )
    opens = models.TimeField()
    closes = models.TimeField()

    class Meta:
        ordering = ["weekday", "opens"]
        verbose_name_plural = "business hours"
        constraints = [
            models.CheckConstraint(
                condition=Q(opens__lt=models.F("closes")), name="chat_hours_order"
            ),
            models.CheckConstraint(condition=Q(weekday__lte=6), name="chat_hours_weekday"),
        ]

    def __str__(self) -> str:
        return f"{self.weekday} {self.opens:%H:%M}-{self.closes:%H:%M}"

    def contains(self, local: dt.datetime) -> bool:
        return local.weekday() == self.weekday and self.opens <= local.time() < self.closes


class Conversation(models.Model):
    class State(models.TextChoices):
        BOT = "bot", "Bot"
        QUEUED = "queued", "Queued"
        ASSIGNED = "assigned", "Assigned"
        RESOLVED = "resolved", "Resolved"

    class Channel(models.TextChoices):
        CHAT = "chat", "Live chat"
        EMAIL = "email", "Email follow-up"

    # Indexed by chat_conv_shopper_created.
    shopper = models.ForeignKey(
        "commerce.Shopper",
        on_delete=models.CASCADE,
        related_name="conversations",
        db_index=False,
    )
    state = models.CharField(max_length=16, choices=State.choices, default=State.BOT)
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.CHAT)
    assigned_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="chat_conversations",
    )
    last_seq = models.PositiveIntegerField(default=0)
    language = models.CharField(max_length=16, blank=True, default="")
    bot_failures = models.PositiveSmallIntegerField(default=0)
    follow_up_email = models.EmailField(blank=True, default="")
    page_url = models.URLField(max_length=2000, blank=True, default="")
    page_title = models.CharField(max_length=300, blank=True, default="")
    page_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    handed_off_at = models.DateTimeField(
        null=True, blank=True, help_text="First hand-off to people (metrics)"
    )
    assigned_at = models.DateTimeField(null=True, blank=True)
    first_agent_response_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    csat_requested_at = models.DateTimeField(null=True, blank=True)
    labels = ArrayField(
        models.CharField(max_length=MAX_LABEL_LENGTH),
        default=list,
        blank=True,
        help_text="Agents' labels (billing, vip, …): filter the inbox, counted in the metrics",
    )
    snoozed_at = models.DateTimeField(
        null=True, blank=True, help_text="Set while snoozed: out of the inbox tabs"
    )
    snoozed_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Back in the inbox at this time (empty while snoozed: when the shopper writes)",
    )

    class Meta:
        permissions = [
            ("answer_conversations", "Can answer live chat conversations (agent)"),
            ("view_chat_metrics", "Can view chat metrics (all agents' figures)"),
        ]
        indexes = [
            models.Index(fields=["shopper", "-created_at"], name="chat_conv_shopper_created"),
            models.Index(fields=["state", "queued_at"], name="chat_conv_state_queued"),
            models.Index(
                fields=["assigned_agent", "state"],
                name="chat_conv_agent_open",
                condition=Q(state="assigned"),
            ),
            # Only snoozed conversations have entries: the wake-up task's scan.
            models.Index(
                fields=["snoozed_until"],
                name="chat_conv_snoozed",
                condition=Q(snoozed_at__isnull=False),
            ),
        ]
        # No index on updated_at, last_seq or first_agent_response_at, which every message
        # updates: so that update is HOT (no index entries, the new row version on the same
        # page; fillfactor 80 leaves the room, migration 0007). The "all" inbox sorts instead.
        constraints = [
            models.CheckConstraint(
                condition=~Q(state="assigned") | Q(assigned_agent__isnull=False),
                name="chat_conv_assigned_has_agent",
            ),
        ]

    def __str__(self) -> str:
        return f"Conversation {self.pk} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state != self.State.RESOLVED


class Message(models.Model):
    class Author(models.TextChoices):
        SHOPPER = "shopper", "Shopper"
        BOT = "bot", "Bot"
        AGENT = "agent", "Agent"
        SYSTEM = "system", "System"

    id = models.BigAutoField(primary_key=True)
    # Indexed by chat_message_seq_unique (conversation, seq).
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    seq = models.PositiveIntegerField()
    author_kind = models.CharField(max_length=8, choices=Author.choices)
    # Indexed only where set (chat_message_agent): most messages are the shopper's or the bot's.
    author_agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    body = models.TextField()
    internal = models.BooleanField(
        default=False, help_text="A private note, never shown to the shopper"
    )
    # NULL, not "": messages without a client id (bot, system) stay out of the unique index.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001  (NULL keeps rows out of the unique index, see above)
    intent = models.CharField(
        max_length=64, blank=True, default="", help_text="Bot: matched intent"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(
                fields=["author_agent"],
                name="chat_message_agent",
                condition=Q(author_agent__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="chat_message_seq_unique"),
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                name="chat_message_client_id_unique",
                condition=Q(client_id__isnull=False),
            ),
            models.CheckConstraint(
                condition=~Q(internal=True) | Q(author_kind="agent"),
                name="chat_message_notes_by_agents",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.author_kind}: {self.body[:40]}"


class AgentStatus(models.Model):
    """An agent's presence and capacity; routing locks these rows in pk order."""

    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        AWAY = "away", "Away"
        OFFLINE = "offline", "Offline"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_status"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OFFLINE)
    capacity = models.PositiveSmallIntegerField(
        default=5, help_text="Conversations this agent can hold at once"
    )
    last_assigned_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "agent statuses"

    def __str__(self) -> str:
        return f"{self.user} ({self.status})"


class KnowledgeArticle(models.Model):
    title = models.CharField(max_length=300)
    slug = models.SlugField(max_length=200)
    question = models.CharField(
        max_length=300, blank=True, default="", help_text="The FAQ question (defaults to the title)"
    )
    body = models.TextField(help_text="Plain text; blank lines separate paragraphs")
    keywords = models.JSONField(default=list, blank=True, help_text='e.g. ["delivery", "shipping"]')
    language = models.CharField(
        max_length=16,
        choices=settings.LANGUAGES,
        default="en",
        help_text="One row per language; the same slug in another language is its translation",
    )
    published = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]
        constraints = [
            models.UniqueConstraint(fields=["slug", "language"], name="chat_article_slug_lang"),
        ]

    def __str__(self) -> str:
        return self.title


class BotIntent(models.Model):
    """A merchant-configured intent: phrases that trigger it and what the bot does."""

    class Kind(models.TextChoices):
        ANSWER = "answer", "Reply with the answer text"
        ORDER_STATUS = "order_status", "Look up order status"
        ARTICLE = "article", "Reply with a knowledge-base article"
        HANDOFF = "handoff", "Hand off to a person"
        REGISTERED = "registered", "Handled by an app (points, recommendations…)"

    key = models.SlugField(max_length=64)
    language = models.CharField(
        max_length=16,
        choices=settings.LANGUAGES,
        default="en",
        help_text="One row per language and key; the bot answers in the shopper's language, "
        "else in chat settings' fallback language",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ANSWER)
    phrases = models.JSONField(
        default=list, help_text='Example phrases or keywords, e.g. ["where is my order"]'
    )
    answer = models.TextField(
        blank=True,
        default="",
        help_text="Reply text; order status may use {orders}, answers may use {name}",
    )
    article = models.ForeignKey(
        KnowledgeArticle, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    active = models.BooleanField(default=True)
    # Part of the bot's version stamp: a save here makes every process retrain (chat.nlu).
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key", "language"]
        constraints = [
            models.UniqueConstraint(fields=["key", "language"], name="chat_intent_key_lang"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.language})"


class CannedResponse(models.Model):
    shortcut = models.SlugField(max_length=40, unique=True)
    title = models.CharField(max_length=200)
    body = models.TextField()

    class Meta:
        ordering = ["shortcut"]

    def __str__(self) -> str:
        return self.shortcut


class CsatRating(models.Model):
    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="csat")
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rating = models.PositiveSmallIntegerField()
    comment = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__gte=1, rating__lte=5), name="chat_csat_rating_1_5"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rating}/5 for conversation {self.conversation_id}"
