"""Celery tasks of the correlator.

``correlator.sweep`` is what ingest hints and what beat runs every few seconds.
Its work is found in the dirty-trace table, never in the message, so a lost or
duplicated hint changes nothing. Stitching itself arrives with the correlator
issue; until then the sweep reports the backlog it would work on.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from correlator.services import sweep_backlog

logger = logging.getLogger(__name__)


@shared_task(name="correlator.sweep", ignore_result=True)
def sweep(**kwargs: Any) -> None:
    backlog = sweep_backlog()
    logger.info("correlator sweep: %d dirty traces waiting", backlog)
