"""The analysis loop driven by scripted Prometheus answers on a simulated clock: every outcome (pass, fail,
no data, errors) and policy, in milliseconds. The settings come from the real flag parser."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from rollguard.steps.analyze import flags
from rollguard.steps.analyze.check_log import log_start
from rollguard.steps.analyze.loop import AnalysisInterrupted, CheckRecords, run_checks
from rollguard.steps.analyze.settings import AnalysisSettings, settings_from_args
from rollguard.steps.judgment.check import STATISTICAL_TESTS_PER_LOOK
from rollguard.steps.judgment.outcomes import Verdict
from rollguard.steps.metrics.istio_queries import DURATION_BUCKETS, REQUESTS
from rollguard.steps.metrics.query_results import QueryResult, QueryStatus, Sample, classify
from rollguard.steps.options import UsageError
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


def counters(requests: float, errors: float, slow: float,
             faster: tuple[tuple[str, float], ...] = ()) -> tuple[Sample, ...]:
    """Raw Istio counters of one version: requests by code, and the duration buckets at 500 ms and +Inf
    (`faster`: more buckets, (le, count))."""
    return (
        Sample(((("__name__", REQUESTS), ("response_code", "200"))), requests - errors),
        Sample(((("__name__", REQUESTS), ("response_code", "500"))), errors),
        *(Sample(((("__name__", DURATION_BUCKETS), ("le", le))), count) for le, count in faster),
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
    # Two queries a check: the error rate and the p99 come from the counters' answers.
    assert [name for _, name in querier.asked] == ["canary_counters", "stable_counters"] * 11
    assert list(document.settings["queries"]) == ["canary_counters", "stable_counters"]
    assert {check["query_s"] for check in document.checks} == {0.0}  # the simulated queries take no time
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
    document, querier, _ = analyse(tmp_path, traffic(canary_error_share=0.5), "--judge", "threshold",
                                   "--failure-limit", "3")
    assert document.verdict is Verdict.FAIL
    assert [check["outcome"] for check in document.checks] == ["breach", "breach", "breach"]
    assert "3 failed checks in total" in document.reason
    # The threshold rule judges Prometheus's own rates: it alone sends the point-value queries, and shows them.
    every_query = ["canary_counters", "stable_counters", "canary_error_rate", "stable_error_rate",
                   "canary_p99_latency_ms", "stable_p99_latency_ms"]
    assert [name for _, name in querier.asked] == every_query * 3
    assert list(document.settings["queries"]) == every_query
    assert document.checks[0]["canary"]["p99_latency_ms"] == 40.0  # the scripted p99 answer, not the buckets


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
    # Each query takes 1.2 s: a check (2 queries) takes 2.4 s, so checks land on every third slot.
    document, _, clock = analyse(tmp_path, traffic(), query_s=1.2)
    assert {check["query_s"] for check in document.checks} == {2.4}
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
    configured = settings(tmp_path, "--confidence", "0.99", "--judge", "bonferroni")
    assert configured.plan is not None and configured.plan.tests_per_look == STATISTICAL_TESTS_PER_LOOK
    assert configured.plan.alpha_per_test == pytest.approx(0.01 / (11 * STATISTICAL_TESTS_PER_LOOK))
    document, _, _ = analyse(tmp_path, traffic(), "--judge", "bonferroni")
    statistical = [m for m in document.checks[-1]["metrics"] if m["samples"] is not None]
    assert len(statistical) == STATISTICAL_TESTS_PER_LOOK


def test_an_open_ended_analysis_watches_until_the_canary_turns_bad(tmp_path: Path) -> None:
    """--duration 0: no bake time, no pass. An hour at 0.5 % errors, then 5 %: the tests restarted every
    --window find it within a minute; a single test from the start would need 12 (the second run)."""
    healthy = traffic()

    def turns_bad(name: str, at_s: float) -> QueryResult:
        if name != "canary_counters":
            return healthy(name, at_s)
        # 40 requests/s; 0.5 % fail for an hour, then 5 % (cumulative counters, as Prometheus has them).
        errors = 40 * min(at_s, 3600) * 0.005 + 40 * max(0.0, at_s - 3600) * 0.05
        return classify(name, counters(40 * at_s, errors, 0), expect_one=False)

    document, _, _ = analyse(tmp_path, turns_bad, "--duration", "0", "--interval", "5s")
    assert document.verdict is Verdict.FAIL, document.reason
    assert document.failed_check is not None and document.failed_check.metric == "canary_error_rate"
    assert 3600 < document.checks[-1]["elapsed_s"] <= 3660
    assert "strongest since the restart at +3600s" in document.failed_check.detail
    assert document.settings["duration"] == "forever" and document.settings["planned_looks"] is None
    assert document.settings["restart_every"] == "1m"
    # An analysis of hours keeps its verdict bounded: the first checks and the latest ones.
    records = CheckRecords()
    for index in range(5000):
        records.append({"index": index})
    kept = [record["index"] for record in records.kept()]
    assert len(kept) == CheckRecords.FIRST + CheckRecords.LATEST and kept[0] == 0 and kept[-1] == 4999

    single, _, _ = analyse(tmp_path, turns_bad, "--duration", "0", "--interval", "5s", "--window", "3h")
    assert single.verdict is Verdict.FAIL and single.checks[-1]["elapsed_s"] > 3600 + 600


def test_a_stopped_open_ended_analysis_is_inconclusive_and_says_why(tmp_path: Path) -> None:
    healthy = traffic()

    def stopped(name: str, at_s: float) -> QueryResult:
        if at_s >= 30.0:
            raise KeyboardInterrupt
        return healthy(name, at_s)

    with pytest.raises(AnalysisInterrupted) as caught:
        analyse(tmp_path, stopped, "--duration", "forever")
    document = caught.value.document
    assert document.verdict is Verdict.INCONCLUSIVE
    assert "open-ended analysis was stopped after 30s and 30 checks without a proven breach" in document.reason


def test_bonferroni_cannot_run_open_ended(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="needs a --duration"):
        settings(tmp_path, "--duration", "0", "--judge", "bonferroni")


def test_the_anytime_judge_counts_since_the_start_not_the_window(tmp_path: Path) -> None:
    """The window caps the point values and the Bonferroni counts; the sequential tests need every request
    since the start (a martingale over a sliding window would not be one)."""
    document, _, _ = analyse(tmp_path, traffic(), "--window", "3s")
    last = document.checks[-1]
    assert last["canary"]["requests"] == 120 and last["canary"]["requests_since_start"] == 400
    error_rate = next(m for m in last["metrics"] if m["metric"] == "canary_error_rate")
    assert error_rate["samples"] == 400
    shares = {"canary_error_rate": 0.005, "canary_vs_stable_error_rate": 0.0, "canary_p99_latency_ms": 0.005}
    assert document.settings["alpha_per_test"] == pytest.approx(shares)


class ResumingQuerier(ScriptedQuerier):
    """Also answers the counters at an earlier moment (every selector of the union `A @ T or B @ T ...`),
    from the same script."""

    def vector(self, query: str) -> QueryResult:
        if " @ " not in query:
            return self._answer(query)
        selectors = [part.rsplit(" @ ", 1) for part in query.split(" or ")]
        assert all(len(part) == 2 for part in selectors), f"a selector without @: {query}"
        assert len({at for _, at in selectors}) == 1, "every selector at the same moment"
        promql, at = " or ".join(selector for selector, _ in selectors), selectors[0][1]
        self.asked.append((self.clock.now, "@ " + self.names[promql]))
        return self.script(self.names[promql], float(at) - SimulatedClock().wall())


def test_a_restarted_analysis_resumes_the_same_test_from_its_first_start(tmp_path: Path) -> None:
    """--started-at: the counts and the bake time run from the first start (the counters then are read with
    PromQL's @ modifier), so a step restarted after 30 s decides exactly when the first run would have."""
    script = traffic(canary_rps=5, canary_error_share=0.04)
    whole, _, _ = analyse(tmp_path, script, "--duration", "2m")
    assert whole.verdict is Verdict.FAIL
    fail_at = whole.checks[-1]["elapsed_s"]
    assert fail_at > 30

    configured = settings(tmp_path, "--duration", "2m", "--started-at", str(SimulatedClock().wall()))
    clock = SimulatedClock()
    clock.now = 30.0  # the first run died; this one starts 30 s after it
    querier = ResumingQuerier(configured, clock, script)
    resumed = run_checks(configured, querier, clock)
    assert resumed.verdict is Verdict.FAIL
    assert resumed.checks[0]["elapsed_s"] == 30.0
    assert resumed.checks[-1]["elapsed_s"] == fail_at
    assert resumed.checks[-1]["canary"]["errors_since_start"] == whole.checks[-1]["canary"]["errors_since_start"]
    assert resumed.started_at == SimulatedClock().wall() and resumed.settings["started_at"] is not None
    assert querier.asked[0][1] == "@ canary_counters"


def test_a_latency_limit_between_buckets_is_judged_soundly_and_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """--max-p99-latency-ms 300: histogram_quantile reads 389 ms for a canary whose p99 is 250 ms (the old rule
    failed it); the share slower than 500 ms (0.2 %) proves nothing, so it passes, and the verdict says why."""
    healthy = traffic(canary_slow_share=0.002)

    def interpolated(name: str, at_s: float) -> QueryResult:
        if name != "canary_counters":
            return healthy(name, at_s)
        # 98 % within 250 ms, 99.8 % within 500 ms: histogram_quantile(0.99) = 250 + 250 × 0.01 / 0.018.
        requests = 40 * at_s
        return classify(name, counters(requests, 0, requests * 0.002, (("250", requests * 0.98),)), expect_one=False)

    configured = settings(tmp_path, "--max-p99-latency-ms", "300")
    with caplog.at_level("WARNING", logger="rollguard.analyze"):
        log_start(configured)
    assert "can prove only a p99 above 500 ms" in caplog.text
    document, _, _ = analyse(tmp_path, interpolated, "--max-p99-latency-ms", "300")
    assert document.verdict is Verdict.PASS, document.reason
    latency = next(m for m in document.checks[-1]["metrics"] if m["metric"] == "canary_p99_latency_ms")
    assert latency["phase"] == "ok" and latency["samples"] == 400
    assert latency["value"] == pytest.approx(250 + 250 * 0.01 / 0.018)
    assert document.checks[-1]["canary"]["p99_latency_ms"] == latency["value"]


def test_the_window_error_rate_and_p99_shown_are_computed_from_the_counters_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No error-rate or p99 query in the default mode: the verdict's and the log's window values are the
    counters' increases over the window (at most --window, 3 s here), and the p99 is histogram_quantile's
    interpolation over the buckets' increases."""
    healthy = traffic()

    def script(name: str, at_s: float) -> QueryResult:
        if name != "canary_counters":
            return healthy(name, at_s)
        # 40 requests/s; 1 failed a second until +5 s, then 3. Per second: 30 within 100 ms, 38 within 250 ms,
        # 39.8 within 500 ms.
        errors = at_s * 1 if at_s <= 5 else 5 + (at_s - 5) * 3
        buckets = (("100", 30 * at_s), ("250", 38 * at_s))
        return classify(name, counters(40 * at_s, errors, 0.2 * at_s, buckets), expect_one=False)

    with caplog.at_level("INFO", logger="rollguard.analyze"):
        document, _, _ = analyse(tmp_path, script, "--window", "3s", "--max-error-rate", "0.2",
                                 "--max-error-rate-increase", "0.2")
    assert document.verdict is Verdict.PASS, document.reason
    last = document.checks[-1]
    canary, stable = last["canary"], last["stable"]
    assert (canary["window_start_s"], canary["requests"], canary["errors"]) == (7.0, 120, 9)
    assert canary["error_rate"] == 9 / 120
    # rank 0.99 × 120 = 118.8 lies between 114 (≤ 250 ms) and 119.4 (≤ 500 ms) requests.
    assert canary["p99_latency_ms"] == pytest.approx(250 + 250 * (118.8 - 114) / (119.4 - 114))
    assert stable["error_rate"] == stable["errors"] / stable["requests"] == 2 / 300  # 1.5 failed, counted as 2
    assert stable["p99_latency_ms"] == pytest.approx(495.0)  # all within 500 ms: 0.99 of the way from 0
    latency = next(m for m in last["metrics"] if m["metric"] == "canary_p99_latency_ms")
    assert latency["value"] == canary["p99_latency_ms"]
    # The first check has no window yet: no rate and no quantile, as Prometheus's 0 / 0.
    first = document.checks[0]["canary"]
    assert (first["requests"], first["error_rate"], first["p99_latency_ms"]) == (0, None, None)
    line = next(record.getMessage() for record in caplog.records if record.getMessage().startswith("check 11/11"))
    assert "canary 120 req, 9 failed (9 HTTP 500)" in line and "| stable 300 req" in line, line
    assert ", p99 495ms |" in line and "canary_p99_latency_ms 472ms" in line, line
