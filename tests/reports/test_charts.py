"""The SVG chart module: well-formed SVG, axes and labels, every text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from correlator.reports import charts

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<img src=x onerror=alert(1)> & "quoted" </script>'


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything not well-formed


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 1.0), (7, 10), (1.1, 2), (2.4, 2.5), (420, 500), (999, 1000), (1000, 1000), (3e6, 5e6)],
)
def test_nice_ceiling_rounds_up_to_1_2_2_5_5(value, expected):
    assert charts.nice_ceiling(value) == pytest.approx(expected)


def test_a_line_chart_has_axes_labels_and_one_path_per_series():
    svg = charts.line_chart(
        title="TTFT p50", x_labels=["10:00", "11:00", "12:00"],
        series=[charts.Series("client", [620, 700, 650]), charts.Series("server", [520, None, 510])],
    )  # fmt: skip
    root = parse(svg)
    assert root.get("role") == "img" and root.get("aria-label") == "TTFT p50"
    labels = texts(root)
    assert {"10:00", "11:00", "12:00", "client", "server"} <= set(labels)
    assert ["0 ms", "200 ms", "400 ms", "600 ms", "800 ms"] == labels[:5]  # four nice steps
    paths = list(root.iter(f"{SVG}path"))
    assert len(paths) == 2
    # A missing value breaks the line: the server series restarts with a move.
    assert paths[1].get("d").count("M") == 2 and "L" not in paths[1].get("d")
    assert len(list(root.iter(f"{SVG}circle"))) == 5


def test_a_chart_without_data_says_so():
    root = parse(charts.line_chart(title="t", x_labels=["a"], series=[charts.Series("s", [None])]))
    assert "no data in this range" in texts(root)


def test_every_text_of_a_chart_is_escaped():
    svg = charts.bar_chart(
        title=HOSTILE, labels=[HOSTILE, "ok"],
        series=[charts.Series(HOSTILE, [3, 4])],
    )  # fmt: skip
    assert "<img" not in svg and "<script" not in svg.lower() and "</script>" not in svg
    root = parse(svg)
    assert HOSTILE in texts(root)  # shown as text, unchanged
    assert root.get("aria-label") == HOSTILE


def test_bars_are_as_high_as_their_value():
    root = parse(charts.bar_chart(title="t", labels=["a", "b"],
                                  series=[charts.Series("n", [5, 10])], height=240))  # fmt: skip
    rects = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    heights = [float(r.get("height")) for r in rects]
    assert heights[1] == pytest.approx(2 * heights[0], abs=0.2)


def test_a_stacked_bar_splits_its_width_by_the_parts():
    root = parse(charts.stacked_bar(title="wait", width=408,
                                    parts=[("network", 100), ("gateway", 300), ("queue", None),
                                           ("model", -5)]))  # fmt: skip
    parts = {r.get("data-part"): float(r.get("width")) for r in root.iter(f"{SVG}rect")
             if r.get("data-part")}  # fmt: skip
    assert parts == {"network": pytest.approx(100.0), "gateway": pytest.approx(300.0)}
    assert "queue —" in texts(root)


def test_a_waterfall_places_spans_and_marks_on_one_timeline():
    rows = [
        charts.WaterfallRow("browser: POST /chat", 0, "browser", 1000.0, 2000.0),
        charts.WaterfallRow("gateway: POST /chat", 1, "gateway", 1040.0, 1800.0),
        charts.WaterfallRow(f"model: {HOSTILE}", 2, "model", 1090.0, 1770.0, error=True),
    ]
    svg = charts.waterfall(title="t", rows=rows, marks=[("client first token", 1620.0)],
                           width=1370, label_width=300)  # fmt: skip
    assert "<img" not in svg
    root = parse(svg)
    bars = [r for r in root.iter(f"{SVG}rect")]
    # 1,000 ms of spans on a 1,000 ms axis 1,000 px wide (1370 - 300 - 70).
    assert float(bars[0].get("x")) == pytest.approx(300.0)
    assert float(bars[0].get("width")) == pytest.approx(1000.0)
    assert float(bars[1].get("x")) == pytest.approx(340.0)
    assert bars[2].get("fill") == "#dc2626"  # an error span is red
    mark = next(g for g in root.iter(f"{SVG}g") if g.get("data-mark"))
    assert float(mark.find(f"{SVG}line").get("x1")) == pytest.approx(920.0)
    assert "client first token 620 ms" in texts(root)
    indents = [float(t.get("x")) for t in root.iter(f"{SVG}text") if t.get("class") == "span-name"]
    assert indents == [6.0, 20.0, 34.0]


def ticks_of(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]


@pytest.mark.parametrize(
    ("span", "ticks"),
    [
        (2900, [0, 1000, 2000, 3000]),  # not 5,000 ms for a 2.9 s trace
        (1820, [0, 500, 1000, 1500, 2000]),
        (1000, [0, 200, 400, 600, 800, 1000]),
        (1020, [0, 250, 500, 750, 1000, 1250]),
        (41, [0, 10, 20, 30, 40, 50]),
        (0, [0, 1]),
    ],
)
def test_a_time_axis_ends_at_the_round_tick_just_past_the_span(span, ticks):
    assert charts.time_ticks(span) == pytest.approx(ticks)
    assert len(ticks) <= 6 and ticks[-1] >= span


def test_a_waterfall_of_a_29_second_trace_ends_its_axis_at_3000_ms():
    rows = [charts.WaterfallRow("browser: POST /chat", 0, "browser", 0.0, 2900.0)]
    root = parse(charts.waterfall(title="t", rows=rows, width=1370, label_width=300))
    assert ticks_of(root) == ["0 ms", "1,000 ms", "2,000 ms", "3,000 ms"]
    bar = next(r for r in root.iter(f"{SVG}rect"))
    # 2,900 of 3,000 ms on the 1,000 px axis: the bar nearly fills it.
    assert float(bar.get("width")) == pytest.approx(1000 * 2900 / 3000, abs=0.1)


def test_a_long_span_name_wraps_with_the_full_name_in_its_tooltip():
    name = "browser: POST https://api.example.com/v1/chat/completions?model=" + "x" * 120
    rows = [
        charts.WaterfallRow(name, 0, "browser", 0.0, 1000.0),
        charts.WaterfallRow(f"gateway: {HOSTILE}", 1, "gateway", 10.0, 900.0),
    ]
    svg = charts.waterfall(title="t", rows=rows)
    assert "<img" not in svg
    root = parse(svg)
    label, hostile = [t for t in root.iter(f"{SVG}text") if t.get("class") == "span-name"]
    assert label.find(f"{SVG}title").text == name  # the whole name, on hover
    lines = [t.text or "" for t in label.iter(f"{SVG}tspan")]
    assert lines[0] == "browser: POST https://api.example.com/v1/chat/completions?"
    assert len(lines) == 2 and lines[1].endswith("…") and lines[1].startswith("model=xx")
    for line in lines:  # each line fits the 420 px name column at 6.6 px a character
        assert 6 + charts.CHAR_PX * len(line) <= 420 - 8
    assert [t.text for t in hostile.iter(f"{SVG}tspan")] == [f"gateway: {HOSTILE}"]
    # The wrapped row is taller: the next row's bar starts below the second line.
    first, second = [r for r in root.iter(f"{SVG}rect")]
    assert float(second.get("y")) - float(first.get("y")) == pytest.approx(22 + 13)


@pytest.mark.parametrize(
    ("text", "chars", "lines"),
    [
        ("short", 20, ["short"]),
        (
            "chat-gateway: POST /v1/chat/completions",
            20,
            ["chat-gateway: POST ", "/v1/chat/completions"],
        ),
        ("a" * 50, 20, ["a" * 20, "a" * 19 + "…"]),
    ],
)
def test_wrap_label_breaks_after_a_separator_and_cuts_the_last_line(text, chars, lines):
    assert charts.wrap_label(text, chars) == [line.rstrip() for line in lines]


def mark_boxes(root: ET.Element) -> list[tuple[float, float, float]]:
    """(y, left, right) of each first-token label, by the chart's character estimate."""
    out = []
    for g in root.iter(f"{SVG}g"):
        if g.get("data-mark"):
            text = g.find(f"{SVG}text")
            x, width = float(text.get("x")), charts.CHAR_PX * len(text.text or "")
            left = x if text.get("text-anchor") == "start" else x - width
            out.append((float(text.get("y")), left, left + width))
    return out


@pytest.mark.parametrize(
    "marks",
    [
        [("client first token", 1620.0), ("server first token", 1550.0),
         ("model first token", 1530.0)],  # close together: the golden turn's
        [("client first token", 1995.0), ("server first token", 1990.0)],  # at the end
        [("client first token", 1100.0), ("server first token", 1900.0)],  # far apart
    ],
)  # fmt: skip
def test_first_token_labels_never_overlap_and_stay_inside_the_chart(marks):
    rows = [charts.WaterfallRow("browser: POST /chat", 0, "browser", 1000.0, 2000.0)]
    root = parse(charts.waterfall(title="t", rows=rows, marks=marks, width=1200))
    boxes = mark_boxes(root)
    assert len(boxes) == len(marks)
    for i, (y, left, right) in enumerate(boxes):
        assert 0 <= left and right <= 1200
        for y2, left2, right2 in boxes[i + 1 :]:
            assert y != y2 or right + 8 <= left2 or right2 + 8 <= left
    # In the order given (each keeps its colour), whatever the order in time.
    assert [g.get("data-mark") for g in root.iter(f"{SVG}g") if g.get("data-mark")] == [
        name for name, _ in marks
    ]
    # The axis sits below the label rows.
    assert min(
        float(t.get("y")) for t in root.iter(f"{SVG}text") if t.get("class") == "tick"
    ) > max(y for y, _, _ in boxes)


@pytest.mark.parametrize(("largest", "top"), [(5, 8), (700, 800), (0.2, 0.2), (0, 1.0), (1, 1)])
def test_an_axis_has_four_nice_steps(largest, top):
    assert charts.axis_ceiling(largest) == pytest.approx(top)


def test_a_waterfall_draws_the_browser_spans_skew_uncertainty_at_both_ends():
    rows = [
        charts.WaterfallRow("browser: POST /chat", 0, "browser", 1000.0, 2000.0,
                            uncertainty_ms=50.0),
        charts.WaterfallRow("gateway: POST /chat", 1, "gateway", 1040.0, 1800.0),
    ]  # fmt: skip
    root = parse(charts.waterfall(title="t", rows=rows, width=1370, label_width=300))
    bands = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "uncertainty"]
    assert len(bands) == 2  # the gateway row has none
    start, end = bands
    # ± 50 ms on a 1,000 px axis for 1,000 ms; the start band is cut at the axis.
    assert (float(start.get("x")), float(start.get("width"))) == pytest.approx((300.0, 50.0))
    assert (float(end.get("x")), float(end.get("width"))) == pytest.approx((1250.0, 100.0))
    assert start.find(f"{SVG}title").text == "clock skew uncertainty ±50 ms"


def x_label_boxes(root: ET.Element) -> list[tuple[float, float]]:
    """(left, right) of each x label, by the chart's character estimate."""
    out = []
    for t in root.iter(f"{SVG}text"):
        if t.get("class") == "x-label":
            text = "".join(t.itertext()) if t.find(f"{SVG}title") is None else t[0].tail or ""
            x, width = float(t.get("x")), charts.CHAR_PX * len(text)
            left = {"middle": x - width / 2, "end": x - width}[t.get("text-anchor")]
            out.append((left, left + width))
    return out


def test_the_last_time_label_ends_inside_the_chart():
    labels = ["Dec 01 00:00", "Dec 02 00:00", "Dec 03 00:00", "Dec 04 00:00"]
    root = parse(charts.line_chart(title="t", x_labels=labels,
                                   series=[charts.Series("s", [1, 2, 3, 4])]))  # fmt: skip
    boxes = x_label_boxes(root)
    assert len(boxes) == 4 and boxes[-1][1] <= 640 and boxes[0][0] >= 0


def test_long_model_names_under_bars_are_cut_to_their_slot_with_the_name_on_hover():
    names = [f"meta-llama/Llama-3.1-{n}B-Instruct-FP8-dynamic" for n in (8, 70, 405)]
    names += ["gpt-4o-mini", HOSTILE]
    svg = charts.bar_chart(title="t", labels=names, series=[charts.Series("in", [1] * 5)])
    assert "<img" not in svg
    root = parse(svg)
    boxes = x_label_boxes(root)
    assert len(boxes) == 5
    for (_, right), (left, _) in zip(boxes, boxes[1:], strict=False):
        assert right <= left  # side by side, never over each other
    shown = [t for t in root.iter(f"{SVG}text") if t.get("class") == "x-label"]
    assert shown[3].find(f"{SVG}title") is None and shown[3].text == "gpt-4o-mini"
    assert shown[0].find(f"{SVG}title").text == names[0]  # cut, the full name on hover
    assert shown[0][0].tail.endswith("…") and shown[4].find(f"{SVG}title").text == HOSTILE
