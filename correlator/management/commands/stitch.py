"""``python manage.py stitch [--finalize-all]``: one sweep in the foreground, the
same code path as the Celery task."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from correlator.stitch.sweep import BATCH_SIZE, sweep_run


class Command(BaseCommand):
    help = "Stitch every dirty trace now; --finalize-all then marks every open trace final."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--finalize-all", action="store_true")
        parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            help="sweeping threads, each on its own connection (default LLMRUM_SWEEP_THREADS)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = sweep_run(
            now=timezone.now(),
            batch_size=options["batch_size"],
            finalize_all=options["finalize_all"],
            threads=options["threads"],
        )
        self.stdout.write(
            f"stitched {result.stitched} traces in {result.batches} batches, "
            f"finalized {result.finalized}, {result.seconds:.2f} s"
        )
