"""``python manage.py check_traces [--app SLUG] [--since ISO]``: how many stitched
traces break each rule of cause and effect (DESIGN.md §10.4, ``correlator.stitch.invariants``),
with a few trace ids per rule. Exits 1 when any rule is broken, else 0."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from correlator.stitch.invariants import (
    BATCH_SIZE,
    RULES,
    TOLERANCE_MS,
    InvariantReport,
    traces_check,
)
from rumserver.models import Application


def parse_since(value: str) -> datetime:
    """An ISO 8601 date or date and time; UTC when it names no offset."""
    try:
        moment = parse_datetime(value)
        if moment is None and (day := parse_date(value)) is not None:
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"--since: {value!r} is not an ISO 8601 date or date and time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Count the stitched traces that break each trace invariant, with a few trace ids "
        f"per rule; exit 1 when any is broken. Tolerance {TOLERANCE_MS:g} ms. The TTFT "
        "comparisons allow the trace's clock_skew_uncertainty_ms; where it is null (the "
        "skew's error is unknown or unbounded) they allow none. Rules: "
        + "; ".join(f"{r.name}: {r.text}" for r in RULES)
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--app", help="one application's slug (default: every application)")
        parser.add_argument(
            "--since", type=str, help="traces that started at this ISO time or later (default: all)"
        )
        parser.add_argument(
            "--batch-size", type=int, default=BATCH_SIZE, help="traces read at a time"
        )
        parser.add_argument("--examples", type=int, default=5, help="trace ids shown per rule")

    def handle(self, *args: Any, **options: Any) -> None:
        apps = Application.objects.order_by("id")
        if options["app"]:
            apps = apps.filter(slug=options["app"])
            if not apps.exists():
                raise CommandError(f"no application with slug {options['app']!r}")
        since = parse_since(options["since"]) if options["since"] else None
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        report = traces_check(
            app_ids=list(apps.values_list("id", flat=True)),
            since_ms=since.timestamp() * 1000 if since else None,
            batch_size=options["batch_size"],
            examples=max(0, options["examples"]),
        )
        self._print(report)
        if report.broken:
            sys.exit(1)

    def _print(self, report: InvariantReport) -> None:
        width = max(len(rule.name) for rule in RULES)
        self.stdout.write(f"checked {report.checked} traces")
        for rule in RULES:
            count = report.counts[rule.name]
            line = f"{rule.name:<{width}}  {count:>8}"
            if report.examples[rule.name]:
                line += "  e.g. " + " ".join(report.examples[rule.name])
            self.stdout.write(line)
        broken = sum(1 for count in report.counts.values() if count)
        if broken:
            self.stderr.write(f"{broken} of {len(RULES)} rules broken")
        else:
            self.stdout.write("every rule holds")
