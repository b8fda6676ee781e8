"""What a shopper's message asks for, from the merchant's configuration.

The classifier is trained on every active ``BotIntent``'s phrases (one class per intent key,
all languages together), each published knowledge-base article that no intent answers
(class ``article:<slug>``, from its keywords, title and question), and each intent registered
through ``chat.registry`` without a configured ``BotIntent``. It is rebuilt lazily, in each
process, when the version stamp changes: the count and latest ``updated_at`` of intents and of
articles, and the registered intents' phrases. Checking the stamp costs one small aggregate
query per message; rebuilding costs tens of milliseconds, and happens only after a change
(the admin's save, a data migration, an app registering an intent). A bulk ``QuerySet.update``
bypasses ``updated_at`` and so is not seen until the next real save.

Decision (``understand``), in order:
1. a hand-off phrase from ``ChatSettings.handoff_phrases`` ("human", "insan*") → hand off;
2. the message and each of its clauses (``text.clauses``) are classified; any part whose best
   intent is a hand-off intent (anger, urgency, payment problems, asking for a person) with a
   score at or above the threshold → hand off;
3. otherwise the intents of the clauses scoring at or above the threshold, in the order the
   shopper wrote them (a greeting, ``SMALL_TALK``, is dropped when something else
   is asked); when no clause is
   certain, the whole message's best intent if it is;
4. otherwise nothing: the bot asks to clarify.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection

from chat import registry
from chat.models import BotIntent, KnowledgeArticle
from chat.nlu.classifier import Classification, Example, IntentClassifier, Ranked
from chat.nlu.text import clauses, fold, phrase_matches

ARTICLE_PREFIX = "article:"
KB_KIND = "kb"
# Intents dropped when the same message asks for something else ("hi, where is my order").
SMALL_TALK = frozenset(["greeting"])


@dataclass(frozen=True)
class BotModel:
    """One build of the classifier with the configuration it was built from."""

    stamp: Hashable
    classifier: IntentClassifier
    kinds: dict[str, str]  # intent key → BotIntent.Kind value, or "kb" for an article class
    intents: dict[tuple[str, str], BotIntent]  # (key, language) → the active row
    # "article:<slug>" → {language → that language's version}: one class for all versions.
    articles: dict[str, dict[str, KnowledgeArticle]]


@dataclass(frozen=True)
class Understanding:
    """What the bot understood of one message.

    ``intents``: keys to act on, in the shopper's order; ``("<handoff key>",)`` when handing
    off; empty when unsure. ``score``: the confidence (0..1) of the first intent, or of the best
    guess when unsure; 1.0 for a hand-off phrase. ``best`` and ``runner_up``: the whole message's
    two best intents with their scores. ``language``: the language the message is written in
    (as far as the example phrases tell). ``reason``: which rule decided.
    """

    intents: tuple[str, ...]
    score: float
    best: Ranked
    runner_up: Ranked | None
    language: str
    handoff: bool
    reason: str

    @property
    def label(self) -> str:
        """``"order_status+returns"``, ``"handoff"`` (any hand-off) or ``"none"``."""
        if self.handoff:
            return "handoff"
        return "+".join(self.intents) if self.intents else "none"


_lock = threading.Lock()
_current: BotModel | None = None


def bot_model_stamp() -> Hashable:
    """The version of the configuration the classifier depends on (see the module docstring):
    one query for the count and latest change of intents and of articles, plus the registered
    intents' phrases (in memory)."""
    intents = BotIntent._meta.db_table
    articles = KnowledgeArticle._meta.db_table
    with connection.cursor() as cursor:
        # Table names come from the models' metadata, not from input.
        cursor.execute(
            f"SELECT (SELECT count(*) FROM {intents}), (SELECT max(updated_at) FROM {intents}), "  # noqa: S608
            f"(SELECT count(*) FROM {articles}), (SELECT max(updated_at) FROM {articles})"
        )
        row = cursor.fetchone()
    registered = tuple(
        sorted(
            (r.key, tuple((lang, tuple(p)) for lang, p in sorted(r.phrases.items())))
            for r in registry.bot_intents()
        )
    )
    return (tuple(row or ()), registered)


def bot_model_build(*, stamp: Hashable) -> BotModel:
    """Train a classifier on the current configuration (see the module docstring)."""
    examples: list[Example] = []
    kinds: dict[str, str] = {}
    rows: dict[tuple[str, str], BotIntent] = {}
    answered_articles: set[str] = set()  # slugs an intent answers (in every language)
    for intent in BotIntent.objects.filter(active=True).select_related("article"):
        rows[(intent.key, intent.language)] = intent
        kinds.setdefault(intent.key, intent.kind)
        if intent.article is not None:
            answered_articles.add(intent.article.slug)
        examples += [
            Example(text=str(p), intent=intent.key, language=intent.language)
            for p in intent.phrases or []
        ]
    for reg in registry.bot_intents():
        if reg.key in kinds:
            continue
        kinds[reg.key] = BotIntent.Kind.REGISTERED
        examples += [
            Example(text=str(p), intent=reg.key, language=lang)
            for lang, phrases in reg.phrases.items()
            for p in phrases
        ]
    articles: dict[str, dict[str, KnowledgeArticle]] = {}
    for article in KnowledgeArticle.objects.filter(published=True):
        if article.slug in answered_articles:
            continue
        key = f"{ARTICLE_PREFIX}{article.slug}"
        articles.setdefault(key, {})[article.language] = article
        kinds[key] = KB_KIND
        phrases = [str(k) for k in article.keywords or []] + [article.title, article.question]
        examples += [Example(text=p, intent=key, language=article.language) for p in phrases if p]
    return BotModel(
        stamp=stamp,
        classifier=IntentClassifier(examples),
        kinds=kinds,
        intents=rows,
        articles=articles,
    )


def bot_model_get() -> BotModel:
    """The classifier for the current configuration: this process's build when the stamp has
    not changed, else a fresh one (built once even when several threads ask together)."""
    global _current
    stamp = bot_model_stamp()
    current = _current
    if current is not None and current.stamp == stamp:
        return current
    with _lock:
        current = _current
        if current is None or current.stamp != stamp:
            current = bot_model_build(stamp=stamp)
            _current = current
    return current


def understand(
    *,
    text: str,
    threshold: float,
    handoff_phrases: Sequence[str] = (),
    model: BotModel | None = None,
) -> Understanding:
    """Decide what ``text`` asks for (rules in the module docstring). ``threshold`` is
    ``ChatSettings.bot_confidence_threshold`` (0..1); ``model`` defaults to the current one."""
    model = model or bot_model_get()
    parts = clauses(text)
    to_classify = [fold(text), *parts] if len(parts) > 1 else [fold(text)]
    results = model.classifier.classify(to_classify)
    whole = results[0]
    best = whole.top
    runner_up = whole.runner_up
    language = whole.language
    handoff_key = next(
        (k for k, kind in model.kinds.items() if kind == BotIntent.Kind.HANDOFF), "handoff"
    )

    matched = phrase_matches(text, handoff_phrases)
    if matched is not None:
        return Understanding(
            intents=(handoff_key,),
            score=1.0,
            best=best,
            runner_up=runner_up,
            language=language,
            handoff=True,
            reason=f"hand-off phrase {matched!r}",
        )
    for result in results:
        top = result.top
        if top.score >= threshold and model.kinds.get(top.intent) == BotIntent.Kind.HANDOFF:
            return Understanding(
                intents=(top.intent,),
                score=top.score,
                best=best,
                runner_up=runner_up,
                language=language,
                handoff=True,
                reason="hand-off intent",
            )
    found = _clause_intents(results[1:], threshold) if len(results) > 1 else []
    if not found and best.score >= threshold and best.intent:
        found = [best]
    if len(found) > 1:
        found = [r for r in found if r.intent not in SMALL_TALK] or found
    if not found:
        return Understanding(
            intents=(),
            score=best.score,
            best=best,
            runner_up=runner_up,
            language=language,
            handoff=False,
            reason="below threshold",
        )
    return Understanding(
        intents=tuple(r.intent for r in found),
        score=found[0].score,
        best=best,
        runner_up=runner_up,
        language=language,
        handoff=False,
        reason="classifier" if len(found) == 1 else "classifier, several intents",
    )


def _clause_intents(results: Sequence[Classification], threshold: float) -> list[Ranked]:
    found: list[Ranked] = []
    for result in results:
        top = result.top
        if top.score >= threshold and top.intent not in {r.intent for r in found}:
            found.append(top)
    return found


def bot_model_reset() -> None:
    """Forget this process's build (tests use it to start from a known state)."""
    global _current
    with _lock:
        _current = None


def model_summary(model: BotModel) -> dict[str, Any]:
    """Counts for the admin and the evaluation command: intents and languages known."""
    return {
        "intents": list(model.classifier.intents),
        "languages": list(model.classifier.languages),
    }
