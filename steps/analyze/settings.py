"""The typed settings of one analysis, validated from the flags before any query: bad input exits 2 with
nothing written. The verdict file records them (`as_json`)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollguard.steps.judgment.anytime import Budget, split_budget
from rollguard.steps.judgment.check import Limits, look_plan
from rollguard.steps.judgment.outcomes import Judge, Policy, finite_or_none
from rollguard.steps.judgment.run_decision import RunLimits
from rollguard.steps.judgment.statistical import LookPlan, planned_looks
from rollguard.steps.metrics.custom_templates import CustomMetric, MetricsFileError, load_metrics
from rollguard.steps.metrics.failures import ErrorDefinition, grpc_codes_text, parse_grpc_codes
from rollguard.steps.metrics.istio_queries import AnalysisQueries, analysis_queries
from rollguard.steps.metrics.prometheus_access import access_from_args
from rollguard.steps.metrics.prometheus_endpoint import PrometheusEndpoint
from rollguard.steps.metrics.querier import AnswerShape, QuerySpec
from rollguard.steps.options import UsageError, check_output_files, format_duration, is_utf8_text

MAX_PLANNED_LOOKS = 100_000


@dataclass(frozen=True)
class PrometheusAccess:
    """Where Prometheus is and how to ask it: the URL without credentials, authentication and TLS, timeout, tries."""

    endpoint: PrometheusEndpoint  # the URL shown (no credentials); headers, token, TLS, SigV4 (secrets never shown)
    timeout_s: float
    attempts: int

    @property
    def url(self) -> str:
        """The URL without credentials: what logs and the verdict show."""
        return self.endpoint.url


@dataclass(frozen=True)
class Target:
    """The service and the two versions (Istio's destination_version labels) under analysis."""

    namespace: str
    service: str
    stable_version: str
    canary_version: str


@dataclass(frozen=True)
class Timing:
    """How often the analysis looks, for how long, and over which window the point values are taken."""

    interval_s: float
    duration_s: float
    window_s: float
    started_at: float | None = None  # Unix time the analysis (first) started; set when resuming it


@dataclass(frozen=True)
class VerdictFiles:
    """Where the verdict goes: the full file always; the word and the summary only when asked for."""

    verdict: Path
    word: Path | None
    summary: Path | None


@dataclass(frozen=True)
class AnalysisSettings:
    """Everything one analysis needs, checked: the target, timing, rule, limits, queries and outputs."""

    prometheus: PrometheusAccess
    target: Target
    timing: Timing
    judge: Judge
    confidence: float
    limits: Limits
    run_limits: RunLimits
    plan: LookPlan | None  # the Bonferroni judge's planned checks; None when open-ended
    budget: Budget  # the anytime judge's shares of 1 - confidence
    queries: AnalysisQueries
    metrics_file: str | None
    custom_metrics: tuple[CustomMetric, ...]
    outputs: VerdictFiles
    compare_with_stable: bool = True
    # What the step does after its verdict (--rollback-on-fail, --on-inconclusive): recorded, acted on elsewhere.
    rollback_on_fail: bool = False
    on_inconclusive: str = "rollback"

    def _alpha_per_test(self) -> float | dict[str, float] | None:
        """Bonferroni: one level for every test at every check; anytime: each test's share; threshold: none."""
        if self.judge is Judge.BONFERRONI:
            return None if self.plan is None else self.plan.alpha_per_test
        if self.judge is Judge.STATISTICAL:
            return self.budget.as_json()
        return None

    @property
    def planned_checks(self) -> int | None:
        """Checks over the bake time (one at the start, one per interval); None for an open-ended analysis."""
        return None if math.isinf(self.timing.duration_s) else planned_looks(self.timing.duration_s,
                                                                             self.timing.interval_s)
    errors: ErrorDefinition = field(default_factory=ErrorDefinition)  # which answers count as failed

    @property
    def time_limit_s(self) -> float:
        """The longest an analysis may run: to its last planned check (the bake time rounded up to a whole
        interval), plus one query timeout for that check's answers."""
        checks = self.planned_checks
        if checks is None:  # open-ended: no limit but the one who stops it
            return math.inf
        return (checks - 1) * self.timing.interval_s + self.prometheus.timeout_s

    @property
    def point_value_queries(self) -> bool:
        """Whether checks send the error-rate and p99 queries: only the threshold rule judges Prometheus's own
        rates; the other judges count, and their window values come from the counters' answers."""
        return self.judge is Judge.THRESHOLD

    def builtin_queries(self) -> tuple[QuerySpec, ...]:
        """The built-in queries a check sends, in order (see `AnalysisQueries.in_order`)."""
        return self.queries.in_order(point_values=self.point_value_queries)

    def query_specs(self) -> tuple[QuerySpec, ...]:
        """Every query of a check, in order: the built-in ones, then the custom metrics (`custom:NAME`)."""
        custom = tuple(QuerySpec(custom_name(metric), metric.query, AnswerShape.ONE_VALUE)
                       for metric in self.custom_metrics)
        return self.builtin_queries() + custom

    def as_json(self) -> dict[str, Any]:
        """The settings as recorded in the verdict file: every flag's value, the plan and the rendered queries."""
        target, limits, run = self.target, self.limits, self.run_limits
        return {
            "prometheus_url": self.prometheus.url,
            **self.prometheus.endpoint.as_json(),
            "namespace": target.namespace,
            "service": target.service,
            "stable_version": target.stable_version,
            "canary_version": target.canary_version,
            "interval": format_duration(self.timing.interval_s),
            "duration": format_duration(self.timing.duration_s),
            "window": format_duration(self.timing.window_s),
            "started_at": self.timing.started_at,
            "max_error_rate": limits.max_error_rate,
            "max_p99_latency_ms": limits.max_p99_latency_ms,
            "min_requests": run.min_requests,
            "max_error_rate_increase": limits.max_error_rate_increase,
            "grpc_error_codes": grpc_codes_text(self.errors.grpc_error_codes),
            "metrics_file": self.metrics_file,
            "judge": self.judge.value,
            "confidence": self.confidence,
            "failure_limit": run.failure_limit,
            "consecutive": run.consecutive,
            "on_no_data": run.on_no_data.value,
            "on_error": run.on_error.value,
            "max_consecutive_errors": run.max_consecutive_errors,
            "query_timeout": format_duration(self.prometheus.timeout_s),
            "query_attempts": self.prometheus.attempts,
            "verdict_file": str(self.outputs.verdict),
            "verdict_word_file": _optional_path(self.outputs.word),
            "verdict_summary_file": _optional_path(self.outputs.summary),
            "absolute_only": not self.compare_with_stable,
            "rollback_on_fail": self.rollback_on_fail,
            "on_inconclusive": self.on_inconclusive,
            "planned_looks": self.planned_checks,
            "alpha_per_test": self._alpha_per_test(),
            "restart_every": (format_duration(self.budget.restart_every_s)
                              if self.judge is Judge.STATISTICAL and self.budget.restart_every_s else None),
            "queries": {spec.name: spec.promql for spec in self.builtin_queries()},
            "custom_metrics": [
                {"name": m.name, "query": m.query, "min": finite_or_none(m.minimum),
                 "max": finite_or_none(m.maximum)}
                for m in self.custom_metrics
            ],
        }


def custom_name(metric: CustomMetric) -> str:
    """The query name of a custom metric in logs and the verdict."""
    return f"custom:{metric.name}"


def settings_from_args(args: argparse.Namespace) -> AnalysisSettings:
    """Check every flag before any query, so bad input exits 2 with nothing written."""
    prometheus_endpoint = access_from_args(args)  # a UsageError naming the flag
    for flag in ("namespace", "service", "stable_version", "canary_version"):
        value = str(getattr(args, flag))
        if not value.strip():
            raise UsageError(f"--{flag.replace('_', '-')} must not be empty")
        if not is_utf8_text(value):
            raise UsageError(f"--{flag.replace('_', '-')} {value!r} holds bytes that are not UTF-8; a label value "
                             "is UTF-8 text (check the shell's or the workflow parameter's encoding)")
    if args.stable_version == args.canary_version:
        raise UsageError(f"--stable-version and --canary-version are both {args.canary_version!r}; they must differ")
    if not 0.0 < args.confidence < 1.0:
        raise UsageError(f"--confidence {args.confidence} must be strictly between 0 and 1, e.g. 0.99")
    if args.max_p99_latency_ms <= 0 or not math.isfinite(args.max_p99_latency_ms):
        raise UsageError(f"--max-p99-latency-ms {args.max_p99_latency_ms:g} must be a positive number of ms")
    open_ended = math.isinf(args.duration)
    if open_ended and args.judge == Judge.BONFERRONI.value:
        raise UsageError("--judge bonferroni shares its budget over the planned checks, so it needs a --duration; "
                         "an open-ended analysis (--duration 0) needs --judge statistical (anytime-valid) or threshold")
    looks = None if open_ended else planned_looks(args.duration, args.interval)
    if looks is not None and looks > MAX_PLANNED_LOOKS:
        raise UsageError(f"--duration {format_duration(args.duration)} / --interval {format_duration(args.interval)} "
                         f"gives {looks} checks; use a longer --interval")
    check_output_files(args, "verdict_file", "verdict_word_file", "verdict_summary_file")
    if args.window < 1:
        raise UsageError(f"--window {format_duration(args.window)} is too short for a rate; use at least 1s (e.g. 1m)")
    target = Target(args.namespace, args.service, args.stable_version, args.canary_version)
    window = format_duration(args.window)
    custom_metrics = _custom_metrics(args.metrics_file, target, window)
    for metric in custom_metrics:
        if not is_utf8_text(metric.query):
            raise UsageError(f"--metrics-file {args.metrics_file} line {metric.line} (metric {metric.name}): the "
                             "query holds characters that are not UTF-8 text (a \\udcxx escape in a value?)")
    errors = _error_definition(args.grpc_error_codes)
    return AnalysisSettings(
        prometheus=PrometheusAccess(prometheus_endpoint, args.query_timeout, args.query_attempts),
        target=target,
        timing=Timing(interval_s=args.interval, duration_s=args.duration, window_s=args.window,
                      started_at=args.started_at),
        judge=Judge(args.judge),
        confidence=args.confidence,
        limits=Limits(args.max_error_rate, args.max_p99_latency_ms, args.max_error_rate_increase),
        run_limits=RunLimits(
            duration_s=args.duration,
            min_requests=args.min_requests,
            failure_limit=args.failure_limit,
            consecutive=args.consecutive,
            max_consecutive_errors=args.max_consecutive_errors,
            on_no_data=Policy(args.on_no_data),
            on_error=Policy(args.on_error),
        ),
        plan=None if open_ended else look_plan(args.confidence, args.duration, args.interval),
        budget=split_budget(args.confidence, args.max_error_rate, args.max_error_rate_increase,
                            compare_with_stable=not args.absolute_only, duration_s=args.duration,
                            restart_every_s=max(args.window, args.interval)),
        queries=analysis_queries(target.namespace, target.service, target.canary_version, target.stable_version,
                                 window, errors),
        metrics_file=args.metrics_file,
        custom_metrics=custom_metrics,
        outputs=VerdictFiles(Path(args.verdict_file), _optional(args.verdict_word_file),
                             _optional(args.verdict_summary_file)),
        compare_with_stable=not args.absolute_only,
        errors=errors,
        rollback_on_fail=bool(getattr(args, "rollback_on_fail", False)),
        on_inconclusive=str(getattr(args, "on_inconclusive", "rollback")),
    )


def _error_definition(grpc_error_codes: str) -> ErrorDefinition:
    try:
        return ErrorDefinition(parse_grpc_codes(grpc_error_codes))
    except ValueError as exc:
        raise UsageError(f"--grpc-error-codes: {exc}") from None


def _custom_metrics(metrics_file: str | None, target: Target, window: str) -> tuple[CustomMetric, ...]:
    if not metrics_file:
        return ()
    builtins = {
        "namespace": target.namespace, "service": target.service, "version": target.canary_version,
        "canary_version": target.canary_version, "stable_version": target.stable_version, "window": window,
    }
    try:
        return tuple(load_metrics(Path(metrics_file), builtins))
    except MetricsFileError as exc:
        raise UsageError(f"--metrics-file {exc}") from None


def _optional(value: str | None) -> Path | None:
    return Path(value) if value else None


def _optional_path(path: Path | None) -> str | None:
    return None if path is None else str(path)

