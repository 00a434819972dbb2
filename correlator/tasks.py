"""Celery tasks of the correlator.

``correlator.sweep`` is what ingest hints and what beat runs every few seconds.
Its work is found in the dirty-trace table, never in the message, so a lost or
duplicated hint changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.utils import timezone

from correlator.retention import retention_run
from correlator.stitch.sweep import sweep_run
from rumserver.partitions import partitions_ensure

logger = logging.getLogger(__name__)


@shared_task(name="correlator.sweep", ignore_result=True)
def sweep(**kwargs: Any) -> None:
    result = sweep_run(now=timezone.now())
    logger.info(
        "correlator sweep: %d traces stitched in %d batches, %d finalized, %.3f s",
        result.stitched,
        result.batches,
        result.finalized,
        result.seconds,
    )


@shared_task(name="correlator.retention", ignore_result=True)
def retention(**kwargs: Any) -> None:
    result = retention_run(now=timezone.now())
    logger.info("retention: deleted %s, dropped %s", result.deleted, result.dropped)


@shared_task(name="correlator.partitions", ignore_result=True)
def partitions(**kwargs: Any) -> None:
    """The day partitions of the coming days (PostgreSQL; nothing elsewhere)."""
    made = partitions_ensure()
    if made:
        logger.info("partitions: made %s", made)
