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
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from chat.nlu.text import fold

NGRAM_RANGE = (2, 5)
# Inverse regularisation: larger C gives sharper probabilities; chosen on the dev set.
C = 10.0


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


class IntentClassifier:
    """Trained once from ``examples`` (at least one); immutable afterwards, so one instance may
    serve every thread of a process."""

    def __init__(self, examples: Sequence[Example]) -> None:
        texts = [fold(e.text) for e in examples]
        kept = [(t, e) for t, e in zip(texts, examples, strict=True) if t]
        self.intents = sorted({e.intent for _, e in kept})
        self.languages = sorted({e.language for _, e in kept})
        self._vectorizer = TfidfVectorizer(
            analyzer="char_wb", ngram_range=NGRAM_RANGE, sublinear_tf=True, dtype=np.float32
        )
        features = self._vectorizer.fit_transform([t for t, _ in kept]) if kept else None
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
        features = self._vectorizer.transform(folded)
        logits = features @ self._intent_model.coef_.T + self._intent_model.intercept_
        if logits.shape[1] == 1:  # a binary model keeps one row of weights, for classes_[1]
            logits = np.hstack([np.zeros_like(logits), logits])
        probabilities = _softmax(logits)
        classes = [str(c) for c in self._intent_model.classes_]
        if self._language_model is not None:
            names = self._language_model.classes_
            scores = features @ self._language_model.coef_.T + self._language_model.intercept_
            if len(names) == 2:
                languages = [str(names[int(s > 0)]) for s in np.ravel(scores)]
            else:
                languages = [str(names[i]) for i in np.argmax(scores, axis=1)]
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


def _softmax(scores: Any) -> Any:
    """Row-wise softmax: what ``LogisticRegression.predict_proba`` computes for a multinomial
    model, done here directly on the sparse product so that no BLAS thread pool is involved
    (sub-millisecond for one message)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)
