"""Times as numbers since the Unix epoch (UTC): the stitch reads timestamps as
integer microseconds, windows are cut at multiples of a step since the epoch, and
the read API takes no time before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_of(epoch_us: int) -> datetime:
    """Exact (integer arithmetic), unlike ``datetime.fromtimestamp`` of a float."""
    return EPOCH + timedelta(microseconds=epoch_us)


def epoch_us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)
