"""The log lines of an analysis, for the person on call: what is analysed and how, one line per check with
every number, and the verdict."""

from __future__ import annotations

import logging
import math
from typing import Any

from rollguard.steps.analyze.settings import AnalysisSettings, custom_name
from rollguard.steps.judgment.outcomes import CheckOutcome, Phase
from rollguard.steps.options import format_duration
from rollguard.steps.verdict_document import VerdictDocument

log = logging.getLogger("rollguard.analyze")

_PROBLEMS = (Phase.FAILED, Phase.BREACH, Phase.NO_DATA, Phase.NAN, Phase.MULTIPLE, Phase.ERROR)


def log_start(settings: AnalysisSettings) -> None:
    """What is analysed, how, and every rendered query (a query is an interface: show it)."""
    target, timing = settings.target, settings.timing
    log.info("analyzing %s/%s: canary %s vs stable %s at %s, every %s for %s (window %s), judge %s, "
             "%d planned checks, alpha per test %.2g; ends within %.1fs whatever Prometheus does", target.namespace,
             target.service, target.canary_version, target.stable_version, settings.prometheus.url,
             format_duration(timing.interval_s), format_duration(timing.duration_s), format_duration(timing.window_s),
             settings.judge.value, settings.plan.planned_looks, settings.plan.alpha_per_test, settings.time_limit_s)
    for spec in settings.queries.in_order():
        log.info("query %s: %s", spec.name, spec.promql)
    for metric in settings.custom_metrics:
        log.info("query %s (line %d): %s", custom_name(metric), metric.line, metric.query)


def log_check(outcome: CheckOutcome, planned: int, readings: dict[str, Any]) -> None:
    """One line per check: outcome, counts, every metric, then what went wrong."""
    canary, stable = readings["canary"], readings["stable"]
    metrics = ", ".join(
        f"{m.metric} {_format_value(m.metric, m.value)} {m.phase.value}" for m in outcome.metrics
    )
    problems = "".join(
        f" | {m.metric} {m.phase.value}: {m.detail or '-'}" for m in outcome.metrics if m.phase in _PROBLEMS
    )
    p99 = stable.get("p99_latency_ms")
    stable_p99 = f", p99 {p99:.0f}ms" if p99 is not None else ""
    log.info("check %d/%d at +%.1fs: %s | canary %s (%d since start) | stable %s%s | %s%s",
             outcome.index + 1, planned, outcome.elapsed_s, outcome.summary.upper(), _counts(canary),
             outcome.canary_requests, _counts(stable), stable_p99, metrics, problems)


def log_verdict(document: VerdictDocument, verdict_file: str) -> None:
    """The decision, its reason, and where the verdict file is."""
    log.info("VERDICT %s: %s (verdict file %s)", document.verdict.value.upper(), document.reason, verdict_file)


def _counts(side: dict[str, Any]) -> str:
    if side.get("requests") is None:
        return str(side.get("status", "?"))
    slow = f", {side['slow']} slow" if side.get("slow") is not None else ""
    return f"{side['requests']} req, {side['errors']} 5xx{slow}"


def _format_value(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if metric.endswith("_ms"):
        return f"{value:.0f}ms"
    if "error_rate" in metric:
        return f"{value * 100:.2f}%"
    return f"{value:g}"
