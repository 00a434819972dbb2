"""Correlator services."""

from __future__ import annotations

from rumserver.models import DirtyTrace


def sweep_backlog() -> int:
    """How many traces wait for stitching."""
    return DirtyTrace.objects.count()
