"""The chat bot: match a shopper's text to a merchant-configured intent or a knowledge-base
article, with a confidence score, and produce the reply.

Matching is deliberately simple and explainable: text is normalised (case, accents, Turkish
dotless i), split into words, and scored against each intent's phrases and each article's
keywords and title by fuzzy word overlap. Below ``ChatSettings.bot_confidence_threshold`` the
bot does not guess: it asks to clarify (the caller counts that as a failure and hands off after
``bot_max_failures``). What the bot says is configured in the admin (``BotIntent.answer``,
articles), never hard-coded here; only the order lookup's formatting lives in code.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chat import registry
from chat.models import BotIntent, ChatSettings, Conversation, KnowledgeArticle
from commerce.models import Order

ORDER_NUMBER_RE = re.compile(r"#?\b([A-Za-z]{0,4}-?\d{3,}[A-Za-z0-9-]*)\b")
EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
WORD_RE = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "am",
        "i",
        "me",
        "my",
        "you",
        "your",
        "we",
        "our",
        "it",
        "to",
        "of",
        "in",
        "on",
        "for",
        "and",
        "or",
        "do",
        "does",
        "can",
        "could",
        "please",
        "pls",
        "hi",
        "hello",
        "hey",
        "what",
        "where",
        "when",
        "how",
        "which",
        "with",
        "about",
        "be",
        "this",
        "that",
        "there",
    ]
)


@dataclass(frozen=True)
class BotReply:
    text: str
    intent: str = ""
    confidence: float = 0.0
    handoff: bool = False
    failed: bool = False


def normalize(text: str) -> str:
    # Turkish dotless and dotted capital I have no decomposition: fold them by hand.
    text = text.replace("\u0131", "i").replace("\u0130", "i").lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    return WORD_RE.findall(normalize(text))


def _word_match(word: str, candidates: Sequence[str]) -> float:
    if word in candidates:
        return 1.0
    best = 0.0
    for candidate in candidates:
        if len(word) >= 4 and len(candidate) >= 4:
            ratio = difflib.SequenceMatcher(None, word, candidate).ratio()
            if ratio > best:
                best = ratio
    return best if best >= 0.8 else 0.0


def phrase_score(text_words: Sequence[str], phrase: str) -> float:
    """How well the shopper's words cover ``phrase`` (0..1): fuzzy word overlap, with stop
    words ignored unless the phrase is nothing but stop words."""
    phrase_words = words(phrase)
    significant = [w for w in phrase_words if w not in STOP_WORDS] or phrase_words
    if not significant or not text_words:
        return 0.0
    covered = sum(_word_match(w, text_words) for w in significant) / len(significant)
    # A long message that mentions one keyword in passing is less certain than a short one.
    text_significant = [w for w in text_words if w not in STOP_WORDS] or list(text_words)
    precision = sum(1.0 for w in text_significant if _word_match(w, significant) > 0) / len(
        text_significant
    )
    return round(covered * (0.75 + 0.25 * precision), 4)


def best_phrase_score(text_words: Sequence[str], phrases: Iterable[str]) -> float:
    return max((phrase_score(text_words, phrase) for phrase in phrases), default=0.0)


def handoff_requested(text: str, phrases: Iterable[str]) -> bool:
    """Does the text ask for a person? Whole-word match of any configured phrase."""
    text_norm = " ".join(words(text))
    for phrase in phrases:
        phrase_norm = " ".join(words(phrase))
        if phrase_norm and re.search(
            rf"(?<![a-z0-9]){re.escape(phrase_norm)}(?![a-z0-9])", text_norm
        ):
            return True
    return False


@dataclass(frozen=True)
class Candidate:
    key: str
    kind: str
    score: float
    intent: BotIntent | None = None
    article: KnowledgeArticle | None = None
    registered: registry.RegisteredIntent | None = None


def _candidates(text_words: Sequence[str], language: str) -> list[Candidate]:
    found: list[Candidate] = []
    configured_keys: set[str] = set()
    for intent in BotIntent.objects.filter(active=True).select_related("article"):
        configured_keys.add(intent.key)
        score = best_phrase_score(text_words, [str(p) for p in intent.phrases or []])
        if intent.language == language:
            score += 0.001  # prefer the conversation's language on a tie
        found.append(Candidate(key=intent.key, kind=intent.kind, score=score, intent=intent))
    for reg in registry.bot_intents():
        if reg.key in configured_keys:
            continue
        phrases = [p for values in reg.phrases.values() for p in values]
        found.append(
            Candidate(
                key=reg.key,
                kind=BotIntent.Kind.REGISTERED,
                score=best_phrase_score(text_words, phrases),
                registered=reg,
            )
        )
    for article in KnowledgeArticle.objects.filter(published=True):
        phrases = [str(k) for k in article.keywords or []] + [article.title, article.question]
        score = best_phrase_score(text_words, [p for p in phrases if p])
        found.append(
            Candidate(key=f"article:{article.slug}", kind="kb", score=score, article=article)
        )
    found.sort(key=lambda c: c.score, reverse=True)
    return found


def _format_orders(orders: Sequence[Order]) -> str:
    return "\n".join(
        f"Order {o.number}: {o.get_status_display().lower()} "
        f"(placed {o.placed_at:%Y-%m-%d}, total {o.total} {o.currency})"
        for o in orders
    )


def _article_text(article: KnowledgeArticle) -> str:
    return article.body.strip()


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
                text="I couldn't find an order with that number and email address. "
                "Please check both, or ask for a person.",
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
            text="I can't see any orders on your account yet.",
            intent="order_status",
            confidence=1.0,
        )
    return BotReply(
        text="I can look that up. Please send your order number and the email address you "
        'ordered with, e.g. "1001 ada@example.com".',
        intent="order_status",
        confidence=1.0,
    )


def bot_answer(*, conversation: Conversation, text: str, settings_row: ChatSettings) -> BotReply:
    """The bot's reply to ``text`` in ``conversation`` (no side effects)."""
    if handoff_requested(text, [str(p) for p in settings_row.handoff_phrases or []]):
        return BotReply(text="", intent="handoff", confidence=1.0, handoff=True)
    # An order number with an email address is unambiguous whatever the wording.
    if EMAIL_RE.search(text) and ORDER_NUMBER_RE.search(EMAIL_RE.sub(" ", text)):
        intent = BotIntent.objects.filter(kind=BotIntent.Kind.ORDER_STATUS, active=True).first()
        return _order_status(conversation, text, intent)

    text_words = words(text)
    candidates = _candidates(text_words, conversation.language or "en")
    best = candidates[0] if candidates else None
    if best is None or best.score < settings_row.bot_confidence_threshold:
        return BotReply(
            text=settings_row.clarify_message,
            intent="clarify",
            confidence=best.score if best else 0.0,
            failed=True,
        )
    confidence = min(best.score, 1.0)
    if best.kind == "kb" and best.article is not None:
        return BotReply(text=_article_text(best.article), intent=best.key, confidence=confidence)
    intent = best.intent
    if best.kind == BotIntent.Kind.HANDOFF:
        return BotReply(text="", intent=best.key, confidence=confidence, handoff=True)
    if best.kind == BotIntent.Kind.ORDER_STATUS:
        return _order_status(conversation, text, intent)
    if best.kind == BotIntent.Kind.ARTICLE and intent is not None and intent.article is not None:
        return BotReply(text=_article_text(intent.article), intent=best.key, confidence=confidence)
    if best.kind == BotIntent.Kind.REGISTERED:
        handler = best.registered or registry.bot_intent(best.key)
        answer = None
        if handler is not None:
            answer = handler.handler(
                registry.BotRequest(
                    shopper=conversation.shopper,
                    conversation=conversation,
                    text=text,
                    language=conversation.language or "en",
                )
            )
        if not answer:
            return BotReply(
                text=settings_row.unsupported_message, intent=best.key, confidence=confidence
            )
        if intent is not None and intent.answer and "{answer}" in intent.answer:
            answer = intent.answer.replace("{answer}", answer)
        return BotReply(text=answer, intent=best.key, confidence=confidence)
    answer_text = intent.answer if intent is not None else ""
    name = conversation.shopper.first_name or ""
    answer_text = answer_text.replace("{name}", name).strip()
    return BotReply(
        text=answer_text or settings_row.unsupported_message, intent=best.key, confidence=confidence
    )
