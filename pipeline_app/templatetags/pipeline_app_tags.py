"""Formatting filters of the dashboard templates: ``{% load pipeline_app_tags %}``."""

from __future__ import annotations

from datetime import timedelta

from django import template

from pipeline_app.charts import fmt_seconds

register = template.Library()


@register.filter
def seconds(value: float | timedelta | None) -> str:
    """A duration (seconds or timedelta) in a readable unit: ``{{ run.p95_latency|seconds }}``."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return fmt_seconds(value)


@register.filter
def percent(value: float | None) -> str:
    return "\u2013" if value is None else f"{value * 100:.0f}%"


@register.filter
def signed_percent(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:+.0f}%"


@register.filter
def slowest_stage(stages: dict[str, list[float]] | None) -> str:
    """The stage where an item spent the longest (queue wait + computation + send).

    ``stages`` is ``ItemTiming.stage_seconds()``: seconds per stage.
    """
    if not stages:
        return ""
    name, values = max(stages.items(), key=lambda kv: sum(kv[1][:3]))
    return f"{name} ({fmt_seconds(sum(values[:3]))})"
