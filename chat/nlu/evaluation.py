"""Measure the bot's understanding on the labelled sets in ``data/``.

``data/heldout.tsv`` is never used for tuning; ``data/dev.tsv`` is. Each line: language,
labels ("order_status", "order_status+returns", "handoff", "none"), text. A message counts as
correct when the bot's ``Understanding.label`` names exactly the expected intents (in any
order): every intent of a multi-intent message, one hand-off for any hand-off, nothing for an
out-of-scope message.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("heldout", "dev")


@dataclass(frozen=True)
class Labelled:
    language: str
    labels: frozenset[str]
    text: str

    @property
    def label(self) -> str:
        return "+".join(sorted(self.labels))


@dataclass(frozen=True)
class Outcome:
    item: Labelled
    predicted: str
    seconds: float

    @property
    def correct(self) -> bool:
        return frozenset(self.predicted.split("+")) == self.item.labels


def labelled_set_load(*, split: str) -> list[Labelled]:
    """The messages of ``split`` ("heldout" or "dev"); lines starting with "#" are comments,
    the first other line is the header."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    lines = (DATA_DIR / f"{split}.tsv").read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.strip() and not line.startswith("#")][1:]
    items: list[Labelled] = []
    for row in rows:
        language, labels, text = row.split("\t")
        items.append(Labelled(language=language, labels=frozenset(labels.split("+")), text=text))
    return items


def evaluate(items: Sequence[Labelled], predict: Callable[[str], str]) -> list[Outcome]:
    """Run ``predict`` (text → label) on each item, timing each call with a monotonic clock."""
    outcomes: list[Outcome] = []
    for item in items:
        started = time.perf_counter()
        predicted = "+".join(sorted(predict(item.text).split("+")))
        outcomes.append(
            Outcome(item=item, predicted=predicted, seconds=time.perf_counter() - started)
        )
    return outcomes


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by the nearest-rank method; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def _accuracy(outcomes: Sequence[Outcome]) -> str:
    right = sum(o.correct for o in outcomes)
    return f"{right:>3}/{len(outcomes):<3} {100.0 * right / len(outcomes):5.1f}%"


def report(outcomes: Sequence[Outcome], *, latencies: Sequence[float], errors: bool) -> str:
    """The printed report: accuracy overall, per language, per expected label; the confusion
    matrix (rows expected, columns predicted); latency p50/p99 in milliseconds; and, when
    ``errors``, each wrong message."""
    lines: list[str] = []
    lines.append(f"overall     {_accuracy(outcomes)}")
    by_language: dict[str, list[Outcome]] = defaultdict(list)
    by_label: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_language[outcome.item.language].append(outcome)
        by_label[outcome.item.label].append(outcome)
    lines.append("")
    lines.append("per language")
    for language in sorted(by_language):
        lines.append(f"  {language:<30} {_accuracy(by_language[language])}")
    lines.append("")
    lines.append("per intent (expected)")
    for label in sorted(by_label):
        cells = "  ".join(
            f"{lang}:{sum(o.correct for o in by_label[label] if o.item.language == lang)}"
            f"/{sum(1 for o in by_label[label] if o.item.language == lang)}"
            for lang in sorted(by_language)
        )
        lines.append(f"  {label:<30} {_accuracy(by_label[label])}   {cells}")
    lines.append("")
    lines.append("confusion matrix (rows: expected, columns: predicted)")
    expected = sorted(by_label)
    predicted = sorted({o.predicted for o in outcomes} | set(expected))
    short = {label: str(i + 1) for i, label in enumerate(predicted)}
    counts = Counter((o.item.label, o.predicted) for o in outcomes)
    lines.append(f"  {'':<34} " + " ".join(f"{short[p]:>3}" for p in predicted))
    for label in expected:
        row = " ".join(f"{counts[(label, p)] if counts[(label, p)] else '.':>3}" for p in predicted)
        lines.append(f"  {short[label] + ' ' + label:<34} {row}")
    columns = ", ".join(f"{short[p]}={p}" for p in predicted)
    lines.append(f"  columns: {columns}")
    lines.append("")
    ms = [1000.0 * s for s in latencies]
    lines.append(
        f"latency per message: p50 {percentile(ms, 50):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
        f"max {max(ms, default=0.0):.2f} ms over {len(ms)} classifications"
    )
    if errors:
        lines.append("")
        lines.append("errors")
        for outcome in outcomes:
            if not outcome.correct:
                lines.append(
                    f"  [{outcome.item.language}] {outcome.item.text!r}: expected "
                    f"{outcome.item.label}, got {outcome.predicted}"
                )
    return "\n".join(lines)
