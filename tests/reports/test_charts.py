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
    indents = [float(t.get("x")) for t in root.iter(f"{SVG}text") if t.text and ": " in t.text]
    assert indents[:3] == [6.0, 20.0, 34.0]


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
