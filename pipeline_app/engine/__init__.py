"""Framework-free async task pipeline engine (re-creates ``async-task-pipeline`` 0.1.10).

See :mod:`pipeline_app.engine.pipeline` for the design (end of stream, backpressure, order,
errors, stop, timing). Importing this package configures no logging.
"""

from __future__ import annotations

import logging

from .analysis import (
    DistributionStats,
    EfficiencyMetrics,
    ItemTimingBreakdown,
    ItemTimingTotals,
    LatencySummary,
    PipelineAnalysis,
    StageStatistics,
    StageTimingDetail,
    TimingBreakdown,
    log_pipeline_performance_analysis,
)
from .errors import ErrorPolicy, ErrorRecord, RemoteStageError, StageError
from .item import ItemRecord, StampBatch
from .pipeline import AsyncTaskPipeline
from .seed_item import DetailedTiming, PipelineItem
from .stage import PipelineStage

# The engine's logger (the seed exports its package logger). No handler is added here: logging is
# configured by the application.
logger = logging.getLogger("pipeline_app.engine")

__all__ = [
    "AsyncTaskPipeline",
    "DetailedTiming",
    "DistributionStats",
    "EfficiencyMetrics",
    "ErrorPolicy",
    "ErrorRecord",
    "ItemRecord",
    "ItemTimingBreakdown",
    "ItemTimingTotals",
    "LatencySummary",
    "PipelineAnalysis",
    "PipelineItem",
    "PipelineStage",
    "RemoteStageError",
    "StageError",
    "StageStatistics",
    "StageTimingDetail",
    "StampBatch",
    "TimingBreakdown",
    "log_pipeline_performance_analysis",
    "logger",
]
