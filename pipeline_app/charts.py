"""Server-side SVG charts: no JavaScript, no network, readable by screen readers.

Every text that reaches the SVG passes through :func:`django.utils.html.escape` before the
markup is marked safe; numbers are formatted by this module. Each chart has ``role="img"``, a
``<title>`` and a ``<desc>`` that states the data in words.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PARTS = (("queue_wait", "Queue wait"), ("computation", "Computation"), ("transmission", "Send"))
_ids = itertools.count(1)


def fmt_seconds(value: float | None) -> str:
    """A duration in the most readable unit: µs, ms, s or min."""
    if value is None or not math.isfinite(value):
        return "\u2013"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{fmt_number(value * 1e3)} ms"
    if value < 120:
        return f"{fmt_number(value)} s"
    return f"{value / 60:.1f} min"


def fmt_number(value: float) -> str:
    """3 significant digits below 1,000, whole numbers with thousands separators from there on:
    never scientific notation ("1e+03")."""
    if not math.isfinite(value):
        return "\u2013"
    if value == 0:
        return "0"
    rounded = float(f"{value:.3g}")
    if abs(rounded) >= 1000:
        return f"{value:,.0f}"
    decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
    text = f"{rounded:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def plural(count: int, word: str) -> str:
    """``"1 run"``, ``"3 runs"``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _ms(value: float) -> str:
    return fmt_number(value * 1e3)


# Font sizes of dashboard.css (.pa-chart text, in viewBox units) and the average width of a
# character of the sans-serif font as a share of its size, to size label columns without a browser.
LABEL_FONT = 11
TICK_FONT = 10
CHAR_WIDTH = 0.62
MAX_LABEL_SHARE = 0.4


def _text_width(text: str, font_size: float = LABEL_FONT) -> float:
    return len(text) * font_size * CHAR_WIDTH


def _label_column(labels: Sequence[str], width: int, minimum: int) -> tuple[int, int]:
    """Width of a right-aligned label column fitting the longest label (up to a share of the
    chart) and the most characters a label may keep in it."""
    limit = int(width * MAX_LABEL_SHARE)
    longest = max((_text_width(label) for label in labels), default=0.0)
    column = max(minimum, min(limit, math.ceil(longest) + 12))
    return column, int((column - 12) / (LABEL_FONT * CHAR_WIDTH))


def _label(x: float, y: float, text: str, max_chars: int) -> str:
    """A right-anchored row label, cut with an ellipsis (full text in its tooltip) if too long."""
    if len(text) <= max_chars:
        return _text(x, y, text, anchor="end", css="label")
    short = text[: max(max_chars - 1, 1)] + "\u2026"
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="end" class="label">'
        f"<title>{escape(text)}</title>{escape(short)}</text>"
    )


def _svg(width: int, height: int, title: str, desc: str, body: str, css: str = "") -> SafeString:
    uid = f"pa-chart-{next(_ids)}"
    return mark_safe(
        f'<svg class="pa-chart {escape(css)}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{uid}-t {uid}-d" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{uid}-t">{escape(title)}</title><desc id="{uid}-d">{escape(desc)}</desc>'
        f"{body}</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", css: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}">{escape(text)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, css: str, tip: str = "") -> str:
    title = f"<title>{escape(tip)}</title>" if tip else ""
    return (
        f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(w, 0):.2f}" height="{h:.2f}" '
        f'class="{css}">{title}</rect>'
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def _x_axis(
    x0: float, x1: float, y: float, top: float, unit: str, ticks: int = 4, *, bottom: float = 0.0
) -> str:
    """Axis from ``x0`` to ``x1`` labelled ``bottom`` to ``top`` (seconds, shown in ms)."""
    parts = [f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" class="axis"/>']
    for i in range(ticks + 1):
        x = x0 + (x1 - x0) * i / ticks
        parts.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" class="axis"/>')
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        label = _ms(bottom + (top - bottom) * i / ticks)
        parts.append(_text(x, y + 16, label, anchor=anchor, css="tick"))
    parts.append(_text(x1, y + 30, unit, anchor="end", css="unit"))
    return "".join(parts)


def _legend(x: float, y: float, entries: Sequence[tuple[str, str]]) -> str:
    parts = []
    for css, label in entries:
        parts.append(_rect(x, y - 9, 10, 10, css) + _text(x + 14, y, label, css="legend"))
        x += 24 + 7 * len(label)
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class StageSplit:
    stage: str
    queue_wait: float
    computation: float
    transmission: float
    is_bottleneck: bool = False


def stage_split_chart(rows: Sequence[StageSplit], *, width: int = 640) -> SafeString:
    """Stacked horizontal bars per stage: average queue wait, computation and send time."""
    names = [f"{row.stage} (bottleneck)" if row.is_bottleneck else row.stage for row in rows]
    label_w, max_chars = _label_column(names, width, minimum=96)
    row_h, top = 26, 28
    height = top + row_h * len(rows) + 40
    plot = width - label_w - 16
    peak = _nice_max(max((r.queue_wait + r.computation + r.transmission for r in rows), default=0))
    body = [_legend(label_w, 14, [(f"part-{k}", label) for k, label in PARTS])]
    words = []
    for index, (row, name) in enumerate(zip(rows, names, strict=True)):
        y = top + index * row_h
        body.append(_label(label_w - 8, y + 15, name, max_chars))
        x = float(label_w)
        for key, label in PARTS:
            value = getattr(row, key)
            w = plot * value / peak
            body.append(
                _rect(x, y + 3, w, row_h - 8, f"part-{key}", f"{label}: {fmt_seconds(value)}")
            )
            x += w
        words.append(
            f"{name}: queue wait {fmt_seconds(row.queue_wait)}, computation "
            f"{fmt_seconds(row.computation)}, send {fmt_seconds(row.transmission)}"
        )
    body.append(_x_axis(label_w, label_w + plot, top + row_h * len(rows) + 2, peak, "ms"))
    return _svg(
        width, height, "Average time per item in each stage", "; ".join(words), "".join(body)
    )


def bin_latencies(values: Sequence[float], bins: int = 24) -> list[tuple[float, float, int]]:
    """Equal-width bins from 0 to the largest value."""
    if not values:
        return []
    top = _nice_max(max(values))
    width = top / bins
    counts = [0] * bins
    for value in values:
        counts[min(int(value / width), bins - 1) if width > 0 else 0] += 1
    return [(i * width, (i + 1) * width, counts[i]) for i in range(bins)]


def histogram_chart(
    bins: Sequence[tuple[float, float, int]], *, note: str = "", width: int = 640
) -> SafeString:
    """Bars of item counts per end-to-end latency range, x axis in milliseconds."""
    left, right, top, bottom = 48, 12, 12, 44
    height = 220
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((count for _, _, count in bins), default=0) or 1
    low = bins[0][0] if bins else 0.0
    high = bins[-1][1] if bins else 1.0
    span = (high - low) or 1.0
    body = []
    for b_low, b_high, count in bins:
        x = left + plot_w * (b_low - low) / span
        w = max(plot_w * (b_high - b_low) / span - 1, 1)
        h = plot_h * count / peak
        tip = f"{fmt_seconds(b_low)} to {fmt_seconds(b_high)}: {count} items"
        body.append(_rect(x, top + plot_h - h, w, h, "bar", tip))
    base = top + plot_h
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" class="axis"/>')
    body.append(_text(left - 6, top + 10, str(peak), anchor="end", css="tick"))
    body.append(_text(left - 6, base, "0", anchor="end", css="tick"))
    body.append(_x_axis(left, left + plot_w, base, high, "latency, ms", bottom=low))
    busiest = max(bins, key=lambda b: b[2]) if bins else None
    desc = f"{sum(b[2] for b in bins)} items{note}."
    if busiest:
        desc += f" Most items took {fmt_seconds(busiest[0])} to {fmt_seconds(busiest[1])}."
    return _svg(width, height, "End-to-end latency histogram", desc, "".join(body))


@dataclass(frozen=True, slots=True)
class WaterfallRow:
    label: str
    stages: Mapping[str, Sequence[float]]  # [queue_wait, computation, transmission, start, end]
    latency: float
    status: str = "ok"


def waterfall_chart(
    rows: Sequence[WaterfallRow], stage_order: Sequence[str], *, width: int = 720
) -> SafeString:
    """Per item, when each stage held it: queue wait (light) then processing (solid)."""
    label_w, max_chars = _label_column([row.label for row in rows], width, minimum=120)
    row_h, top = 20, 28
    height = top + row_h * len(rows) + 40
    plot = width - label_w - 16
    peak = _nice_max(max((r.latency for r in rows), default=0))
    colours = {name: f"stage-{i % 6}" for i, name in enumerate(stage_order)}
    legend = [(colours[name], name) for name in stage_order]
    body = [_legend(label_w, 14, legend[:4])]
    words = []
    for index, row in enumerate(rows):
        y = top + index * row_h
        body.append(_label(label_w - 8, y + 13, row.label, max_chars))
        body.append(
            f'<line x1="{label_w}" y1="{y + 9}" x2="{label_w + plot}" y2="{y + 9}" class="grid"/>'
        )
        for name in stage_order:
            values = row.stages.get(name)
            if not values or len(values) < 5:
                continue
            queue_wait, _, _, start, end = (float(v) for v in values[:5])
            x_wait = label_w + plot * max(start - queue_wait, 0) / peak
            x_start = label_w + plot * start / peak
            x_end = label_w + plot * end / peak
            css = colours.get(name, "stage-0")
            tip = f"{name}: waited {fmt_seconds(queue_wait)}, ran {fmt_seconds(end - start)}"
            body.append(_rect(x_wait, y + 5, x_start - x_wait, row_h - 10, f"{css} wait", tip))
            body.append(_rect(x_start, y + 3, max(x_end - x_start, 1), row_h - 6, css, tip))
        words.append(f"{row.label}: {fmt_seconds(row.latency)} end to end ({row.status})")
    body.append(_x_axis(label_w, label_w + plot, top + row_h * len(rows) + 2, peak, "ms"))
    return _svg(
        width,
        height,
        "Item waterfall: when each stage held the first and the slowest items",
        "; ".join(words),
        "".join(body),
        "waterfall",
    )


def _points(
    values: Sequence[float | None], x0: float, w: float, y0: float, h: float, peak: float
) -> list[tuple[float, float]]:
    count = max(len(values) - 1, 1)
    return [
        (x0 + w * i / count, y0 + h - h * v / peak) for i, v in enumerate(values) if v is not None
    ]


def _polyline(
    values: Sequence[float | None], x0: float, w: float, y0: float, h: float, peak: float
) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in _points(values, x0, w, y0, h, peak))


def sparkline(values: Sequence[float | None], *, label: str, width: int = 120) -> SafeString:
    """A tiny line of the last runs' values (e.g. p95 latency), newest on the right."""
    height = 28
    known = [v for v in values if v is not None]
    if not known:
        return mark_safe('<span class="muted">no runs yet</span>')
    peak = max(known) * 1.1 or 1.0
    points = _polyline(values, 2, width - 4, 2, height - 4, peak)
    last = known[-1]
    x_last = 2 + (width - 4) * (len(values) - 1) / max(len(values) - 1, 1)
    y_last = 2 + (height - 4) * (1 - last / peak)
    body = (
        f'<polyline points="{points}" class="line"/>'
        f'<circle cx="{x_last:.1f}" cy="{y_last:.1f}" r="2.5" class="dot"/>'
    )
    desc = (
        f"{label} over the last {plural(len(known), 'run')}: from {fmt_seconds(known[0])} "
        f"to {fmt_seconds(last)}, highest {fmt_seconds(max(known))}."
    )
    return _svg(width, height, label, desc, body, "spark")


def line_chart(
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    unit: str,
    x_labels: Sequence[str],
    scale: float = 1.0,
    width: int = 640,
) -> SafeString:
    """Lines over runs (oldest left), one per series; values multiplied by ``scale`` for labels."""
    known = [v for values in series.values() for v in values if v is not None]
    peak = _nice_max(max(known, default=0) * scale) / scale
    ticks = [fmt_number(peak * (1 - i / 4) * scale) for i in range(5)]
    left = max(56, math.ceil(max(_text_width(tick, TICK_FONT) for tick in ticks)) + 10)
    right, top, bottom = 12, 26, 34
    height = 220
    plot_w, plot_h = width - left - right, height - top - bottom
    body = [_legend(left, 14, [(f"series-{i}", name) for i, name in enumerate(series)])]
    for i, tick in enumerate(ticks):
        y = top + plot_h * i / 4
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>'
        )
        body.append(_text(left - 6, y + 4, tick, anchor="end", css="tick"))
    body.append(_text(4, top - 8, unit, css="unit"))
    words = []
    for i, (name, values) in enumerate(series.items()):
        points = _points(values, left, plot_w, top, plot_h, peak)
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<polyline points="{line}" class="line series-{i}"/>')
        # a line needs two points: the dots show a first run (and runs between gaps)
        body.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" class="dot series-{i}"/>' for x, y in points
        )
        vals = [fmt_number(v * scale) for v in values if v is not None]
        if vals:
            words.append(f"{name} from {vals[0]} to {vals[-1]} {unit}")
    if x_labels:
        base = top + plot_h + 16
        body.append(_text(left, base, x_labels[0], css="tick"))
        if len(x_labels) > 1:
            body.append(_text(left + plot_w, base, x_labels[-1], anchor="end", css="tick"))
    desc = f"Over {plural(len(x_labels), 'run')}: " + "; ".join(words) + "."
    return _svg(width, height, title, desc, "".join(body))
