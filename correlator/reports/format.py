"""How the report pages write values: UTC times, milliseconds, percentages, counts,
and any JSON value as text. The templates only place these strings (Django escapes
them)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DASH = "—"


def when(value: datetime | float | None) -> str:
    """UTC date and time; a float is epoch ms."""
    if value is None:
        return DASH
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_ms(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def fmt_rate(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def fmt_number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return DASH
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def fmt_usd(value: float | None) -> str:
    """Dollars with cents, and below a dollar two significant digits (a turn costs
    fractions of a cent)."""
    if value is None:
        return DASH
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    digits = min(9, max(2, 1 - math.floor(math.log10(abs(value)))))
    return f"${value:.{digits}f}"


def cut_note(limit: int, what: str) -> str:
    """What a page says when it read only the newest ``limit`` rows of its range."""
    return (
        f"Many {what} in this range: the figures are of the newest {fmt_number(limit)} only. "
        "Choose a shorter range for all of them."
    )


def display_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass
class Figure:
    """One labelled value, formatted; ``previous`` is the same figure for the period
    before (empty when not compared), ``change`` how far it moved."""

    key: str
    label: str
    value: str
    previous: str = ""
    change: str = ""


def change(current: float | None, previous: float | None, *, points: bool = False) -> str:
    """How far a figure moved from the previous period: "+33%" of the previous value,
    or for a rate (``points``) "+1.2 pts" of percentage; empty when either is missing
    (or the previous value is 0: no share of nothing)."""
    if current is None or previous is None:
        return ""
    if points:
        moved = (current - previous) * 100
        return "±0 pts" if round(moved, 1) == 0 else f"{moved:+.1f} pts"
    if previous == 0:
        return ""
    moved = (current - previous) / abs(previous) * 100
    return "±0%" if round(moved) == 0 else f"{moved:+.0f}%"
