"""Judge a canary from Prometheus: every --interval compare canary (and stable) error rate, p99
latency and custom metrics with their limits; stop at the first decisive failure; pass only after
--duration with at least --min-requests canary requests. Writes the verdict as JSON.

Exit codes: 0 pass, 1 fail, 3 inconclusive, 2 bad usage (nothing written).
Policies: --on-no-data continue (keep looking; still no data when the bake time ends ->
inconclusive, never pass); --on-error inconclusive (once --max-consecutive-errors checks in a row
could not be judged). Counts for the statistical rule cover the requests since the analysis
started, at most the last --window.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlparse

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.judgment.check import CheckInputs, Counts, CustomValue, Limits, PointValue, judge_check
from rollguard.steps.judgment.outcomes import (
    CheckOutcome,
    Decision,
    Judge,
    MetricOutcome,
    Phase,
    Policy,
    Step,
    Verdict,
    finite_or_none,
)
from rollguard.steps.judgment.run_decision import RunJudge, RunLimits
from rollguard.steps.judgment.statistical import LookPlan
from rollguard.steps.metrics import istio_queries
from rollguard.steps.metrics.counter_window import CounterHistory, CounterSnapshot, counts_between
from rollguard.steps.metrics.custom_templates import CustomMetric, MetricsFileError, load_metrics
from rollguard.steps.metrics.prometheus_client import (
    PrometheusQuerier,
    QueryResult,
    QueryStatus,
    redacted_url,
    split_credentials,
)
from rollguard.steps.options import (
    UsageError,
    add_flag,
    add_switch,
    check_output_files,
    format_duration,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_duration,
    positive_int,
)
from rollguard.steps.output_files import write_atomically

log = logging.getLogger("rollguard.analyze")

STATISTICAL_TESTS_PER_LOOK = 3  # canary error rate, canary vs stable, canary latency share
MAX_PLANNED_LOOKS = 100_000
EXIT_CODES = {Verdict.PASS: ExitCode.OK, Verdict.FAIL: ExitCode.FAIL, Verdict.INCONCLUSIVE: ExitCode.INCONCLUSIVE}
POLICIES = [policy.value for policy in Policy]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `rollguard analyze`, each also settable as ROLLGUARD_<NAME>."""
    target = parser.add_argument_group("what to analyze")
    add_flag(target, "--prometheus-url", default="http://prometheus.monitoring:9090", help="Prometheus base URL")
    add_flag(target, "--namespace", required=True, help="namespace of the canary's workloads")
    add_flag(target, "--service", required=True, help="destination_service_name of the service")
    add_flag(target, "--stable-version", required=True, help="destination_version label of stable (e.g. v1)")
    add_flag(target, "--canary-version", required=True, help="destination_version label of the canary (e.g. v2)")
    timing = parser.add_argument_group("timing")
    add_flag(timing, "--interval", default="5s", type=positive_duration, help="time between checks (500ms, 1s, 2m)")
    add_flag(timing, "--duration", default="2m", type=positive_duration, help="bake time before a pass")
    add_flag(timing, "--window", default="1m", type=positive_duration,
             help="rate window of the PromQL point values; the statistical counts cover at most this much")
    limits = parser.add_argument_group("limits")
    add_flag(limits, "--max-error-rate", default=0.01, type=fraction, help="canary 5xx share limit (0.01 = 1 %%)")
    add_flag(limits, "--max-p99-latency-ms", default=500.0, type=non_negative_float, help="canary p99 limit in ms")
    add_flag(limits, "--min-requests", default=100, type=non_negative_int, help="canary requests needed to pass")
    add_flag(limits, "--max-error-rate-increase", default=0.01, type=fraction,
             help="how much the canary's error rate may exceed stable's (a fraction: 0.01 = 1 point)")
    add_flag(limits, "--metrics-file", help="YAML file of custom PromQL metric templates with min/max")
    judging = parser.add_argument_group("judging")
    add_flag(judging, "--judge", default=Judge.STATISTICAL.value, choices=[judge.value for judge in Judge],
             help="statistical: exact one-sided bounds, fails at first significant evidence; threshold: "
             "point values, fail after --failure-limit failed checks")
    add_flag(judging, "--confidence", default=0.99, type=fraction,
             help="statistical rule: a canary within its limits is failed with probability <= 1 - confidence")
    add_flag(judging, "--failure-limit", default=3, type=positive_int,
             help="threshold rule and custom metrics: failed checks that make the verdict fail")
    add_switch(judging, "--consecutive", help="count only failed checks in a row towards --failure-limit")
    add_flag(judging, "--on-no-data", default=Policy.CONTINUE.value, choices=POLICIES,
             help="no series / NaN: keep looking (continue), or decide now")
    add_flag(judging, "--on-error", default=Policy.INCONCLUSIVE.value, choices=POLICIES,
             help="what an outage becomes once --max-consecutive-errors checks in a row failed")
    add_flag(judging, "--max-consecutive-errors", default=4, type=non_negative_int,
             help="checks in a row that may fail to query before --on-error applies")
    add_flag(judging, "--query-timeout", default="5s", type=positive_duration, help="timeout of one query")
    add_flag(judging, "--query-attempts", default=3, type=positive_int,
             help="tries per query (exponential backoff from 200ms)")
    output = parser.add_argument_group("output")
    add_flag(output, "--verdict-file", default="/tmp/verdict.json", help="where the verdict JSON is written")
    add_flag(output, "--verdict-word-file", help="optional file for the single word pass|fail|inconclusive")
    add_flag(output, "--verdict-summary-file",
             help="optional file for the verdict without the per-check list (small enough for an Argo parameter)")


@dataclass(frozen=True)
class Settings:
    """Validated settings of one analysis."""

    args: argparse.Namespace
    judge: Judge
    limits: Limits
    run_limits: RunLimits
    plan: LookPlan
    custom_metrics: list[CustomMetric]
    queries: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        """The settings as recorded in the verdict file."""
        values = {key: value for key, value in vars(self.args).items() if not key.startswith("_")}
        for key in ("interval", "duration", "window", "query_timeout"):
            values[key] = format_duration(values[key])
        values["planned_looks"] = self.plan.planned_looks
        values["alpha_per_test"] = self.plan.alpha_per_test
        values["queries"] = self.queries
        values["custom_metrics"] = [
            {"name": m.name, "query": m.query, "min": finite_or_none(m.minimum), "max": finite_or_none(m.maximum)}
            for m in self.custom_metrics
        ]
        return values


def validate(args: argparse.Namespace) -> Settings:
    """Check every flag before any query, so bad input exits 2 with nothing written."""
    url = urlparse(args.prometheus_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UsageError(f"--prometheus-url {redacted_url(args.prometheus_url)!r} must be an http:// or https:// URL "
                         "with a host, e.g. http://prometheus.monitoring:9090")
    # Basic-auth credentials in the URL go to Prometheus only: logs and the verdict show the clean URL.
    args.prometheus_url, args._prometheus_auth = split_credentials(args.prometheus_url)
    for flag in ("namespace", "service", "stable_version", "canary_version"):
        if not str(getattr(args, flag)).strip():
            raise UsageError(f"--{flag.replace('_', '-')} must not be empty")
    if args.stable_version == args.canary_version:
        raise UsageError(f"--stable-version and --canary-version are both {args.canary_version!r}; they must differ")
    if not 0.0 < args.confidence < 1.0:
        raise UsageError(f"--confidence {args.confidence} must be strictly between 0 and 1, e.g. 0.99")
    if args.max_p99_latency_ms <= 0 or not math.isfinite(args.max_p99_latency_ms):
        raise UsageError(f"--max-p99-latency-ms {args.max_p99_latency_ms:g} must be a positive number of ms")
    planned_looks = math.ceil(args.duration / args.interval - 1e-9) + 1
    if planned_looks > MAX_PLANNED_LOOKS:
        raise UsageError(f"--duration {format_duration(args.duration)} / --interval {format_duration(args.interval)} "
                         f"gives {planned_looks} checks; use a longer --interval")
    check_output_files(args, "verdict_file", "verdict_word_file", "verdict_summary_file")
    if args.window < 1:
        raise UsageError(f"--window {format_duration(args.window)} is too short for a rate; use at least 1s (e.g. 1m)")
    window = format_duration(args.window)
    builtins = {
        "namespace": args.namespace, "service": args.service, "version": args.canary_version,
        "canary_version": args.canary_version, "stable_version": args.stable_version, "window": window,
    }
    custom: list[CustomMetric] = []
    if args.metrics_file:
        try:
            custom = load_metrics(Path(args.metrics_file), builtins)
        except MetricsFileError as exc:
            raise UsageError(f"--metrics-file {exc}") from None
    ns, service = args.namespace, args.service
    queries = {
        "canary_counters": istio_queries.counters_query(ns, service, args.canary_version),
        "stable_counters": istio_queries.counters_query(ns, service, args.stable_version),
        "canary_error_rate": istio_queries.error_rate_query(ns, service, args.canary_version, window),
        "stable_error_rate": istio_queries.error_rate_query(ns, service, args.stable_version, window),
        "canary_p99_latency_ms": istio_queries.p99_latency_query(ns, service, args.canary_version, window),
        "stable_p99_latency_ms": istio_queries.p99_latency_query(ns, service, args.stable_version, window),
    }
    return Settings(
        args=args,
        judge=Judge(args.judge),
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
        plan=LookPlan(args.confidence, planned_looks, STATISTICAL_TESTS_PER_LOOK),
        custom_metrics=custom,
        queries=queries,
    )


@dataclass
class Reader:
    """Reads one check's numbers from Prometheus; keeps the counter snapshots between checks."""

    settings: Settings
    querier: PrometheusQuerier
    canary_history: CounterHistory = field(default_factory=CounterHistory)
    stable_history: CounterHistory = field(default_factory=CounterHistory)

    def read(self, elapsed_s: float) -> tuple[CheckInputs, dict[str, Any]]:
        """Query everything for one check; after an unreachable answer, the rest of the check is skipped."""
        queries = self.settings.queries
        results: dict[str, QueryResult] = {}
        unreachable: QueryResult | None = None
        to_run = [(name, query, name.endswith("_counters")) for name, query in queries.items()]
        to_run += [(f"custom:{metric.name}", metric.query, False) for metric in self.settings.custom_metrics]
        for name, query, is_vector in to_run:
            if unreachable is not None:
                results[name] = QueryResult(query, QueryStatus.ERROR, detail=f"skipped: {unreachable.detail}",
                                            unreachable=True)
                continue
            result = self.querier.vector(query) if is_vector else self.querier.scalar(query)
            results[name] = result
            if result.status is QueryStatus.ERROR and result.unreachable:
                unreachable = result
        canary, canary_since_start, canary_json = self._counts("canary", results["canary_counters"],
                                                               self.canary_history, elapsed_s)
        stable, _, stable_json = self._counts("stable", results["stable_counters"], self.stable_history, elapsed_s)
        custom = tuple(
            CustomValue(metric.name, _point(results[f"custom:{metric.name}"]), metric.minimum, metric.maximum)
            for metric in self.settings.custom_metrics
        )
        inputs = CheckInputs(
            canary_counts=canary,
            stable_counts=stable,
            canary_requests_since_start=canary_since_start,
            canary_error_rate=_point(results["canary_error_rate"]),
            stable_error_rate=_point(results["stable_error_rate"]),
            canary_p99_ms=_point(results["canary_p99_latency_ms"]),
            custom=custom,
        )
        readings = {
            "canary": {**canary_json, "error_rate": finite_or_none(results["canary_error_rate"].value),
                       "p99_latency_ms": finite_or_none(results["canary_p99_latency_ms"].value)},
            "stable": {**stable_json, "error_rate": finite_or_none(results["stable_error_rate"].value),
                       "p99_latency_ms": finite_or_none(results["stable_p99_latency_ms"].value)},
            # Only queries that needed retries or gave no plain value: keeps the verdict small.
            "query_problems": {name: {"status": result.status.value, "attempts": result.attempts,
                                      "detail": result.detail}
                               for name, result in results.items()
                               if result.status is not QueryStatus.VALUE or result.attempts > 1},
        }
        return inputs, readings

    def _counts(
        self, who: str, result: QueryResult, history: CounterHistory, elapsed_s: float
    ) -> tuple[Counts, int, dict[str, Any]]:
        if result.status is QueryStatus.ERROR:
            return Counts(Phase.ERROR, detail=result.detail), history.requests_since_start, {"status": "error"}
        snapshot = CounterSnapshot.from_samples(elapsed_s, result.samples)
        if history.first is None or snapshot.at_s > history.first.at_s:
            history.add(snapshot)
        limit_ms = self.settings.limits.max_p99_latency_ms
        window = counts_between(history.baseline(elapsed_s, self.settings.args.window), snapshot, limit_ms)
        since_start = counts_between(history.first or snapshot, snapshot, limit_ms).requests
        history.requests_since_start = since_start
        summary = {"status": result.status.value, "requests": window.requests, "errors": window.errors,
                   "slow": window.slow if window.slow_known else None, "window_start_s": round(window.since_s, 3),
                   "requests_since_start": since_start}
        if result.status is QueryStatus.EMPTY:
            detail = (f"no {who} series in Prometheus for {self.settings.queries[f'{who}_counters']} "
                      "(no traffic yet, or wrong labels?)")
            return Counts(Phase.NO_DATA, detail=detail), since_start, summary
        counts = Counts(Phase.OK, window.requests, window.errors, window.slow, window.slow_known)
        return counts, since_start, summary


def _point(result: QueryResult) -> PointValue:
    """A query result as the judgment's PointValue."""
    phases = {
        QueryStatus.VALUE: Phase.OK, QueryStatus.EMPTY: Phase.NO_DATA, QueryStatus.NAN: Phase.NAN,
        QueryStatus.MULTIPLE: Phase.MULTIPLE, QueryStatus.ERROR: Phase.ERROR,
    }
    return PointValue(phases[result.status], result.value, result.detail)


def _format_value(metric: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if metric.endswith("_ms"):
        return f"{value:.0f}ms"
    if "error_rate" in metric:
        return f"{value * 100:.2f}%"
    return f"{value:g}"


def _log_check(outcome: CheckOutcome, planned: int, readings: dict[str, Any]) -> None:
    canary, stable = readings["canary"], readings["stable"]

    def counts(side: dict[str, Any]) -> str:
        if side.get("requests") is None:
            return side.get("status", "?")
        slow = f", {side['slow']} slow" if side.get("slow") is not None else ""
        return f"{side['requests']} req, {side['errors']} 5xx{slow}"

    metrics = ", ".join(
        f"{m.metric} {_format_value(m.metric, m.value)} {m.phase.value}" for m in outcome.metrics
    )
    problems = "".join(
        f" | {m.metric} {m.phase.value}: {m.detail or '-'}" for m in outcome.metrics
        if m.phase in (Phase.FAILED, Phase.BREACH, Phase.NO_DATA, Phase.NAN, Phase.MULTIPLE, Phase.ERROR)
    )
    p99 = stable.get("p99_latency_ms")
    stable_p99 = f", p99 {p99:.0f}ms" if p99 is not None else ""
    # One line per check, for the person on call: outcome, counts, every metric, then what went wrong.
    log.info("check %d/%d at +%.1fs: %s | canary %s (%d since start) | stable %s%s | %s%s",
             outcome.index + 1, planned, outcome.elapsed_s, outcome.summary.upper(), counts(canary),
             outcome.canary_requests, counts(stable), stable_p99, metrics, problems)


def _metric_record(metric: MetricOutcome) -> dict[str, object]:
    """A metric's check record; the explanation only where something is not plainly ok."""
    record = metric.as_json()
    if metric.phase is Phase.OK:
        del record["detail"]
    return record


def render_verdict(document: dict[str, Any]) -> str:
    """The verdict as JSON: readable top-level fields, and one line per check (a 2m/1s run stays small)."""
    parts = []
    for key, value in document.items():
        if key == "checks" and value:
            lines = ",\n".join("    " + json.dumps(check, separators=(",", ":")) for check in value)
            parts.append(f'  "checks": [\n{lines}\n  ]')
        else:
            parts.append(f"  {json.dumps(key)}: " + json.dumps(value, indent=2).replace("\n", "\n  "))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _verdict_document(
    settings: Settings, decision: Decision, started_at: float, checks: list[dict[str, Any]]
) -> dict[str, Any]:
    assert decision.verdict is not None
    evidence = decision.failed_check
    return {
        "verdict": decision.verdict.value,
        "reason": decision.reason,
        "started_at": started_at,
        "decided_at": time.time(),
        "failed_check": None if evidence is None else {
            "metric": evidence.metric,
            "value": finite_or_none(evidence.value),
            "threshold": finite_or_none(evidence.threshold),
            "detail": evidence.detail,
        },
        "checks": checks,
        "settings": settings.as_json(),
    }


def summary_of(document: dict[str, Any]) -> dict[str, Any]:
    """The verdict without its per-check list (the count and the last check stay): a bounded size,
    whatever the bake time, for Argo output parameters and the rollback commit's evidence."""
    checks = document.get("checks") or []
    summary = {key: value for key, value in document.items() if key != "checks"}
    summary["check_count"] = len(checks)
    summary["last_check"] = checks[-1] if checks else None
    return summary


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def analyze(settings: Settings) -> Decision:
    """Run the checks until a decision; write the verdict file(s); return the decision."""
    args = settings.args
    querier = PrometheusQuerier(args.prometheus_url, auth=getattr(args, "_prometheus_auth", None),
                                timeout_s=args.query_timeout, attempts=args.query_attempts)
    reader = Reader(settings, querier)
    judge = RunJudge(settings.run_limits)
    planned = settings.plan.planned_looks
    checks: list[dict[str, Any]] = []
    started_at, started = time.time(), time.monotonic()
    index = 0
    decision = Decision.keep_going()
    try:
        while decision.step is Step.CONTINUE:
            delay = started + index * args.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            # Never earlier than the slot: the last planned look must see the bake time as over.
            elapsed = max(time.monotonic() - started, index * args.interval)
            inputs, readings = reader.read(elapsed)
            outcome = judge_check(index, elapsed, inputs, settings.limits, settings.judge, settings.plan)
            _log_check(outcome, planned, readings)
            checks.append({
                "index": index, "at": started_at + elapsed, "elapsed_s": round(elapsed, 3),
                "outcome": outcome.summary, **readings,
                "metrics": [_metric_record(metric) for metric in outcome.metrics],
            })
            decision = judge.observe(outcome)
            # A slow check skips the slots it overran; the last planned look is always final.
            behind = math.floor((time.monotonic() - started) / args.interval) + 1
            index = min(planned - 1, max(index + 1, behind))
    except KeyboardInterrupt:
        decision = Decision.decide(Verdict.INCONCLUSIVE, "the analysis was interrupted before a verdict")
        _write_verdict(settings, decision, started_at, checks)
        raise
    _write_verdict(settings, decision, started_at, checks)
    return decision


def _write_verdict(settings: Settings, decision: Decision, started_at: float, checks: list[dict[str, Any]]) -> None:
    assert decision.verdict is not None
    document = _verdict_document(settings, decision, started_at, checks)
    write_atomically(Path(settings.args.verdict_file), render_verdict(document))
    if settings.args.verdict_word_file:
        write_atomically(Path(settings.args.verdict_word_file), decision.verdict.value)
    if settings.args.verdict_summary_file:
        write_atomically(Path(settings.args.verdict_summary_file), render_verdict(summary_of(document)))
    log.info("VERDICT %s: %s (verdict file %s)", decision.verdict.value.upper(), decision.reason,
             settings.args.verdict_file)


def run(args: argparse.Namespace) -> int:
    """Entry point of `rollguard analyze`: validate, judge, write the verdict, return its exit code."""
    from rollguard.steps import logs

    settings = validate(args)
    logs.configure("analyze")
    log.info("analyzing %s/%s: canary %s vs stable %s at %s, every %s for %s (window %s), judge %s, "
             "%d planned checks, alpha per test %.2g", args.namespace, args.service, args.canary_version,
             args.stable_version, args.prometheus_url, format_duration(args.interval),
             format_duration(args.duration), format_duration(args.window), settings.judge.value,
             settings.plan.planned_looks, settings.plan.alpha_per_test)
    for name, query in settings.queries.items():
        log.info("query %s: %s", name, query)
    for metric in settings.custom_metrics:
        log.info("query custom:%s (line %d): %s", metric.name, metric.line, metric.query)
    # SIGTERM (Argo stopping the step) ends like Ctrl-C: an inconclusive verdict is still written.
    # Signal handlers can only be set from the main thread; elsewhere the default stays.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        decision = analyze(settings)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    assert decision.verdict is not None
    return EXIT_CODES[decision.verdict]
