"""Read queries of chat and the JSON shapes the protocol (docs/chat-protocol.md) sends."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Permission
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils.translation import gettext
from django.utils.translation.trans_real import DjangoTranslation
from django.views.i18n import JavaScriptCatalog

from chat import presence, registry
from chat.models import AgentStatus, CannedResponse, Conversation, KnowledgeArticle, Message
from commerce import selectors as commerce_selectors
from commerce.models import PERSONAL_DATA_PERMISSION, Event, Order, Shopper

logger = logging.getLogger(__name__)

AGENT_PERMISSION = "chat.answer_conversations"
METRICS_PERMISSION = "chat.view_chat_metrics"
# What the "Agents" group holds (chat migration 0009): the console and nothing more.
AGENT_GROUP_PERMISSIONS = (
    AGENT_PERMISSION,
    "chat.view_conversation",
    "chat.view_message",
    "chat.view_cannedresponse",
    "chat.view_agentstatus",
)
# Keys of summaries' shopper briefs and of context-panel sections that are personal data.
PERSONAL_KEYS = frozenset(
    {"name", "email", "phone", "first_name", "last_name", "address", "follow_up_email"}
)
HISTORY_LIMIT = 200

AnyUser = AbstractBaseUser | AnonymousUser


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def agent_name(user: Any) -> str:
    if user is None:
        return ""
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return str(full or user.get_username())


def is_agent(user: AnyUser | None) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and getattr(user, "is_staff", False)
        and user.has_perm(AGENT_PERMISSION)  # type: ignore[attr-defined]  # PermissionsMixin adds it
    )


def agent_rights(*, user_id: int) -> tuple[bool, bool]:
    """``(is an agent, sees all personal data)`` for the user as the database has it now (no
    cached permissions): ``(False, False)`` once they are deleted, inactive or not an agent."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not is_agent(user):
        return False, False
    return True, sees_all_personal_data(user)


def sees_all_personal_data(user: AnyUser | None) -> bool:
    """Whether ``user`` may see every shopper's name, email and phone in the console."""
    return bool(
        user is not None and user.is_authenticated and user.has_perm(PERSONAL_DATA_PERMISSION)  # type: ignore[attr-defined]  # PermissionsMixin adds it
    )


def personal_data_visible(
    *, viewer_id: int | None, sees_all: bool, assigned_agent_id: int | None
) -> bool:
    """An agent sees the personal data of the shopper in a conversation assigned to them;
    others (the queue, colleagues' chats) only with ``commerce.view_shopper_personal_data``."""
    return sees_all or (assigned_agent_id is not None and assigned_agent_id == viewer_id)


def _blank_personal(data: dict[str, Any]) -> dict[str, Any]:
    return {key: "" if key in PERSONAL_KEYS else value for key, value in data.items()}


def summary_for_viewer(
    summary: dict[str, Any], *, viewer_id: int | None, sees_all: bool
) -> dict[str, Any]:
    """A conversation summary as this agent may see it: the shopper's name and email blank
    unless :func:`personal_data_visible`."""
    agent = summary.get("assigned_agent") or {}
    if personal_data_visible(
        viewer_id=viewer_id, sees_all=sees_all, assigned_agent_id=agent.get("id")
    ):
        return summary
    return {**summary, "shopper": _blank_personal(summary["shopper"])}


def context_for_viewer(sections: list[dict[str, Any]], *, personal: bool) -> list[dict[str, Any]]:
    """Context-panel sections with personal keys blank unless ``personal``."""
    if personal:
        return sections
    return [{**section, "data": _blank_personal(section["data"])} for section in sections]


def agents_queryset() -> QuerySet[Any]:
    """Active staff users holding the agent permission (directly, by group, or superusers)."""
    User = get_user_model()
    app_label, codename = AGENT_PERMISSION.split(".")
    permission = Permission.objects.filter(
        content_type__app_label=app_label, codename=codename
    ).first()
    has = Q(is_superuser=True)
    if permission is not None:
        has |= Q(user_permissions=permission) | Q(groups__permissions=permission)
    return User.objects.filter(has, is_active=True, is_staff=True).distinct()


def message_dict(message: Message, *, agent_display: str | None = None) -> dict[str, Any]:
    if message.author_kind == Message.Author.AGENT:
        name = agent_display if agent_display is not None else agent_name(message.author_agent)
    elif message.author_kind == Message.Author.BOT:
        name = "Bot"
    elif message.author_kind == Message.Author.SYSTEM:
        name = ""
    else:
        name = "You"
    return {
        "id": message.pk,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "author": {
            "kind": message.author_kind,
            "name": name,
            "id": message.author_agent_id if message.author_kind == Message.Author.AGENT else None,
        },
        "body": message.body,
        "internal": message.internal,
        "client_id": message.client_id,
        "created_at": iso(message.created_at),
    }


def messages_page(
    *,
    conversation_id: int,
    after_seq: int = 0,
    before_seq: int | None = None,
    include_internal: bool,
    limit: int = HISTORY_LIMIT,
) -> tuple[list[dict[str, Any]], bool]:
    """The first ``limit`` messages with ``after_seq < seq`` (and ``seq < before_seq``), in
    ascending seq order, and whether more follow them (the next page starts after the last).

    Paging forward from a client's ``last_seq`` never skips a message, however many it missed.
    """
    qs = Message.objects.filter(conversation_id=conversation_id, seq__gt=after_seq).select_related(
        "author_agent"
    )
    if before_seq is not None:
        qs = qs.filter(seq__lt=before_seq)
    if not include_internal:
        qs = qs.filter(internal=False)
    rows = list(qs.order_by("seq")[: limit + 1])
    return [message_dict(row) for row in rows[:limit]], len(rows) > limit


def messages_latest(
    *, conversation_id: int, include_internal: bool, limit: int = HISTORY_LIMIT
) -> list[dict[str, Any]]:
    """The newest ``limit`` messages, in ascending seq order: a first view of a conversation
    for a client that has seen none of it (``hello`` or ``conversation.open`` without
    ``last_seq``)."""
    qs = Message.objects.filter(conversation_id=conversation_id).select_related("author_agent")
    if not include_internal:
        qs = qs.filter(internal=False)
    rows = list(qs.order_by("-seq")[:limit])
    rows.reverse()
    return [message_dict(row) for row in rows]


def conversation_current(*, shopper_id: int) -> Conversation | None:
    """The shopper's latest conversation (open or resolved): the one the widget shows."""
    return (
        Conversation.objects.filter(shopper_id=shopper_id)
        .select_related("assigned_agent")
        .order_by("-created_at", "-pk")
        .first()
    )


def queue_position(*, conversation: Conversation) -> int | None:
    if conversation.state != Conversation.State.QUEUED or conversation.queued_at is None:
        return None
    ahead = Conversation.objects.filter(
        state=Conversation.State.QUEUED, channel=Conversation.Channel.CHAT
    ).filter(
        Q(queued_at__lt=conversation.queued_at)
        | Q(queued_at=conversation.queued_at, pk__lt=conversation.pk)
    )
    return ahead.count() + 1


def conversation_shopper_view(
    conversation: Conversation, *, business_hours_open: bool, agents_online: int | None = None
) -> dict[str, Any]:
    """The conversation as the shopper's widget sees it (docs/chat-protocol.md, *Conversation
    (shopper view)*). ``agents_online`` (agents routing may assign to now) is shown while the
    conversation waits in the queue, and null otherwise."""
    agent = (
        conversation.assigned_agent if conversation.state == Conversation.State.ASSIGNED else None
    )
    position = queue_position(conversation=conversation)
    return {
        "id": conversation.pk,
        "state": conversation.state,
        "channel": conversation.channel,
        "last_seq": conversation.last_seq,
        "agent": {"name": agent_name(agent)} if agent is not None else None,
        "queue_position": position,
        "agents_online": agents_online if position is not None else None,
        "business_hours_open": business_hours_open,
        "csat_requested": conversation.csat_requested_at is not None,
    }


def queue_position_frame(
    conversation: Conversation, *, agents_online: int
) -> dict[str, Any] | None:
    """The ``queue.position`` frame for a conversation waiting for an agent in live chat, or
    None when it is not in the queue (another state, or an email follow-up)."""
    if conversation.channel != Conversation.Channel.CHAT:
        return None
    position = queue_position(conversation=conversation)
    if position is None:
        return None
    return {
        "type": "queue.position",
        "conversation_id": conversation.pk,
        "position": position,
        "agents_online": agents_online,
    }


def _shopper_brief(shopper: Shopper) -> dict[str, Any]:
    return {
        "id": shopper.pk,
        "name": shopper.name,
        "email": shopper.email,
        "customer_id": shopper.customer_id,
    }


def conversation_summary(
    conversation: Conversation, *, last_message: Message | None = None
) -> dict[str, Any]:
    """The agent-side summary; ``conversation`` should have shopper and agent selected."""
    if last_message is None:
        last_message = (
            Message.objects.filter(conversation_id=conversation.pk, internal=False)
            .order_by("-seq")
            .first()
        )
    agent = conversation.assigned_agent
    return {
        "id": conversation.pk,
        "state": conversation.state,
        "channel": conversation.channel,
        "shopper": _shopper_brief(conversation.shopper),
        "assigned_agent": {"id": agent.pk, "name": agent_name(agent)} if agent else None,
        "last_seq": conversation.last_seq,
        "last_message": {
            "seq": last_message.seq,
            "author_kind": last_message.author_kind,
            "body": last_message.body[:200],
            "created_at": iso(last_message.created_at),
        }
        if last_message is not None
        else None,
        "queued_at": iso(conversation.queued_at),
        "created_at": iso(conversation.created_at),
        "updated_at": iso(conversation.updated_at),
        "page_url": conversation.page_url,
        "language": conversation.language,
        "labels": list(conversation.labels),
        "snoozed": conversation.snoozed_at is not None,
        "snoozed_until": iso(conversation.snoozed_until),
    }


def summary_by_id(conversation_id: int) -> dict[str, Any]:
    conversation = Conversation.objects.select_related("shopper", "assigned_agent").get(
        pk=conversation_id
    )
    return conversation_summary(conversation)


INBOX_VIEWS = ("unassigned", "mine", "all", "snoozed")


def inbox_queryset(
    *,
    view: str,
    agent_id: int | None,
    state: str | None = None,
    q: str | None = None,
    personal: bool = True,
    label: str | None = None,
) -> QuerySet[Conversation]:
    """The inbox's conversations. ``q`` searches the shopper's name, email and customer id;
    without ``personal`` (the viewer may not see every shopper's personal data) only the
    customer id, and names and emails in the agent's own conversations. ``label`` keeps the
    conversations that carry it. Snoozed conversations are in the ``snoozed`` view only."""
    qs = Conversation.objects.select_related("shopper", "assigned_agent")
    qs = qs.filter(snoozed_at__isnull=(view != "snoozed"))
    if label:
        qs = qs.filter(labels__contains=[label])
    if view == "unassigned":
        qs = qs.filter(state=Conversation.State.QUEUED)
    elif view == "mine":
        qs = qs.filter(assigned_agent_id=agent_id, state=Conversation.State.ASSIGNED)
    if state:
        qs = qs.filter(state=state)
    if q:
        by_person = (
            Q(shopper__email__icontains=q)
            | Q(shopper__first_name__icontains=q)
            | Q(shopper__last_name__icontains=q)
        )
        if not personal:
            by_person &= Q(assigned_agent_id=agent_id)
        qs = qs.filter(by_person | Q(shopper__customer_id__icontains=q))
    if view == "unassigned":
        return qs.order_by("queued_at", "pk")
    if view == "snoozed":
        return qs.order_by(F("snoozed_until").asc(nulls_last=True), "pk")
    return qs.order_by("-updated_at", "-pk")


def summaries(conversations: Iterable[Conversation]) -> list[dict[str, Any]]:
    """Summaries with their last public message fetched in one query."""
    rows = list(conversations)
    ids = [row.pk for row in rows]
    last: dict[int, Message] = {}
    if ids:
        for message in (
            Message.objects.filter(conversation_id__in=ids, internal=False)
            .order_by("conversation_id", "-seq")
            .distinct("conversation_id")
        ):
            last[message.conversation_id] = message
    return [conversation_summary(row, last_message=last.get(row.pk)) for row in rows]


def inbox_counts(*, agent_id: int | None) -> dict[str, int]:
    awake = Q(snoozed_at__isnull=True)
    counts = Conversation.objects.aggregate(
        unassigned=Count("pk", filter=awake & Q(state=Conversation.State.QUEUED)),
        mine=Count(
            "pk",
            filter=awake & Q(state=Conversation.State.ASSIGNED, assigned_agent_id=agent_id),
        ),
        all=Count("pk", filter=awake),
        snoozed=Count("pk", filter=Q(snoozed_at__isnull=False)),
    )
    return {key: int(value or 0) for key, value in counts.items()}


def inbox_default_view(*, agent_id: int) -> str:
    """The inbox view a console opens on: ``mine`` when conversations are assigned to the agent
    (a hand-off routed to them as they came online), else ``unassigned`` (the queue)."""
    mine = Conversation.objects.filter(
        assigned_agent_id=agent_id, state=Conversation.State.ASSIGNED
    ).exists()
    return "mine" if mine else "unassigned"


def inbox_snapshot(
    *,
    view: str,
    agent_id: int | None,
    state: str | None = None,
    q: str | None = None,
    limit: int = 50,
    personal: bool = True,
    label: str | None = None,
) -> dict[str, Any]:
    """The inbox frame; without ``personal``, shoppers' personal data shows only in the
    conversations assigned to ``agent_id``."""
    rows = inbox_queryset(
        view=view, agent_id=agent_id, state=state, q=q, personal=personal, label=label
    )[:limit]
    return {
        "type": "inbox.snapshot",
        "view": view,
        "conversations": [
            summary_for_viewer(row, viewer_id=agent_id, sees_all=personal)
            for row in summaries(rows)
        ],
        "counts": inbox_counts(agent_id=agent_id),
    }


def store_text(text: str) -> str:
    """A merchant's text (bot answer, article) with the store's figures filled in."""
    return commerce_selectors.store_text_render(text)


def article_text(article: KnowledgeArticle) -> str:
    """A knowledge-base article's body as shoppers read it (the bot's answer, the help page):
    the store's own figures filled in (``{free_shipping_threshold}`` → ``£40``, from
    ``commerce.selectors.store_text_render``)."""
    return commerce_selectors.store_text_render(article.body.strip())


def canned_responses() -> list[dict[str, Any]]:
    return [
        {"id": row.pk, "shortcut": row.shortcut, "title": row.title, "body": row.body}
        for row in CannedResponse.objects.order_by("shortcut")
    ]


def agent_loads() -> dict[int, int]:
    rows = (
        Conversation.objects.filter(state=Conversation.State.ASSIGNED)
        .values("assigned_agent_id")
        .annotate(n=Count("pk"))
    )
    return {row["assigned_agent_id"]: row["n"] for row in rows}


def agent_presence(status: str, *, live: bool) -> str:
    """What an agent's presence shows: ``offline`` without a live console connection
    (``chat.presence``), whatever the row says; else ``away`` if they chose it, or ``online``."""
    if not live:
        return AgentStatus.Status.OFFLINE
    return (
        AgentStatus.Status.AWAY if status == AgentStatus.Status.AWAY else AgentStatus.Status.ONLINE
    )


def agents_list() -> list[dict[str, Any]]:
    loads = agent_loads()
    statuses = {row.user_id: row for row in AgentStatus.objects.all()}
    live = presence.live_agent_ids()
    result = []
    for user in agents_queryset().order_by("pk"):
        status = statuses.get(user.pk)
        result.append(
            {
                "id": user.pk,
                "name": agent_name(user),
                "status": agent_presence(
                    status.status if status else AgentStatus.Status.OFFLINE, live=user.pk in live
                ),
                "load": loads.get(user.pk, 0),
                "capacity": status.capacity
                if status
                else AgentStatus._meta.get_field("capacity").default,
            }
        )
    return result


# --- Context panel -------------------------------------------------------------------------


def context_profile(shopper: Shopper) -> dict[str, Any]:
    totals = Order.objects.filter(shopper=shopper).aggregate(n=Count("pk"), spent=Sum("total"))
    return {
        "name": shopper.name,
        "email": shopper.email,
        "phone": shopper.phone,
        "customer_id": shopper.customer_id,
        "locale": shopper.locale,
        "country": shopper.country,
        "since": iso(shopper.created_at),
        "orders_count": int(totals["n"] or 0),
        "total_spent": str(totals["spent"]) if totals["spent"] is not None else "0.00",
    }


def context_recent_orders(shopper: Shopper) -> dict[str, Any]:
    orders = Order.objects.filter(shopper=shopper).order_by("-placed_at")[:5]
    return {
        "orders": [
            {
                "number": order.number,
                # What an agent reads: the label ("Partially refunded"), not the stored value.
                "status": str(order.get_status_display()),
                "total": str(order.total),
                "currency": order.currency,
                "placed_at": iso(order.placed_at),
            }
            for order in orders
        ]
    }


def context_recently_viewed(shopper: Shopper) -> dict[str, Any]:
    events = Event.objects.filter(shopper=shopper, name="Product Viewed").order_by("-timestamp")[
        :30
    ]
    seen: set[str] = set()
    items = []
    for event in events:
        props = event.properties if isinstance(event.properties, dict) else {}
        key = str(props.get("sku") or props.get("product_id") or props.get("name") or "")
        if not key or key in seen:
            continue
        seen.add(key)
        items.append(
            {
                "sku": str(props.get("sku") or props.get("product_id") or ""),
                "title": str(props.get("name") or props.get("title") or ""),
                "url": str(props.get("url") or ""),
                "image_url": str(props.get("image_url") or ""),
                "price": str(props.get("price") or ""),
                "viewed_at": iso(event.timestamp),
            }
        )
        if len(items) == 8:
            break
    return {"items": items}


def context_current_page(conversation: Conversation) -> dict[str, Any]:
    return {
        "url": conversation.page_url,
        "title": conversation.page_title,
        "at": iso(conversation.page_seen_at),
    }


def conversation_context(conversation: Conversation) -> list[dict[str, Any]]:
    """The context panel: the current page, then every registered section in order; titles
    in the active language (the agent's)."""
    sections: list[dict[str, Any]] = [
        {
            "key": "current_page",
            "title": gettext("Current page"),
            "data": context_current_page(conversation),
        }
    ]
    for section in registry.context_sections():
        try:
            data = dict(section.provider(conversation.shopper))
        except Exception:  # one app's broken section must not hide the others
            logger.exception("chat context section %s failed", section.key)
            sections.append(
                {
                    "key": section.key,
                    "title": gettext(section.title),
                    "data": {},
                    "error": "unavailable",
                }
            )
            continue
        sections.append({"key": section.key, "title": gettext(section.title), "data": data})
    return sections


def conversations_for_agent(*, agent_id: int) -> list[int]:
    return list(
        Conversation.objects.filter(
            assigned_agent_id=agent_id, state=Conversation.State.ASSIGNED
        ).values_list("pk", flat=True)
    )


@functools.lru_cache(maxsize=8)
def widget_strings(*, language: str) -> dict[str, str]:
    """The chat widget's labels in ``language``: its djangojs catalog as ``{msgid: text}``
    (``locale/<language>/LC_MESSAGES/djangojs.mo``; empty for English, whose msgids are the
    text), read as Django's JavaScriptCatalog reads it. Cached per process: the catalogs
    change only with a deploy."""
    view = JavaScriptCatalog()
    view.translation = DjangoTranslation(
        language, domain="djangojs", localedirs=[str(p) for p in settings.LOCALE_PATHS]
    )
    return {
        str(msgid): text
        for msgid, text in view.get_catalog().items()
        if isinstance(text, str) and msgid and text
    }


def help_articles(*, languages: Iterable[str]) -> list[KnowledgeArticle]:
    """The published articles of the help centre in the first of ``languages`` (the reader's,
    then the merchant's fallback) that has any; every published one when none has."""
    published = KnowledgeArticle.objects.filter(published=True).order_by("title")
    for language in languages:
        found = list(published.filter(language=language))
        if found:
            return found
    return list(published.order_by("language", "title"))


def help_article(*, slug: str, languages: Iterable[str]) -> KnowledgeArticle | None:
    """The published article ``slug`` in the first of ``languages`` it is written in, else in
    any language (``None``: no such published article)."""
    versions = {
        a.language: a
        for a in KnowledgeArticle.objects.filter(slug=slug, published=True).order_by("language")
    }
    return next((versions[lang] for lang in languages if lang in versions), None) or next(
        iter(versions.values()), None
    )
