"""Nudging the correlator after ingest commits, without ever waiting on the broker.

The hint is only a nudge: the correlator finds its work in the dirty-trace table,
and Celery beat sweeps every few seconds anyway. So a web process sends at most
one hint per ``LLMRUM_HINT_INTERVAL_SECONDS``, from a background thread, and a
broker that is down or slow costs a log line, never a failed or slow request.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from celery import current_app
from django.conf import settings

logger = logging.getLogger(__name__)

SWEEP_TASK = "correlator.sweep"


class HintSender:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._last = -1e9
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    def nudge(self) -> None:
        now = time.monotonic()
        if now - self._last < settings.LLMRUM_HINT_INTERVAL_SECONDS:
            return
        self._last = now
        self._ensure_thread()
        self._wake.set()

    def _ensure_thread(self) -> None:
        # gunicorn forks workers after import: each process needs its own thread.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="llmrum-hints", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                # By name: the project's Celery app (current once rumserver is loaded)
                # routes it to the correlator's task without ingest importing either.
                current_app.send_task(SWEEP_TASK, kwargs={}, retry=False, ignore_result=True)
                self.sent += 1
            except Exception as exc:  # any broker failure: the sweep will find the work
                self.failed += 1
                logger.warning("correlator hint not sent (%s); beat will sweep", exc)


hints = HintSender()
