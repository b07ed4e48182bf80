"""The analysis loop driven by scripted Prometheus answers on a simulated clock: every outcome (pass, fail,
no data, errors) and policy, in milliseconds. The settings come from the real flag parser."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from rollguard.steps.analyze import flags
from rollguard.steps.analyze.loop import AnalysisInterrupted, run_checks
from rollguard.steps.analyze.settings import AnalysisSettings, settings_from_args
from rollguard.steps.judgment.check import STATISTICAL_TESTS_PER_LOOK
from rollguard.steps.judgment.outcomes import Verdict
from rollguard.steps.metrics.istio_queries import DURATION_BUCKETS, REQUESTS
from rollguard.steps.metrics.query_results import QueryResult, QueryStatus, Sample, classify
from rollguard.steps.verdict_document import VerdictDocument

# (query name, seconds since the start) -> the answer Prometheus gives
Script = Callable[[str, float], QueryResult]


class SimulatedClock:
    """Time that passes only when the loop sleeps or a query takes time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_800_000_000.0 + self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedQuerier:
    """A querier whose answers come from a script of the query's name and the simulated time."""

    def __init__(self, settings: AnalysisSettings, clock: SimulatedClock, script: Script,
                 query_s: float = 0.0) -> None:
        self.names = {spec.promql: spec.name for spec in settings.query_specs()}
        self.clock, self.script, self.query_s = clock, script, query_s
        self.asked: list[tuple[float, str]] = []

    def _answer(self, promql: str) -> QueryResult:
        name = self.names[promql]
        self.asked.append((self.clock.now, name))
        self.clock.now += self.query_s
        result = self.script(name, self.clock.now)
        return QueryResult(promql, result.status, result.samples, result.detail, result.attempts, result.unreachable)

    def vector(self, query: str) -> QueryResult:
        return self._answer(query)

    def scalar(self, query: str) -> QueryResult:
        return self._answer(query)


def settings(tmp_path: Path, *extra: str) -> AnalysisSettings:
    parser = argparse.ArgumentParser()
    flags.add_arguments(parser)
    args = parser.parse_args([
        "--namespace", "shop", "--service", "checkout", "--stable-version", "v1", "--canary-version", "v2",
        "--interval", "1s", "--duration", "10s", "--min-requests", "100",
        "--verdict-file", str(tmp_path / "verdict.json"), *extra,
    ])
    return settings_from_args(args)


def counters(requests: float, errors: float, slow: float) -> tuple[Sample, ...]:
    """Raw Istio counters of one version: requests by code, and the duration buckets at 500 ms and +Inf."""
    return (
        Sample(((("__name__", REQUESTS), ("response_code", "200"))), requests - errors),
        Sample(((("__name__", REQUESTS), ("response_code", "500"))), errors),
        Sample(((("__name__", DURATION_BUCKETS), ("le", "500"))), requests - slow),
        Sample(((("__name__", DURATION_BUCKETS), ("le", "+Inf"))), requests),
    )


def one_value(name: str, value: float) -> QueryResult:
    return classify(name, (Sample((), value),), expect_one=True)


def traffic(canary_rps: float = 40, canary_error_share: float = 0.0, canary_slow_share: float = 0.0,
            stable_rps: float = 100, stable_error_share: float = 0.005) -> Script:
    """Prometheus answers for steady traffic from t = 0: counters grow, point values are the shares."""

    def answer(name: str, at_s: float) -> QueryResult:
        canary = counters(canary_rps * at_s, canary_rps * at_s * canary_error_share,
                          canary_rps * at_s * canary_slow_share)
        stable = counters(stable_rps * at_s, stable_rps * at_s * stable_error_share, 0)
        answers = {
            "canary_counters": classify(name, canary, expect_one=False),
            "stable_counters": classify(name, stable, expect_one=False),
            "canary_error_rate": one_value(name, canary_error_share),
            "stable_error_rate": one_value(name, stable_error_share),
            "canary_p99_latency_ms": one_value(name, 900.0 if canary_slow_share > 0.01 else 40.0),
            "stable_p99_latency_ms": one_value(name, 40.0),
        }
        return answers[name]

    return answer


def nothing(name: str, at_s: float) -> QueryResult:
    return classify(name, (), expect_one=name != "canary_counters" and name != "stable_counters")


def unreachable(name: str, at_s: float) -> QueryResult:
    return QueryResult(name, QueryStatus.ERROR, detail="Prometheus at http://x unreachable after 3 attempts: "
                       "ConnectionError: Connection refused", attempts=3, unreachable=True)


def analyse(tmp_path: Path, script: Script, *extra: str, query_s: float = 0.0
            ) -> tuple[VerdictDocument, ScriptedQuerier, SimulatedClock]:
    configured = settings(tmp_path, *extra)
    clock = SimulatedClock()
    querier = ScriptedQuerier(configured, clock, script, query_s)
    return run_checks(configured, querier, clock), querier, clock


def test_a_healthy_canary_passes_after_the_bake_time_at_every_planned_check(tmp_path: Path) -> None:
    document, querier, clock = analyse(tmp_path, traffic())
    assert document.verdict is Verdict.PASS, document.reason
    assert [check["elapsed_s"] for check in document.checks] == [float(second) for second in range(11)]
    assert document.checks[-1]["canary"]["requests_since_start"] == 400
    assert document.settings["planned_looks"] == 11
    assert clock.now == 10.0
    assert len(querier.asked) == 11 * 6
    assert document.started_at is not None and document.decided_at == document.started_at + 10.0


def test_a_canary_serving_errors_fails_at_the_first_significant_check(tmp_path: Path) -> None:
    document, _, _ = analyse(tmp_path, traffic(canary_error_share=1.0))
    assert document.verdict is Verdict.FAIL
    # 40 requests, all failed, by the second check: far past any per-test level.
    assert len(document.checks) == 2
    assert document.failed_check is not None
    assert document.failed_check.metric == "canary_error_rate"
    assert document.failed_check.threshold == 0.01
    assert "40 of 40 canary requests failed" in document.failed_check.detail


def test_a_slow_canary_fails_on_the_share_of_slow_requests(tmp_path: Path) -> None:
    document, _, _ = analyse(tmp_path, traffic(canary_slow_share=1.0))
    assert document.verdict is Verdict.FAIL
    assert document.failed_check is not None and document.failed_check.metric == "canary_p99_latency_ms"
    assert "slower than 500 ms" in document.failed_check.detail


def test_the_threshold_rule_fails_after_the_failure_limit(tmp_path: Path) -> None:
    document, _, _ = analyse(tmp_path, traffic(canary_error_share=0.5), "--judge", "threshold",
                             "--failure-limit", "3")
    assert document.verdict is Verdict.FAIL
    assert [check["outcome"] for check in document.checks] == ["breach", "breach", "breach"]
    assert "3 failed checks in total" in document.reason


def test_no_data_keeps_looking_and_is_inconclusive_at_the_end(tmp_path: Path) -> None:
    document, _, _ = analyse(tmp_path, nothing)
    assert document.verdict is Verdict.INCONCLUSIVE
    assert len(document.checks) == 11
    assert "still no data" in document.reason and "no canary series" in document.reason


def test_no_data_under_the_fail_policy_fails_at_once(tmp_path: Path) -> None:
    document, _, _ = analyse(tmp_path, nothing, "--on-no-data", "fail")
    assert document.verdict is Verdict.FAIL
    assert len(document.checks) == 1
    assert document.failed_check is not None and document.failed_check.metric == "canary_error_rate"


def test_too_little_traffic_is_inconclusive(tmp_path: Path) -> None:
    document, _, _ = analyse(tmp_path, traffic(canary_rps=2))
    assert document.verdict is Verdict.INCONCLUSIVE
    assert "too little traffic: 20 canary requests" in document.reason


def test_an_unreachable_prometheus_spends_the_error_budget_then_the_policy_decides(tmp_path: Path) -> None:
    document, querier, _ = analyse(tmp_path, unreachable, "--max-consecutive-errors", "2")
    assert document.verdict is Verdict.INCONCLUSIVE
    assert "3 checks in a row could not be judged (budget 2)" in document.reason
    assert [check["outcome"] for check in document.checks] == ["error", "error", "error"]
    # After the first unreachable answer the rest of a check is skipped, not asked again.
    assert [name for _, name in querier.asked] == ["canary_counters"] * 3
    problems = document.checks[0]["query_problems"]
    assert problems["stable_counters"]["detail"].startswith("skipped: Prometheus at http://x unreachable")


@pytest.mark.parametrize(("policy", "verdict", "checks"), [
    ("fail", Verdict.FAIL, 2),
    ("inconclusive", Verdict.INCONCLUSIVE, 2),
    ("continue", Verdict.INCONCLUSIVE, 11),
])
def test_the_error_policy(tmp_path: Path, policy: str, verdict: Verdict, checks: int) -> None:
    document, _, _ = analyse(tmp_path, unreachable, "--max-consecutive-errors", "1", "--on-error", policy)
    assert document.verdict is verdict
    assert len(document.checks) == checks
    if policy == "continue":
        assert "bake time over, last check not judged" in document.reason


def test_errors_that_recover_do_not_end_the_analysis(tmp_path: Path) -> None:
    healthy = traffic()

    def flaky(name: str, at_s: float) -> QueryResult:
        return unreachable(name, at_s) if int(at_s) % 2 else healthy(name, at_s)

    document, _, _ = analyse(tmp_path, flaky, "--max-consecutive-errors", "1")
    assert document.verdict is Verdict.PASS, document.reason
    assert [check["outcome"] for check in document.checks].count("error") == 5


def test_nan_and_several_series_from_a_custom_metric_follow_their_policies(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.yaml"
    metrics.write_text("- name: ratio\n  query: max(ratio)\n  min: 0.5\n- name: depth\n  query: depth\n  max: 10\n")
    healthy = traffic()

    def script(name: str, at_s: float) -> QueryResult:
        if name == "custom:ratio":
            return one_value(name, math.nan)
        if name == "custom:depth":
            return classify(name, (Sample((("pod", "a"),), 1.0), Sample((("pod", "b"),), 2.0)), expect_one=True)
        return healthy(name, at_s)

    document, _, _ = analyse(tmp_path, script, "--metrics-file", str(metrics), "--max-consecutive-errors", "1")
    assert document.verdict is Verdict.INCONCLUSIVE
    assert "2 checks in a row could not be judged" in document.reason
    assert "several series where one was expected" in document.reason
    phases = {m["metric"]: m["phase"] for m in document.checks[-1]["metrics"]}
    assert (phases["ratio"], phases["depth"]) == ("nan", "multiple")


def test_a_slow_check_skips_the_slots_it_overran_and_the_last_look_is_final(tmp_path: Path) -> None:
    # Each query takes 0.4 s: a check (6 queries) takes 2.4 s, so checks land on every third slot.
    document, _, clock = analyse(tmp_path, traffic(), query_s=0.4)
    assert document.verdict is Verdict.PASS, document.reason
    assert [check["index"] for check in document.checks] == [0, 3, 6, 9, 10]
    assert document.checks[-1]["elapsed_s"] >= 10.0
    assert len(document.checks) <= document.settings["planned_looks"]
    assert clock.now < 15.0


def test_an_interrupt_yields_an_inconclusive_verdict_of_the_checks_so_far(tmp_path: Path) -> None:
    healthy = traffic()

    def interrupted(name: str, at_s: float) -> QueryResult:
        if at_s >= 3.0:
            raise KeyboardInterrupt
        return healthy(name, at_s)

    with pytest.raises(AnalysisInterrupted) as caught:
        analyse(tmp_path, interrupted)
    document = caught.value.document
    assert document.verdict is Verdict.INCONCLUSIVE and "interrupted" in document.reason
    assert len(document.checks) == 3


def test_the_plan_counts_every_statistical_test_run_at_a_check(tmp_path: Path) -> None:
    configured = settings(tmp_path, "--confidence", "0.99")
    assert configured.plan.tests_per_look == STATISTICAL_TESTS_PER_LOOK
    assert configured.plan.alpha_per_test == pytest.approx(0.01 / (11 * STATISTICAL_TESTS_PER_LOOK))
    document, _, _ = analyse(tmp_path, traffic())
    statistical = [m for m in document.checks[-1]["metrics"] if m["samples"] is not None]
    assert len(statistical) == STATISTICAL_TESTS_PER_LOOK
