"""Server-side SVG charts: well-formed, labelled for screen readers, text escaped."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from pipeline_app import charts
from pipeline_app.engine.histogram import Histogram

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = "<script>alert(1)</script>"


def parse(markup: str) -> ET.Element:
    root = ET.fromstring(markup)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.text and desc is not None and desc.text
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return root


def test_stage_split_stacks_three_parts_per_stage_and_marks_the_bottleneck() -> None:
    rows = [
        charts.StageSplit("fast", 0.001, 0.002, 0.0),
        charts.StageSplit("slow", 0.004, 0.020, 0.001, is_bottleneck=True),
    ]
    root = parse(charts.stage_split_chart(rows))
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(bars) == 6
    widths = [float(r.get("width", 0)) for r in bars]
    assert widths[4] > widths[1]  # slow computation is wider than fast computation
    assert "slow (bottleneck)" in "".join(root.itertext())


def test_histogram_bins_cover_every_value_with_ms_axis() -> None:
    bins = charts.bin_latencies([0.001, 0.002, 0.002, 0.010, 0.050])
    assert sum(count for _, _, count in bins) == 5
    assert bins[0][0] == 0 and bins[-1][1] >= 0.05
    root = parse(charts.histogram_chart(bins, note=" (sample)"))
    assert "latency, ms" in "".join(root.itertext())
    assert "5 items (sample)" in root.find(f"{SVG}desc").text  # type: ignore[union-attr]


def test_waterfall_draws_wait_and_work_segments_per_stage() -> None:
    row = charts.WaterfallRow(
        "first #0",
        {"a": [0.001, 0.002, 0, 0.001, 0.003], "b": [0.0, 0.001, 0, 0.003, 0.004]},
        0.004,
    )
    root = parse(charts.waterfall_chart([row], ["a", "b"]))
    segments = [r for r in root.iter(f"{SVG}rect") if "stage-" in (r.get("class") or "")]
    assert len(segments) >= 4  # legend + wait + work per stage
    work = [
        r for r in segments if r.get("class") == "stage-1" and r.find(f"{SVG}title") is not None
    ]
    assert work and float(work[0].get("x", 0)) > 120


def test_sparkline_and_line_chart_handle_gaps_and_empty_data() -> None:
    parse(charts.sparkline([0.01, None, 0.03], label="p95"))
    assert "no runs yet" in charts.sparkline([], label="p95")
    root = parse(
        charts.line_chart(
            {"p50": [0.01, 0.02], "p95": [0.02, None]},
            title="t",
            unit="ms",
            x_labels=["#1", "#2"],
            scale=1e3,
        )
    )
    assert len(list(root.iter(f"{SVG}polyline"))) == 2


def test_every_label_is_escaped() -> None:
    markup = charts.stage_split_chart([charts.StageSplit(HOSTILE, 0.1, 0.1, 0.1)])
    markup += charts.waterfall_chart([charts.WaterfallRow(HOSTILE, {}, 0.1)], [HOSTILE])
    markup += charts.sparkline([1.0], label=HOSTILE)
    markup += charts.line_chart({HOSTILE: [1.0]}, title=HOSTILE, unit=HOSTILE, x_labels=[HOSTILE])
    assert HOSTILE not in markup and "&lt;script&gt;" in markup


def test_durations_read_in_a_sensible_unit() -> None:
    assert charts.fmt_seconds(0.0000042) == "4 µs"
    assert charts.fmt_seconds(0.0123) == "12.3 ms"
    assert charts.fmt_seconds(2.5) == "2.5 s"
    assert charts.fmt_seconds(None) == "\u2013"


def test_slowest_stage_adds_queue_wait_computation_and_sending() -> None:
    from pipeline_app.templatetags.pipeline_app_tags import slowest_stage

    stages = {"a": [1e-4, 2e-4, 3e-3, 0, 3e-4], "b": [1e-3, 2e-3, 0, 0, 3e-3]}
    assert slowest_stage(stages) == "a (3.3 ms)"
    assert slowest_stage({}) == ""


def test_histogram_axis_is_labelled_from_the_fastest_to_the_slowest_latency() -> None:
    bins = [(0.020 + i * 0.008, 0.028 + i * 0.008, 1) for i in range(10)]  # 20 to 100 ms
    root = parse(charts.histogram_chart(bins))
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]
    y_axis, x_axis = ticks[:2], ticks[2:]
    assert y_axis == ["1", "0"]
    assert x_axis == ["20", "40", "60", "80", "100"]


def test_histogram_of_equal_latencies_is_a_narrow_window_around_them() -> None:
    latencies = Histogram()
    for _ in range(3):
        latencies.record(0.0005)
    bins = latencies.bins(30)
    assert len(bins) == 30 and sum(count for _, _, count in bins) == 3
    low, high = bins[0][0], bins[-1][1]
    assert 0 < low < 0.0005 < high and high - low < 0.0005 * 0.05
    (busy,) = [(b_low, b_high) for b_low, b_high, count in bins if count]
    assert busy[0] <= 0.0005 < busy[1]


def test_histogram_keeps_equal_width_bins_from_min_to_max() -> None:
    latencies = Histogram()
    for value in (0.01, 0.02, 0.02, 0.04):
        latencies.record(value)
    bins = latencies.bins(3)
    assert [count for _, _, count in bins] == [3, 0, 1]
    assert bins[0][0] == 0.01 and math.isclose(bins[-1][1], 0.04)


def tick_labels(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "tick"]


def test_numbers_are_plain_with_thousands_separators_never_scientific() -> None:
    assert charts.fmt_number(1000) == "1,000"
    assert charts.fmt_number(999.7) == "1,000"
    assert charts.fmt_number(50_000) == "50,000"
    assert charts.fmt_number(12.345) == "12.3"
    assert charts.fmt_number(0.125) == "0.125"
    assert charts.fmt_number(0.00001) == "0.00001"
    assert charts.fmt_number(0) == "0"
    assert charts.fmt_seconds(0.9999) == "1,000 ms"


def test_chart_axes_of_long_latencies_and_high_throughput_have_no_scientific_notation() -> None:
    split = parse(charts.stage_split_chart([charts.StageSplit("slow", 0.2, 0.5, 0.1)]))
    assert tick_labels(split)[-1] == "1,000"
    # a run of no items has nothing to scale to: its axis spans a second
    idle = charts.StageSplit("idle", 0.0, 0.0, 0.0)
    assert tick_labels(parse(charts.stage_split_chart([idle])))[-1] == "1,000"
    throughput = parse(
        charts.line_chart(
            {"throughput": [42_000.0, 48_500.0]}, title="t", unit="items/s", x_labels=["#1", "#2"]
        )
    )
    assert tick_labels(throughput)[0] == "50,000"
    latency = parse(
        charts.line_chart({"p95": [1.2, 1.9]}, title="t", unit="ms", x_labels=["#1"], scale=1e3)
    )
    labels = tick_labels(split) + tick_labels(throughput) + tick_labels(latency)
    assert not [label for label in labels if "e+" in label or "e-" in label], labels


def label_texts(root: ET.Element) -> list[ET.Element]:
    return [t for t in root.iter(f"{SVG}text") if t.get("class") == "label"]


def test_stage_label_column_fits_the_longest_name() -> None:
    name = "test-fail-every"
    root = parse(charts.stage_split_chart([charts.StageSplit(name, 0.001, 0.001, 0.0, True)]))
    (label,) = label_texts(root)
    assert label.text == f"{name} (bottleneck)"
    right_edge = float(label.get("x", 0))
    assert right_edge - charts._text_width(label.text) >= 0
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert float(bars[0].get("x", 0)) > right_edge


def test_a_stage_name_too_long_for_the_chart_is_cut_with_its_full_name_as_tooltip() -> None:
    name = "a-stage-with-a-very-long-name-that-goes-on-and-on-and-on"
    root = parse(charts.stage_split_chart([charts.StageSplit(name, 0.001, 0.001, 0.0)]))
    (label,) = label_texts(root)
    tooltip = label.find(f"{SVG}title")
    assert tooltip is not None and tooltip.text == name
    shown = label.text or tooltip.tail or ""
    assert shown.endswith("\u2026") and name.startswith(shown[:-1])
    assert float(label.get("x", 0)) - charts._text_width(shown) >= 0
    assert name in root.find(f"{SVG}desc").text  # type: ignore[union-attr]


def test_trend_of_a_single_run_draws_its_points_and_says_one_run() -> None:
    root = parse(
        charts.line_chart(
            {"p50": [0.01], "p95": [0.02]}, title="t", unit="ms", x_labels=["#7"], scale=1e3
        )
    )
    dots = [c for c in root.iter(f"{SVG}circle") if "dot" in (c.get("class") or "")]
    assert len(dots) == 2
    assert [t for t in tick_labels(root) if t.startswith("#")] == ["#7"]
    assert root.find(f"{SVG}desc").text.startswith("Over 1 run:")  # type: ignore[union-attr]
    spark = parse(charts.sparkline([0.01], label="p95"))
    assert "over the last 1 run:" in spark.find(f"{SVG}desc").text  # type: ignore[union-attr]
