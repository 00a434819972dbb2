"""``python manage.py demo_traffic --turns N [--app demo] [--days 7] [--seed S]``:
fill an application with realistic generated traffic through llmrum's own ingest,
then stitch it, so every report has something to show (README: "Demo")."""

from __future__ import annotations

import multiprocessing
import queue
import sys
import threading
import time
import traceback
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection, connections
from django.utils import timezone

from correlator.stitch.sweep import sweep_backlog, sweep_run
from demo.model_metrics import send_model_server_metrics
from demo.token import DEMO_SLUG
from demo.traffic import TrafficGenerator, TrafficOptions, TrafficResult, relaxed_commits
from rumserver.applications import application_create
from rumserver.models import Application


class _Bar:
    """tqdm when installed (it is pinned in requirements.txt), else a plain stderr bar."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.enabled, self.total, self.desc, self.n = enabled, total, desc, 0
        self._tqdm: Any = None
        if enabled:
            try:
                from tqdm import tqdm

                self._tqdm = tqdm(total=total, desc=desc, unit="turn", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.enabled:
            done = int(30 * self.n / max(1, self.total))
            sys.stderr.write(f"\r{self.desc}: [{'#' * done}{'.' * (30 - done)}] "
                             f"{self.n}/{self.total}")  # fmt: skip
            sys.stderr.flush()

    def set(self, n: int) -> None:
        self.update(n - self.n)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        elif self.enabled:
            sys.stderr.write("\n")


class Command(BaseCommand):
    help = "Fill an application with realistic generated chat traffic, then stitch it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--turns", type=int, required=True, help="browser chat turns")
        parser.add_argument("--app", default=DEMO_SLUG, help="application slug (default: demo)")
        parser.add_argument("--days", type=float, default=7.0, help="spread over the last days")
        parser.add_argument("--seed", type=int, default=None, help="the same seed, the same data")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
        parser.add_argument(
            "--workers", type=int, default=None,
            help="processes generating and ingesting side by side (default: 2, or 1 on an "
                 "in-memory database)",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        turns, days = options["turns"], options["days"]
        if turns < 1:
            raise CommandError("--turns must be at least 1")
        if not 0 < days <= 365:
            raise CommandError("--days must be between 0 and 365")
        app = Application.objects.filter(slug=options["app"]).first()
        if app is None:
            if options["app"] != DEMO_SLUG:
                raise CommandError(f"no application with slug {options['app']!r}")
            # The embedded default's demo application, as `serve` makes it.
            origins = ["http://127.0.0.1:8000", "http://localhost:8000"]
            app = application_create(name="Demo chat", slug=DEMO_SLUG, origins=origins).application
        show = not options["no_progress"]
        started = time.monotonic()
        now = timezone.now()
        # Forked workers have connections of their own: they cannot see an in-memory
        # database or the caller's open transaction (tests), so then it is one process.
        single = _in_memory_database() or connection.in_atomic_block
        workers = 1 if single else options["workers"] or 2
        workers = max(1, min(workers, turns))
        bar = _Bar(turns, "ingest", show)
        try:
            if workers == 1:
                generator = TrafficGenerator(
                    app, TrafficOptions(turns=turns, days=days, seed=options["seed"]), now
                )
                result = generator.run(progress=bar.update)
            else:
                result = _run_workers(app, turns, days, options["seed"], now, workers, bar)
        finally:
            bar.close()
        ingested = time.monotonic() - started

        relaxed_commits()
        backlog = sweep_backlog()
        stitch_bar = _Bar(backlog, "stitch", show)
        stop = threading.Event()
        watcher = None
        if show and not _in_memory_database():
            watcher = threading.Thread(
                target=_watch_backlog, args=(stitch_bar, backlog, stop), daemon=True
            )
            watcher.start()
        try:
            sweep = sweep_run(now=timezone.now(), finalize_all=True)
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=5)
            stitch_bar.set(backlog)
            stitch_bar.close()
        # After the stitch: the servers' load includes the demo's own stored requests.
        metric_points = send_model_server_metrics(app, days=days, now=now, seed=options["seed"])
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(result.outcomes.items()))
        self.stdout.write(
            f"demo_traffic: {result.turns} turns in {result.sessions} sessions for "
            f"{app.slug!r} ({outcomes}); {result.spans} spans, {result.server_only_traces} "
            f"server-only traces, {result.scores} scores, {metric_points} model-server metric points; ingested in {ingested:.1f} s, "
            f"{sweep.stitched} traces stitched in {sweep.seconds:.1f} s"
        )


def _run_workers(
    app: Application, turns: int, days: float, seed: int | None, now: Any, workers: int, bar: _Bar
) -> TrafficResult:
    """Generate and ingest in ``workers`` forked processes, each with its own database
    connection and its share of the turns; the parent shows their progress."""
    context = multiprocessing.get_context("fork")
    messages: Any = context.Queue()
    connections.close_all()  # never share a connection with the children
    shares = [turns // workers + (i < turns % workers) for i in range(workers)]
    children = [
        context.Process(
            target=_worker,
            args=(
                app.pk,
                TrafficOptions(turns=n, days=days, seed=None if seed is None else seed * 1000 + i),
                now,
                messages,
            ),
            daemon=True,
        )  # fmt: skip
        for i, n in enumerate(shares)
    ]
    for child in children:
        child.start()
    total = TrafficResult()
    done = 0
    try:
        while done < workers:
            try:
                kind, value = messages.get(timeout=5)
            except queue.Empty:
                if any(c.exitcode not in (None, 0) for c in children):
                    raise CommandError("a demo_traffic worker died") from None
                continue
            if kind == "progress":
                bar.update(value)
            elif kind == "error":
                raise CommandError(f"a demo_traffic worker failed:\n{value}")
            else:
                done += 1
                for name in ("turns", "sessions", "spans", "server_only_traces", "scores",
                             "events"):  # fmt: skip
                    setattr(total, name, getattr(total, name) + getattr(value, name))
                for outcome, n in value.outcomes.items():
                    total.outcomes[outcome] = total.outcomes.get(outcome, 0) + n
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()
    return total


def _worker(app_pk: int, options: TrafficOptions, now: Any, messages: Any) -> None:
    try:
        app = Application.objects.get(pk=app_pk)
        generator = TrafficGenerator(app, options, now)
        result = generator.run(progress=lambda n: messages.put(("progress", n)))
        messages.put(("done", result))
    except BaseException:
        messages.put(("error", traceback.format_exc()))
    finally:
        connections.close_all()


def _in_memory_database() -> bool:
    name = str(connection.settings_dict.get("NAME") or "")
    return connection.vendor == "sqlite" and (name == ":memory:" or "mode=memory" in name)


def _watch_backlog(bar: _Bar, total: int, stop: threading.Event) -> None:
    """Move the stitch bar from another connection while the sweep runs."""
    from django.db import connection as own

    try:
        while not stop.wait(0.5):
            bar.set(max(0, total - sweep_backlog()))
    except Exception:
        pass  # a progress bar never fails the command
    finally:
        own.close()
