"""``manage.py chat_bot_evaluate [--split heldout|dev] [--errors] [--repeat N]``

Prints the bot's accuracy on a labelled set (``chat/nlu/data``) per language and per intent,
the confusion matrix, and the latency of understanding one message (p50/p99, including the
version-stamp check against the database), with the configuration in the database: the
intents' example phrases, the hand-off phrases and the confidence threshold of ChatSettings.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chat.nlu import evaluation, understanding
from chat.services import chat_settings_get


class Command(BaseCommand):
    help = "Measure the chat bot's understanding on the held-out (default) or development set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--split", choices=evaluation.SPLITS, default="heldout")
        parser.add_argument(
            "--errors",
            action="store_true",
            help="List each wrong message (dev only: the held-out set's errors stay unread)",
        )
        parser.add_argument(
            "--repeat", type=int, default=5, help="Passes over the set for the latency figures"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        split: str = options["split"]
        if options["errors"] and split == "heldout":
            raise CommandError("--errors is for the dev set: held-out errors must not guide tuning")
        repeat: int = options["repeat"]
        if repeat < 1:
            raise CommandError("--repeat must be at least 1")
        settings_row = chat_settings_get(fresh=True)
        threshold = settings_row.bot_confidence_threshold
        handoff_phrases = [str(p) for p in settings_row.handoff_phrases or []]
        understanding.bot_model_reset()
        started = time.perf_counter()
        model = understanding.bot_model_get()
        build_ms = 1000.0 * (time.perf_counter() - started)

        def predict(text: str) -> str:
            return understanding.understand(
                text=text, threshold=threshold, handoff_phrases=handoff_phrases
            ).label

        items = evaluation.labelled_set_load(split=split)
        outcomes = evaluation.evaluate(items, predict)
        latencies = [o.seconds for o in outcomes]
        for _ in range(repeat - 1):
            latencies += [o.seconds for o in evaluation.evaluate(items, predict)]
        summary = understanding.model_summary(model)
        self.stdout.write(
            f"split {split}: {len(items)} messages; threshold {threshold}; "
            f"{len(summary['intents'])} intents in {', '.join(summary['languages'])}; "
            f"model built in {build_ms:.0f} ms"
        )
        self.stdout.write(
            evaluation.report(outcomes, latencies=latencies, errors=bool(options["errors"]))
        )
