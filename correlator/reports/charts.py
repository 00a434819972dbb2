"""Small SVG charts drawn on the server: line charts over time, grouped bars and one
stacked bar. No JavaScript and nothing from a CDN; colours are SVG presentation
attributes (a Content-Security-Policy does not restrict those, unlike inline styles).

Every piece of text (titles, series names, labels) goes through ``escape``: series
and labels come from browsers and spans (model names, browsers). Each function
returns a ``SafeString`` a template can place as is.

A chart given ``links`` (one address per x position) wraps each point or bar of
that position in an SVG ``<a>``: a plain link, so drilling down needs no script
(the CSP allows none inline). A point's link holds a wider transparent circle, so
the target is easier to hit than the 2.5 px dot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"]
FONT = 'font-family="system-ui, sans-serif" font-size="11" fill="#374151"'
# A generous average width (px) of one character of the charts' 11 px system-ui text:
# SVG text does not wrap or measure itself, so labels are fitted by this estimate.
CHAR_PX = 6.6


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value``."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power: float = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power  # pragma: no cover


def axis_ceiling(largest: float, ticks: int = 4) -> float:
    """The top of a y axis: ``ticks`` equal nice steps reaching at least ``largest``."""
    return nice_ceiling(largest / ticks) * ticks if largest > 0 else 1.0


def number(value: float, unit: str = "") -> str:
    """A short axis or bar label: 1,250 ms, 0.35, 12%."""
    if unit == "%":
        return f"{value * 100:.0f}%" if value * 100 >= 10 or value == 0 else f"{value * 100:.1f}%"
    text = f"{value:,.0f}" if abs(value) >= 10 or value == 0 else f"{value:.2g}"
    return f"{text} {unit}" if unit else text


def _attr(value: float) -> str:
    return f"{value:.1f}"


def _linked(links: Sequence[str] | None, i: int, inner: str) -> str:
    """``inner`` inside a link to ``links[i]`` (escaped: it carries browser values such
    as model names), or as is without one."""
    if not links or i >= len(links) or not links[i]:
        return inner
    return f'<a class="drill" href="{escape(links[i])}">{inner}</a>'


def _svg(width: int, height: int, title: str, body: list[str]) -> SafeString:
    label = escape(title)
    return mark_safe(  # noqa: S308 - every text piece above was escaped
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" aria-label="{label}">'
        f"<title>{label}</title>" + "".join(body) + "</svg>"
    )


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f'<g class="legend-item"><rect x="{_attr(x)}" y="{_attr(y - 9)}" width="10" '
            f'height="10" fill="{colour}"/><text x="{_attr(x + 14)}" y="{_attr(y)}" {FONT}>'
            f"{escape(name)}</text></g>"
        )
        x += 24 + 7 * len(name)
    return out


def _y_axis(
    top: float, bottom: float, left: float, right: float, ceiling: float, unit: str
) -> list[str]:
    out = []
    ticks = 4
    for i in range(ticks + 1):
        value = ceiling * i / ticks
        y = bottom - (bottom - top) * i / ticks
        out.append(
            f'<line x1="{_attr(left)}" x2="{_attr(right)}" y1="{_attr(y)}" y2="{_attr(y)}" '
            f'stroke="#e5e7eb" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{_attr(left - 6)}" y="{_attr(y + 4)}" text-anchor="end" {FONT}>'
            f"{escape(number(value, unit))}</text>"
        )
    out.append(
        f'<line x1="{_attr(left)}" x2="{_attr(left)}" y1="{_attr(top)}" y2="{_attr(bottom)}" '
        f'stroke="#9ca3af" stroke-width="1"/>'
    )
    return out


def _x_labels(
    labels: Sequence[str], xs: Sequence[float], y: float, *, chart_width: float, most: int = 7
) -> list[str]:
    """Every ``k``-th label under its point, at most ``most`` of them; a label wider
    than the room between shown labels is cut with an ellipsis (the full text in its
    tooltip: model names side by side never overlap), and one that would pass the
    chart's right edge ends at its point instead of centring on it (the last tick
    is never clipped)."""
    if not labels:
        return []
    every = max(1, math.ceil(len(labels) / most))
    gap = abs(xs[1] - xs[0]) if len(xs) > 1 else chart_width
    room = max(int(gap * every / CHAR_PX) - 1, 3)
    out = []
    for i, (label, x) in enumerate(zip(labels, xs, strict=True)):
        if i % every:
            continue
        shown = label if len(label) <= room else label[: room - 1] + "…"
        half = CHAR_PX * len(shown) / 2
        anchor = "end" if x + half > chart_width - 2 else "middle"
        tip = f"<title>{escape(label)}</title>" if shown != label else ""
        out.append(
            f'<text class="x-label" x="{_attr(x)}" y="{_attr(y)}" text-anchor="{anchor}" {FONT}>'
            f"{tip}{escape(shown)}</text>"
        )
    return out


def _plot_box(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of the plotting area of a chart this size: the
    margins hold the axis labels."""
    return 64.0, width - 12.0, 30.0, height - 28.0


def line_chart(
    *,
    title: str,
    x_labels: Sequence[str],
    series: Sequence[Series],
    unit: str = "ms",
    width: int = 640,
    height: int = 240,
    links: Sequence[str] | None = None,
) -> SafeString:
    """One line per series over the same x positions; a missing value (None) breaks
    the line. Points are drawn too, so a lone value between gaps still shows, and
    link to ``links[i]`` when given."""
    box = _plot_box(width, height)
    left, right, top, bottom = box
    values = [v for s in series for v in s.values if v is not None]
    ceiling = axis_ceiling(max(values, default=0.0))
    n = len(x_labels)
    span = right - left

    def x_of(i: int) -> float:
        return left + (span / 2 if n == 1 else span * i / (n - 1))

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * min(v, ceiling) / ceiling

    body = _y_axis(top, bottom, left, right, ceiling, unit)
    body += _x_labels(x_labels, [x_of(i) for i in range(n)], bottom + 16, chart_width=width)
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        path: list[str] = []
        pen_down = False
        points = []
        for i, v in enumerate(s.values[:n]):
            if v is None:
                pen_down = False
                continue
            cx, cy = _attr(x_of(i)), _attr(y_of(v))
            path.append(f"{'L' if pen_down else 'M'}{cx} {cy}")
            tip = f"<title>{escape(s.name)}: {escape(number(v, unit))}</title>"
            dot = f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}">{tip}</circle>'
            if links:
                # Painted (fill set) but invisible, so it takes the click.
                hit = (
                    f'<circle class="hit" cx="{cx}" cy="{cy}" r="8" fill="{colour}" '
                    f'fill-opacity="0">{tip}</circle>'
                )
                dot = _linked(links, i, hit + dot)
            points.append(dot)
            pen_down = True
        body.append(f'<g class="series" data-series="{escape(s.name)}">')
        if path:
            body.append(
                f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        body += points
        body.append("</g>")
    return _finished(
        body, title=title, series=series, empty=not values, box=box, size=(width, height)
    )


def bar_chart(
    *,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
    width: int = 640,
    height: int = 240,
    links: Sequence[str] | None = None,
) -> SafeString:
    """Grouped vertical bars: one group per label, one bar per series in it, each
    bar with its value written above; a bar links to ``links[i]`` when given."""
    box = _plot_box(width, height)
    left, right, top, bottom = box
    values = [v for s in series for v in s.values if v is not None]
    ceiling = axis_ceiling(max(values, default=0.0))
    groups = max(len(labels), 1)
    slot = (right - left) / groups
    bar = max(2.0, slot * 0.8 / max(len(series), 1))
    body = _y_axis(top, bottom, left, right, ceiling, unit)
    xs = [left + slot * (i + 0.5) for i in range(len(labels))]
    body += _x_labels(labels, xs, bottom + 16, chart_width=width)
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        body.append(f'<g class="series" data-series="{escape(s.name)}">')
        for i, v in enumerate(s.values[: len(labels)]):
            if v is None:
                continue
            h = (bottom - top) * min(v, ceiling) / ceiling
            if v == 0:
                continue  # an empty step: no bar, no "0" label cluttering the axis
            x = left + slot * i + slot * 0.1 + bar * k
            body.append(
                _linked(
                    links,
                    i,
                    f'<rect x="{_attr(x)}" y="{_attr(bottom - h)}" width="{_attr(bar)}" '
                    f'height="{_attr(h)}" fill="{colour}"><title>{escape(labels[i])} '
                    f"{escape(s.name)}: {escape(number(v, unit))}</title></rect>",
                )
            )
            body.append(
                f'<text x="{_attr(x + bar / 2)}" y="{_attr(bottom - h - 3)}" '
                f'text-anchor="middle" {FONT}>{escape(number(v, unit))}</text>'
            )
        body.append("</g>")
    return _finished(
        body, title=title, series=series, empty=not values, box=box, size=(width, height)
    )


def _finished(
    body: list[str],
    *,
    title: str,
    series: Sequence[Series],
    empty: bool,
    box: tuple[float, float, float, float],
    size: tuple[int, int],
) -> SafeString:
    """A chart's closing: the note for an empty range, the legend, the svg element."""
    left, right, top, bottom = box
    if empty:
        body.append(
            f'<text x="{_attr((left + right) / 2)}" y="{_attr((top + bottom) / 2)}" '
            f'text-anchor="middle" {FONT}>no data in this range</text>'
        )
    body += _legend([s.name for s in series], left, 16)
    return _svg(size[0], size[1], title, body)


def stacked_bar(
    *,
    title: str,
    parts: Sequence[tuple[str, float | None]],
    unit: str = "ms",
    width: int = 640,
    height: int = 56,
) -> SafeString:
    """One horizontal bar split into its parts (negative or missing parts are left
    out); the legend names each part with its value."""
    left, right = 4.0, width - 4.0
    shown = [(name, v) for name, v in parts if v is not None and v > 0]
    total = sum(v for _, v in shown)
    body: list[str] = []
    x = left
    for k, (name, v) in enumerate(parts):
        if v is None or v <= 0 or total <= 0:
            continue
        w = (right - left) * v / total
        colour = PALETTE[k % len(PALETTE)]
        body.append(
            f'<rect class="part" data-part="{escape(name)}" x="{_attr(x)}" y="22" '
            f'width="{_attr(w)}" height="26" fill="{colour}">'
            f"<title>{escape(name)}: {escape(number(v, unit))}</title></rect>"
        )
        x += w
    if total <= 0:
        body.append(f'<text x="{_attr(left)}" y="40" {FONT}>not measured for this turn</text>')
    names = [f"{name} {number(v, unit)}" if v is not None else f"{name} —" for name, v in parts]
    body += _legend(names, left, 14)
    return _svg(width, height, title, body)


ROLE_COLOURS = {
    "browser": "#2563eb",
    "gateway": "#f97316",
    "model": "#16a34a",
    "service": "#6b7280",
}
MARK_COLOURS = ["#1d4ed8", "#c2410c", "#15803d", "#7e22ce"]


@dataclass(frozen=True)
class WaterfallRow:
    label: str
    depth: int
    role: str
    start_ms: float  # epoch ms, skew-corrected
    end_ms: float
    error: bool = False
    # ± ms the row's placement may be off (the browser span's clock skew uncertainty).
    uncertainty_ms: float = 0.0


def _uncertainty(
    row: WaterfallRow,
    x_of: Callable[[float], float],
    *,
    left: float,
    y: float,
    height: int,
    colour: str,
) -> str:
    """Translucent bands of ± the row's uncertainty around both of its ends (cut at
    the start of the time axis: the labels are left of it)."""
    if row.uncertainty_ms <= 0:
        return ""
    note = f"clock skew uncertainty ±{number(row.uncertainty_ms, 'ms')}"
    bands = []
    for at in (row.start_ms, row.end_ms):
        x0 = max(x_of(at - row.uncertainty_ms), left)
        x1 = x_of(at + row.uncertainty_ms)
        bands.append(
            f'<rect class="uncertainty" x="{_attr(x0)}" y="{_attr(y - 2)}" '
            f'width="{_attr(max(x1 - x0, 1.0))}" height="{height + 4}" fill="{colour}" '
            f'fill-opacity="0.25" stroke="{colour}" stroke-dasharray="2 2">'
            f"<title>{escape(note)}</title></rect>"
        )
    return "".join(bands)


SEPARATORS = " /:.,_-?&="


def time_ticks(span: float, most: int = 5) -> list[float]:
    """Round ticks from 0 for a time axis fitted to ``span``: a nice step (1, 2, 2.5 or
    5 times a power of ten) giving at most ``most`` intervals, the last tick the first
    at or past the span (a 2.9 s trace ends at 3,000 ms, not 5,000)."""
    if span <= 0 or not math.isfinite(span):
        return [0.0, 1.0]
    step = nice_ceiling(span / most)
    intervals = max(1, math.ceil(span / step - 1e-9))
    return [step * i for i in range(intervals + 1)]


def wrap_label(text: str, chars: int, lines: int = 2) -> list[str]:
    """``text`` in at most ``lines`` lines of at most ``chars`` characters, broken
    at a space, else after a slash or other separator, in the line's second half
    where there is one; a last line that still does not fit ends in an ellipsis
    (the full text goes in the label's tooltip)."""
    chars = max(chars, 4)
    out: list[str] = []
    rest = text
    while rest:
        if len(rest) <= chars:
            out.append(rest)
            break
        if len(out) == lines - 1:
            out.append(rest[: chars - 1] + "…")
            break
        at = rest.rfind(" ", 0, chars + 1)  # a space first: it is dropped at the break
        if at < chars // 2:
            at = max(rest.rfind(sep, 0, chars) for sep in SEPARATORS)
        cut = at + 1 if at >= chars // 2 else chars
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return out or [""]


@dataclass(frozen=True)
class MarkLabel:
    name: str
    at: float  # epoch ms
    x: float  # the mark's line
    text: str
    anchor: str  # "start": the text right of the line; "end": left of it
    row: int

    @property
    def box(self) -> tuple[float, float]:
        """(left, right) px the text takes, by the character estimate."""
        width = CHAR_PX * len(self.text)
        if self.anchor == "start":
            return self.x + 4, self.x + 4 + width
        return self.x - 4 - width, self.x - 4


def place_mark_labels(
    marks: Sequence[tuple[str, float]], x_of: Callable[[float], float], t0: float, width: float
) -> list[MarkLabel]:
    """Each mark's label (in the order given), placed by time: right of its line
    unless that would leave the chart (then left of it), in the first row above the
    axis where it overlaps no label already placed, so close first tokens never
    write over each other."""
    placed: dict[int, MarkLabel] = {}
    for i in sorted(range(len(marks)), key=lambda i: marks[i][1]):
        name, at = marks[i]
        x = x_of(at)
        text = f"{name} {number(at - t0, 'ms')}"
        anchor = "start" if x + 4 + CHAR_PX * len(text) <= width - 4 else "end"
        row = 0
        while True:
            label = MarkLabel(name, at, x, text, anchor, row)
            left, right = label.box
            if all(
                p.row != row or right + 8 <= p.box[0] or p.box[1] + 8 <= left
                for p in placed.values()
            ):
                break
            row += 1
        placed[i] = label
    return [placed[i] for i in range(len(marks))]  # in the order given (their colours)


def waterfall(
    *,
    title: str,
    rows: Sequence[WaterfallRow],
    marks: Sequence[tuple[str, float]] = (),
    width: int = 1200,
    row_height: int = 22,
    label_width: int = 420,
) -> SafeString:
    """Spans on one timeline: a row each, the label indented by depth (wrapped to two
    lines, the full name in its tooltip), the bar coloured by role, its duration
    written after it; ``marks`` (name, epoch ms) are dashed vertical lines across
    every row (the first tokens), labelled above the axis. The axis runs from the
    first start to a round tick just past the last end."""
    left, right = float(label_width), width - 70.0
    times = [r.start_ms for r in rows] + [r.end_ms for r in rows] + [at for _, at in marks]
    t0 = min(times, default=0.0)
    ticks = time_ticks(max(times, default=0.0) - t0)
    ceiling = ticks[-1]

    def x_of(at: float) -> float:
        return left + (right - left) * (at - t0) / ceiling

    labels = place_mark_labels(marks, x_of, t0, width)
    label_rows = max((m.row + 1 for m in labels), default=0)
    top = 40 + 14 * label_rows
    wrapped = [
        wrap_label(r.label, int((left - 14 - 14 * min(r.depth, 12)) / CHAR_PX)) for r in rows
    ]
    heights = [row_height + 13 * (len(lines) - 1) for lines in wrapped]
    height = top + max(sum(heights), row_height) + 10

    body = []
    for value in ticks:
        x = x_of(t0 + value)
        body.append(
            f'<line x1="{_attr(x)}" x2="{_attr(x)}" y1="{_attr(top - 6)}" y2="{_attr(height)}" '
            f'stroke="#e5e7eb" stroke-width="1"/>'
        )
        body.append(
            f'<text class="tick" x="{_attr(x)}" y="{_attr(top - 10)}" text-anchor="middle" '
            f"{FONT}>{escape(number(value, 'ms'))}</text>"
        )
    y = float(top)
    for row, lines, h in zip(rows, wrapped, heights, strict=True):
        indent = 6 + 14 * min(row.depth, 12)
        colour = "#dc2626" if row.error else ROLE_COLOURS.get(row.role, ROLE_COLOURS["service"])
        x = x_of(row.start_ms)
        w = max(x_of(row.end_ms) - x, 1.5)
        duration = number(row.end_ms - row.start_ms, "ms")
        text = "".join(
            f'<tspan x="{indent}" y="{_attr(y + 15 + 13 * i)}">{escape(line)}</tspan>'
            for i, line in enumerate(lines)
        )
        body.append(
            f'<g class="span-row" data-role="{escape(row.role)}">'
            f'<text class="span-name" x="{indent}" y="{_attr(y + 15)}" {FONT}>'
            f"<title>{escape(row.label)}</title>{text}</text>"
            f'<rect x="{_attr(x)}" y="{_attr(y + 4)}" width="{_attr(w)}" '
            f'height="{row_height - 8}" rx="2" fill="{colour}">'
            f"<title>{escape(row.label)} ({escape(row.role)}): {escape(duration)}</title></rect>"
            + _uncertainty(row, x_of, left=left, y=y + 4, height=row_height - 8, colour=colour)
            + f'<text x="{_attr(x + w + 4)}" y="{_attr(y + 15)}" {FONT}>{escape(duration)}</text>'
            "</g>"
        )
        y += h
    for k, label in enumerate(labels):
        colour = MARK_COLOURS[k % len(MARK_COLOURS)]
        text_x = label.x + 4 if label.anchor == "start" else label.x - 4
        line_top = 16 + 14 * label.row
        body.append(
            f'<g class="mark" data-mark="{escape(label.name)}">'
            f'<line x1="{_attr(label.x)}" x2="{_attr(label.x)}" y1="{_attr(line_top - 10)}" '
            f'y2="{_attr(height)}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="4 3"/>'
            f'<text x="{_attr(text_x)}" y="{_attr(line_top)}" text-anchor="{label.anchor}" '
            f"{FONT}>{escape(label.text)}</text></g>"
        )
    return _svg(width, height, title, body)
