"""The chat bot: understand a shopper's message (``chat.nlu``) and produce the reply.

Understanding is trained on what the merchant configures in the admin (``BotIntent`` example
phrases per language, knowledge-base articles, ``ChatSettings.handoff_phrases``) and on intents
other apps register through ``chat.registry``. Below ``ChatSettings.bot_confidence_threshold``
the bot does not guess: it asks to clarify (the caller counts that as a failure and hands off
after ``bot_max_failures``). What the bot says comes from the merchant's data in the language the
shopper wrote in (``BotIntent.answer``, articles); the few built-in sentences go through gettext.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils import translation
from django.utils.translation import gettext as _

from chat import registry, selectors
from chat.models import BotIntent, ChatSettings, Conversation, KnowledgeArticle
from chat.nlu.understanding import KB_KIND, BotModel, Understanding, bot_model_get, understand
from chat.services.language import language_normalise, translate
from commerce.models import Order

ORDER_NUMBER_RE = re.compile(r"#?\b([A-Za-z]{0,4}-?\d{3,}[A-Za-z0-9-]*)\b")
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
MAX_INTENT_LABEL = 64  # Message.intent's length


@dataclass(frozen=True)
class BotReply:
    text: str
    intent: str = ""
    confidence: float = 0.0
    handoff: bool = False
    failed: bool = False
    # The language the reply is in: the conversation's, else the one the message is written in
    # (the caller keeps it on a conversation that has none yet), else the merchant's fallback.
    language: str = ""


def _format_orders(orders: Sequence[Order]) -> str:
    return "\n".join(
        _("Order %(number)s: %(status)s (placed %(placed)s, total %(total)s %(currency)s)")
        % {
            "number": o.number,
            "status": o.get_status_display().lower(),
            "placed": f"{o.placed_at:%Y-%m-%d}",
            "total": o.total,
            "currency": o.currency,
        }
        for o in orders
    )


def _article_text(article: KnowledgeArticle) -> str:
    return selectors.article_text(article)


def article_in(article: KnowledgeArticle, languages: Sequence[str]) -> KnowledgeArticle | None:
    """The published version of ``article`` (same slug) in the first of ``languages`` it is
    written in, else ``article`` itself if published (``None``: not published)."""
    versions = {
        a.language: a for a in KnowledgeArticle.objects.filter(slug=article.slug, published=True)
    }
    return next((versions[lang] for lang in languages if lang in versions), None) or (
        article if article.published else None
    )


def _order_status(conversation: Conversation, text: str, intent: BotIntent | None) -> BotReply:
    template = (intent.answer if intent and intent.answer else "") or "{orders}"
    email = EMAIL_RE.search(text)
    text_without_email = EMAIL_RE.sub(" ", text)
    number = ORDER_NUMBER_RE.search(text_without_email)
    if email and number:
        order = Order.objects.filter(
            number__iexact=number.group(1), email__iexact=email.group(0)
        ).first()
        if order is None:
            order = Order.objects.filter(
                number__iexact=number.group(1), shopper__email__iexact=email.group(0)
            ).first()
        if order is None:
            return BotReply(
                text=_(
                    "I couldn't find an order with that number and email address. "
                    "Please check both, or ask for a person."
                ),
                intent="order_status",
                confidence=1.0,
                failed=True,
            )
        return BotReply(
            text=template.replace("{orders}", _format_orders([order])),
            intent="order_status",
            confidence=1.0,
        )
    shopper = conversation.shopper
    if shopper.customer_id:
        orders = list(Order.objects.filter(shopper=shopper).order_by("-placed_at")[:3])
        if orders:
            return BotReply(
                text=template.replace("{orders}", _format_orders(orders)),
                intent="order_status",
                confidence=1.0,
            )
        return BotReply(
            text=_("I can't see any orders on your account yet."),
            intent="order_status",
            confidence=1.0,
        )
    return BotReply(
        text=_(
            "I can look that up. Please send your order number and the email address you "
            'ordered with, e.g. "1001 ada@example.com".'
        ),
        intent="order_status",
        confidence=1.0,
    )


def _intent_row(model: BotModel, key: str, languages: Sequence[str]) -> BotIntent | None:
    """The merchant's row for ``key`` in the first of ``languages`` it exists in, else any."""
    for language in languages:
        row = model.intents.get((key, language))
        if row is not None:
            return row
    return next((row for (k, _lang), row in sorted(model.intents.items()) if k == key), None)


def _answer_one(
    *,
    model: BotModel,
    key: str,
    languages: Sequence[str],
    conversation: Conversation,
    text: str,
    settings_row: ChatSettings,
) -> BotReply:
    kind = model.kinds.get(key, "")
    if kind == KB_KIND:
        versions = model.articles[key]
        article = next((versions[lang] for lang in languages if lang in versions), None)
        return BotReply(text=_article_text(article or next(iter(versions.values()))), intent=key)
    row = _intent_row(model, key, languages)
    if kind == BotIntent.Kind.ORDER_STATUS:
        return _order_status(conversation, text, row)
    if kind == BotIntent.Kind.ARTICLE:
        rows = [_intent_row(model, key, [lang]) for lang in languages] + [row]
        found = (article_in(r.article, languages) for r in rows if r and r.article is not None)
        article = next((a for a in found if a is not None), None)
        if article is None:
            return BotReply(text=_said(settings_row.unsupported_message), intent=key)
        return BotReply(text=_article_text(article), intent=key)
    if kind == BotIntent.Kind.REGISTERED:
        handler = registry.bot_intent(key)
        answer = None
        if handler is not None:
            answer = handler.handler(
                registry.BotRequest(
                    shopper=conversation.shopper,
                    conversation=conversation,
                    text=text,
                    language=languages[0],
                )
            )
        if not answer:
            return BotReply(text=_said(settings_row.unsupported_message), intent=key)
        if row is not None and row.answer and "{answer}" in row.answer:
            answer = row.answer.replace("{answer}", answer)
        return BotReply(text=answer, intent=key)
    answer_text = row.answer if row is not None else ""
    answer_text = answer_text.replace("{name}", conversation.shopper.first_name or "").strip()
    answer_text = selectors.store_text(answer_text)
    return BotReply(text=answer_text or _said(settings_row.unsupported_message), intent=key)


def _said(text: str) -> str:
    """A chat setting's sentence in the active language (a merchant's own text: as written)."""
    return translate(text, language=translation.get_language() or "")


def bot_understand(*, text: str, settings_row: ChatSettings) -> Understanding:
    """What ``text`` asks for with the merchant's current configuration (no side effects)."""
    return understand(
        text=text,
        threshold=settings_row.bot_confidence_threshold,
        handoff_phrases=[str(p) for p in settings_row.handoff_phrases or []],
    )


def bot_answer(*, conversation: Conversation, text: str, settings_row: ChatSettings) -> BotReply:
    """The bot's reply to ``text`` in ``conversation`` (no side effects).

    A hand-off (asked for, or anger, urgency, a payment problem) comes first; then an order
    number with an email address, which is unambiguous whatever the wording; then each intent
    the message asks for, the answers joined by a blank line (``intent`` then names them joined
    by "+"). Nothing certain: the clarifying question, marked ``failed``.

    Language: the conversation's (``Conversation.language``), else the one ``text`` is written
    in, else ``ChatSettings.fallback_language``; the reply's ``language`` says which. The
    merchant's answers are taken in that language first, then in the written one, then in the
    fallback; built-in sentences come from the catalogs in that language.
    """
    model = bot_model_get()
    understood = understand(
        text=text,
        threshold=settings_row.bot_confidence_threshold,
        handoff_phrases=[str(p) for p in settings_row.handoff_phrases or []],
        model=model,
    )
    fallback = language_normalise(settings_row.fallback_language) or "en"
    language = (
        language_normalise(conversation.language)
        or language_normalise(understood.language)
        or fallback
    )
    languages = list(
        dict.fromkeys(lang for lang in (language, understood.language, fallback, "en") if lang)
    )
    with translation.override(language):
        reply = _reply(
            model=model,
            understood=understood,
            languages=languages,
            conversation=conversation,
            text=text,
            settings_row=settings_row,
        )
    return BotReply(
        text=reply.text,
        intent=reply.intent,
        confidence=reply.confidence,
        handoff=reply.handoff,
        failed=reply.failed,
        language=language,
    )


def _reply(
    *,
    model: BotModel,
    understood: Understanding,
    languages: Sequence[str],
    conversation: Conversation,
    text: str,
    settings_row: ChatSettings,
) -> BotReply:
    if understood.handoff:
        return BotReply(
            text="", intent=understood.intents[0], confidence=understood.score, handoff=True
        )
    if EMAIL_RE.search(text) and ORDER_NUMBER_RE.search(EMAIL_RE.sub(" ", text)):
        row = next(
            (
                r
                for r in (
                    _intent_row(model, k, languages)
                    for k, kind in model.kinds.items()
                    if kind == BotIntent.Kind.ORDER_STATUS
                )
                if r is not None
            ),
            None,
        )
        return _order_status(conversation, text, row)
    if not understood.intents:
        return BotReply(
            text=_said(settings_row.clarify_message),
            intent="clarify",
            confidence=understood.score,
            failed=True,
        )
    replies = [
        _answer_one(
            model=model,
            key=key,
            languages=languages,
            conversation=conversation,
            text=text,
            settings_row=settings_row,
        )
        for key in understood.intents
    ]
    return BotReply(
        text="\n\n".join(r.text for r in replies if r.text),
        intent="+".join(r.intent for r in replies)[:MAX_INTENT_LABEL],
        confidence=min(understood.score, 1.0),
        failed=any(r.failed for r in replies),
    )
