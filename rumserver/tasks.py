"""Celery tasks of rumserver: ``rumserver.metric_rollups``, run by beat every minute,
and ``rumserver.scrape``, run by beat every ``LLMRUM_SCRAPE_INTERVAL_SECONDS`` when
``LLMRUM_SCRAPE_TARGETS`` is set."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from rumserver import metric_rollups as rollups
from rumserver.ingest.scrape import scrape_run

logger = logging.getLogger(__name__)


@shared_task(name="rumserver.scrape", ignore_result=True)
def scrape(**kwargs: Any) -> None:
    # A slow target must not outlive the interval: the next scrape is already due.
    timeout = min(10.0, settings.LLMRUM_SCRAPE_INTERVAL_SECONDS)
    result = scrape_run(targets=settings.LLMRUM_SCRAPE_TARGETS, now=timezone.now(), timeout=timeout)
    logger.info(
        "scrape: %d points from %d targets, %d failed",
        sum(result.stored.values()),
        len(result.stored),
        len(result.failed),
    )


@shared_task(name="rumserver.metric_rollups", ignore_result=True)
def metric_rollups(**kwargs: Any) -> None:
    """The minute and hour rollups of metric points stored since the last run (reads
    make the minutes they need themselves; the hours are made only here)."""
    periods = rollups.refresh_all()
    if periods:
        logger.info("metric rollups: %d periods made again", periods)
