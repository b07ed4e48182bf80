"""The log lines of an analysis, for the person on call: what is analysed and how, one line per check with
every number, and the verdict."""

from __future__ import annotations

import logging
import math
from typing import Any

from rollguard.steps.analyze.settings import AnalysisSettings, custom_name
from rollguard.steps.judgment.outcomes import CheckOutcome, Judge, Phase
from rollguard.steps.metrics.counter_window import latency_bucket_warning
from rollguard.steps.options import format_duration
from rollguard.steps.verdict_document import VerdictDocument

log = logging.getLogger("rollguard.analyze")

_PROBLEMS = (Phase.FAILED, Phase.BREACH, Phase.NO_DATA, Phase.NAN, Phase.MULTIPLE, Phase.ERROR)


def log_start(settings: AnalysisSettings) -> None:
    """What is analysed, how, and every rendered query (a query is an interface: show it)."""
    target, timing = settings.target, settings.timing
    length = ("open-ended (until stopped or failed)" if math.isinf(timing.duration_s)
              else f"for {format_duration(timing.duration_s)}")
    ends = ("" if math.isinf(settings.time_limit_s)
            else f"; ends within {settings.time_limit_s:.1f}s whatever Prometheus does")
    log.info("analyzing %s/%s: canary %s vs stable %s at %s, every %s %s (window %s), judge %s, %s%s",
             target.namespace, target.service, target.canary_version, target.stable_version, settings.prometheus.url,
             format_duration(timing.interval_s), length, format_duration(timing.window_s), settings.judge.value,
             _rule(settings), ends)
    warning = latency_bucket_warning(settings.limits.max_p99_latency_ms)
    if warning is not None and settings.judge is not Judge.THRESHOLD:
        log.warning("%s", warning)
    for spec in settings.builtin_queries():
        log.info("query %s: %s", spec.name, spec.promql)
    for metric in settings.custom_metrics:
        log.info("query %s (line %d): %s", custom_name(metric), metric.line, metric.query)


def _rule(settings: AnalysisSettings) -> str:
    if settings.judge is Judge.STATISTICAL:
        shares = ", ".join(f"{name} {share:.2g}" for name, share in settings.budget.as_json().items() if share > 0)
        restarts = settings.budget.restart_every_s
        again = f", restarted every {format_duration(restarts)}" if restarts else ""
        return f"anytime-valid tests on the counts since the start{again}, false-alarm budget {shares}"
    if settings.judge is Judge.BONFERRONI and settings.plan is not None:
        return f"{settings.plan.planned_looks} planned checks, alpha per test {settings.plan.alpha_per_test:.2g}"
    return f"fail after {settings.run_limits.failure_limit} failed checks"


def log_check(outcome: CheckOutcome, planned: int | None, readings: dict[str, Any]) -> None:
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
    log.info("check %d/%s at +%.1fs: %s | canary %s (%d since start) | stable %s%s | %s%s",
             outcome.index + 1, "-" if planned is None else planned, outcome.elapsed_s, outcome.summary.upper(),
             _counts(canary), outcome.canary_requests, _counts(stable), stable_p99, metrics, problems)


def log_verdict(document: VerdictDocument, verdict_file: str) -> None:
    """The decision, its reason, and where the verdict file is."""
    log.info("VERDICT %s: %s (verdict file %s)", document.verdict.value.upper(), document.reason, verdict_file)


def _counts(side: dict[str, Any]) -> str:
    if side.get("requests") is None:
        return str(side.get("status", "?"))
    slow = f", {side['slow']} slow" if side.get("slow") is not None else ""
    tcp = f" ({side['tcp_connections']} TCP)" if side.get("tcp_connections") else ""
    how = side.get("failures") or {}
    failed = f" ({', '.join(f'{count} {kind}' for kind, count in how.items())})" if how else ""
    return f"{side['requests']} req{tcp}, {side['errors']} failed{failed}{slow}"


def _format_value(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if metric.endswith("_ms"):
        return f"{value:.0f}ms"
    if "error_rate" in metric:
        return f"{value * 100:.2f}%"
    return f"{value:g}"
