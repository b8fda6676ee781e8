"""An intent classifier trained on the merchant's example phrases.

Method (chosen by measuring on ``data/dev.tsv``, see ``chat_bot_evaluate``): folded text
(``text.fold``) → TF-IDF of character n-grams of 2 to 5 within word boundaries (scikit-learn's
``char_wb`` analyser, sublinear term frequency) → multinomial logistic regression. Character
n-grams carry Turkish and Latvian inflections ("siparişim", "siparişimi"; "pasūtījums",
"pasūtījumu") and typos ("pasutijms") without a stemmer; training on a few hundred phrases
takes tens of milliseconds, classifying one message well under a millisecond. A second logistic
regression over the same features tells the message's language, so the reply can be given in
the language the shopper wrote in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from chat.nlu.text import fold

NGRAM_RANGE = (2, 5)
# Inverse regularisation: larger C gives sharper probabilities; chosen on the dev set.
C = 30.0
WORDS = True


@dataclass(frozen=True)
class Example:
    """One training phrase: ``text`` means ``intent``, written in ``language``."""

    text: str
    intent: str
    language: str


@dataclass(frozen=True)
class Ranked:
    intent: str
    score: float  # probability 0..1 among the known intents


@dataclass(frozen=True)
class Classification:
    """The best intents for one text, best first (at most three), and its language."""

    ranking: tuple[Ranked, ...]
    language: str

    @property
    def top(self) -> Ranked:
        return self.ranking[0]

    @property
    def runner_up(self) -> Ranked | None:
        return self.ranking[1] if len(self.ranking) > 1 else None


def _vectorizers() -> list[TfidfVectorizer]:
    chars = TfidfVectorizer(
        analyzer="char_wb", ngram_range=NGRAM_RANGE, sublinear_tf=True, dtype=np.float32
    )
    if not WORDS:
        return [chars]
    words = TfidfVectorizer(
        analyzer="word", ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32
    )
    return [chars, words]


class IntentClassifier:
    """Trained once from ``examples`` (at least one); immutable afterwards, so one instance may
    serve every thread of a process."""

    def __init__(self, examples: Sequence[Example]) -> None:
        texts = [fold(e.text) for e in examples]
        kept = [(t, e) for t, e in zip(texts, examples, strict=True) if t]
        self.intents = sorted({e.intent for _, e in kept})
        self.languages = sorted({e.language for _, e in kept})
        self._vectorizers = _vectorizers()
        features = (
            sparse.hstack(
                [v.fit_transform([t for t, _ in kept]) for v in self._vectorizers]
            ).tocsr()
            if kept
            else None
        )
        self._intent_model: LogisticRegression | None = None
        self._language_model: LogisticRegression | None = None
        # One BLAS/OpenMP thread: on a busy 2-core machine more threads made training 20x
        # slower (4.6 s instead of 0.25 s for 350 phrases) through oversubscription.
        with threadpool_limits(limits=1):
            if features is not None and len(self.intents) > 1:
                self._intent_model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
                self._intent_model.fit(features, [e.intent for _, e in kept])
            if features is not None and len(self.languages) > 1:
                self._language_model = LogisticRegression(C=C, max_iter=2000)
                self._language_model.fit(features, [e.language for _, e in kept])
        self._feature_blocks = self._blocks() if kept else []
        self._intent_classes: list[str] = []
        self._intent_weights: tuple[Any, Any] = (None, None)
        if self._intent_model is not None:
            self._intent_classes = [str(c) for c in self._intent_model.classes_]
            self._intent_weights = _weights(self._intent_model)
        self._language_names: list[str] = []
        self._language_weights: tuple[Any, Any] | None = None
        if self._language_model is not None:
            self._language_names = [str(c) for c in self._language_model.classes_]
            self._language_weights = _weights(self._language_model)

    def _blocks(self) -> list[tuple[Any, dict[str, int], Any, int]]:
        """Per vectorizer: its analyser, vocabulary, idf weights and column offset."""
        blocks = []
        offset = 0
        for vectorizer in self._vectorizers:
            vocabulary: dict[str, int] = vectorizer.vocabulary_
            blocks.append((vectorizer.build_analyzer(), vocabulary, vectorizer.idf_, offset))
            offset += len(vocabulary)
        return blocks

    def _logits(self, text: str, weights: tuple[Any, Any]) -> Any:
        """``features(text) @ coef.T + intercept`` computed from the fitted vocabularies and idf
        weights (sublinear tf, l2 norm per vectorizer: what ``TfidfVectorizer.transform`` does)
        without scikit-learn's per-call validation, which cost ten times the arithmetic for
        one short message. ``tests/chat/test_nlu.py`` checks it against ``predict_proba``."""
        coef_t, intercept = weights
        logits = np.array(intercept, dtype=np.float64)
        for analyzer, vocabulary, idf, offset in self._feature_blocks:
            counts: dict[int, int] = {}
            for gram in analyzer(text):
                index = vocabulary.get(gram)
                if index is not None:
                    counts[index] = counts.get(index, 0) + 1
            if not counts:
                continue
            indices = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
            values = tf * idf[indices]
            values /= np.sqrt(np.dot(values, values))
            logits += values @ coef_t[indices + offset]
        return logits

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        """One ``Classification`` per text (already folded or not: folding is idempotent).
        With fewer than two intents every text gets the one intent (score 1.0) or none."""
        if not texts:
            return []
        folded = [fold(t) for t in texts]
        if self._intent_model is None:
            only = tuple(Ranked(intent=i, score=1.0) for i in self.intents)
            language = self.languages[0] if self.languages else ""
            return [Classification(ranking=only, language=language) for _ in folded]
        intent_logits = np.vstack([self._logits(t, self._intent_weights) for t in folded])
        probabilities = _softmax(intent_logits)
        classes = self._intent_classes
        if self._language_weights is not None:
            language_logits = [self._logits(t, self._language_weights) for t in folded]
            languages = [self._language_names[int(np.argmax(row))] for row in language_logits]
        else:
            languages = [self.languages[0] if self.languages else ""] * len(folded)
        results: list[Classification] = []
        for row, text, language in zip(probabilities, folded, languages, strict=True):
            if not text:
                results.append(Classification(ranking=(Ranked("", 0.0),), language=""))
                continue
            order = np.argsort(-row)[:3]
            ranking = tuple(Ranked(intent=classes[i], score=float(row[i])) for i in order)
            results.append(Classification(ranking=ranking, language=language))
        return results


def _weights(model: LogisticRegression) -> tuple[Any, Any]:
    """(coef transposed to features x classes, intercept), with a binary model's single row of
    weights (for ``classes_[1]``) widened to two columns so that softmax and argmax apply."""
    coef_t = np.ascontiguousarray(model.coef_.T, dtype=np.float64)
    intercept = np.asarray(model.intercept_, dtype=np.float64)
    if coef_t.shape[1] == 1:
        coef_t = np.hstack([np.zeros_like(coef_t), coef_t])
        intercept = np.concatenate([[0.0], intercept])
    return coef_t, intercept


def _softmax(scores: Any) -> Any:
    """Row-wise softmax of logits: what ``LogisticRegression.predict_proba`` computes for a
    multinomial model (and, on ``[0, z]``, the sigmoid of a binary one)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)
