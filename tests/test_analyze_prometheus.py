"""`rollguard analyze` against a real Prometheus (1 s scrape) scraping synthetic Istio traffic.

One Prometheus + exporter per module; each test uses its own service name, so tests do not see
each other's series. Exit codes and verdict files are asserted, never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support_prometheus import NAMESPACE, IstioEnvironment, query, wait_for_result

from rollguard.sandbox.synthetic_traffic import SyntheticTraffic, TrafficProfile
from rollguard.steps import cli
from rollguard.steps.analyze.check_reader import resumed_baseline_query
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.metrics.counter_window import CounterSnapshot, counts_between
from rollguard.steps.metrics.istio_queries import DURATION_BUCKETS, counters_query, error_rate_query, version_selector
from rollguard.steps.metrics.query_results import Sample

HEALTHY = TrafficProfile(requests_per_s=40, error_rate=0.005, latency_ms=30)
STABLE = TrafficProfile(requests_per_s=100, error_rate=0.005, latency_ms=30)


def start_traffic(env: IstioEnvironment, service: str, canary: TrafficProfile, stable: TrafficProfile = STABLE) -> None:
    """Stable and canary traffic for `service`, and wait until Prometheus has scraped both."""
    env.traffic.set(service, "v1", stable)
    env.traffic.set(service, "v2", canary)
    env.wait_for_requests(service, "v1")
    if canary.requests_per_s > 0:
        env.wait_for_requests(service, "v2")


def analyze(
    env: IstioEnvironment, service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any], str]:
    """Run `rollguard analyze` in this process; (exit code, verdict JSON, log)."""
    verdict_file = tmp_path / f"{service}.json"
    code = cli.main([
        "analyze", "--prometheus-url", env.url, "--namespace", NAMESPACE, "--service", service,
        "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s", "--verdict-file", str(verdict_file),
        "--verdict-word-file", str(tmp_path / f"{service}.word"), *extra,
    ])
    log = capsys.readouterr().err
    return code, json.loads(verdict_file.read_text()), log


def test_a_restarted_analysis_resumes_from_the_first_start(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--started-at reads the counters at the first start from Prometheus (the @ modifier) and counts from there."""
    start_traffic(istio_env, "resumed", HEALTHY)
    code, first, _ = analyze(istio_env, "resumed", tmp_path, capsys, "--duration", "3s", "--min-requests", "10")
    assert code == ExitCode.OK, first["reason"]
    counted = first["checks"][-1]["canary"]["requests_since_start"]
    time.sleep(2.5)  # a few more scrapes: the resumed run must see requests the first one did not
    code, resumed, log = analyze(istio_env, "resumed", tmp_path, capsys, "--duration", "3s", "--min-requests", "10",
                                 "--started-at", str(first["started_at"]))
    assert code == ExitCode.OK, resumed["reason"]
    assert resumed["started_at"] == pytest.approx(first["started_at"])
    assert len(resumed["checks"]) == 1 and resumed["checks"][0]["elapsed_s"] >= 3.0  # the bake time is long over
    assert resumed["checks"][0]["canary"]["requests_since_start"] > counted
    assert "query_problems" in resumed["checks"][0] and not resumed["checks"][0]["query_problems"], log


def answered_queries(url: str) -> float:
    """Instant queries Prometheus has answered so far, by its own count: every code of
    `prometheus_http_requests_total{handler="/api/v1/query"}`, read from its /metrics."""
    time.sleep(0.1)  # Prometheus counts a request after writing its answer
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line)


def retries(verdict: dict[str, Any]) -> int:
    """Queries sent again after a failed attempt, over the whole analysis (the checks' query_problems)."""
    return sum(problem["attempts"] - 1 for check in verdict["checks"] for problem in check["query_problems"].values())


def test_the_default_judge_sends_two_queries_a_check_counted_by_prometheus(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13: at most 3 queries per check in the default mode. Prometheus's own count of the instant
    queries it answered, before and after: 2 per check (canary and stable counters); the threshold rule,
    which judges Prometheus's rates, still sends its 6; a resumed analysis adds its 2 one-time baselines."""
    start_traffic(istio_env, "counted", HEALTHY)
    sent: dict[str, tuple[float, int]] = {}
    for judge, extra in (("statistical", ()), ("threshold", ("--judge", "threshold")),
                         ("bonferroni", ("--judge", "bonferroni"))):
        before = answered_queries(istio_env.url)
        code, verdict, _ = analyze(istio_env, "counted", tmp_path, capsys, "--duration", "5s", "--min-requests",
                                   "10", *extra)
        assert code == ExitCode.OK, verdict["reason"]
        checks, per_check = len(verdict["checks"]), len(verdict["settings"]["queries"])
        sent[judge] = (answered_queries(istio_env.url) - before, checks)
        assert sent[judge][0] == per_check * checks + retries(verdict), (judge, sent[judge])
        assert all(check["query_s"] >= 0 for check in verdict["checks"])
        if judge == "threshold":
            assert per_check == 6
        else:
            assert per_check == 2 and sent[judge][0] <= 3 * checks + retries(verdict)
    before = answered_queries(istio_env.url)
    code, resumed, _ = analyze(istio_env, "counted", tmp_path, capsys, "--duration", "5s", "--min-requests", "10",
                               "--started-at", str(time.time() - 3))
    assert code == ExitCode.OK, resumed["reason"]
    sent["resumed"] = (answered_queries(istio_env.url) - before, len(resumed["checks"]))
    assert sent["resumed"][0] == 2 + 2 * len(resumed["checks"]) + retries(resumed), sent["resumed"]
    print(f"queries answered by Prometheus (sent, checks): {sent}")


def test_the_window_p99_is_prometheus_histogram_quantile_of_the_same_counters(istio_env: IstioEnvironment) -> None:
    """The p99 rollguard computes from two counter snapshots equals Prometheus's histogram_quantile over the
    same buckets' increases (`B @ T2 - B @ T1`, summed by le), with several series (codes, reporters)."""
    service = "quantiles"
    start_traffic(istio_env, service, TrafficProfile(requests_per_s=60, error_rate=0.05, latency_ms=30,
                                                     slow_rate=0.03, slow_latency_ms=800))
    time.sleep(2.0)  # every series born before the window: the subtraction below drops newborns
    first = time.time()
    time.sleep(3.0)
    last = time.time()
    counters = counters_query(NAMESPACE, service, "v2", unattributed=True)

    def snapshot(at: float) -> CounterSnapshot:
        answer = query(istio_env.url, resumed_baseline_query(counters, at))
        return CounterSnapshot.from_samples(at, tuple(
            Sample(tuple(sorted(series["metric"].items())), float(series["value"][1])) for series in answer))

    window = counts_between(snapshot(first), snapshot(last), 500.0)
    assert window.requests > 100 and window.errors > 0
    buckets = f"{DURATION_BUCKETS}{version_selector(NAMESPACE, service, 'v2')}"
    for quantile in (0.5, 0.9, 0.99):
        promql = f"histogram_quantile({quantile}, sum by (le) ({buckets} @ {last:.3f} - {buckets} @ {first:.3f}))"
        theirs = float(query(istio_env.url, promql)[0]["value"][1])
        assert window.latency_quantile_ms(quantile) == pytest.approx(theirs, rel=1e-9), (quantile, window)


def metric_phases(verdict: dict[str, Any], metric: str) -> list[str]:
    return [m["phase"] for check in verdict["checks"] for m in check["metrics"] if m["metric"] == metric]


def test_healthy_canary_passes(istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start_traffic(istio_env, "healthy", HEALTHY)
    code, verdict, log = analyze(istio_env, "healthy", tmp_path, capsys, "--duration", "5s", "--min-requests", "100")
    assert code == ExitCode.OK, verdict["reason"]
    assert verdict["verdict"] == "pass"
    assert (tmp_path / "healthy.word").read_text() == "pass"
    assert verdict["failed_check"] is None
    assert verdict["started_at"] <= verdict["decided_at"]
    checks = len(verdict["checks"])
    assert verdict["settings"]["planned_looks"] == 6
    assert 2 <= checks <= 6  # a check that overran its slot on a busy machine skips it
    last = verdict["checks"][-1]
    assert last["canary"]["requests_since_start"] >= 100
    assert {m["metric"]: m["threshold"] for m in last["metrics"]} == {
        "canary_error_rate": 0.01, "canary_vs_stable_error_rate": 0.01, "canary_p99_latency_ms": 500.0}
    # Every statistical test carries its sample count; the comparison is implied by the limit under the defaults.
    assert {m["metric"] for m in last["metrics"] if m["samples"] is not None} == {
        "canary_error_rate", "canary_p99_latency_ms"}
    # The queries sent are logged, rendered, and one line per check.
    assert f"query canary_counters: {counters_query(NAMESPACE, 'healthy', 'v2', unattributed=True)}\n" in log
    assert ('query stable_counters: {reporter="destination",destination_workload_namespace="demo",'
            'destination_service_name="healthy",destination_version="v1",__name__=~"istio_requests_total|') in log
    assert "query canary_error_rate" not in log and "query canary_p99_latency_ms" not in log
    assert log.count(" analyze INFO check ") == checks


def test_all_errors_fail_within_a_few_checks(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "broken", HEALTHY)
    istio_env.traffic.set("broken", "v2", TrafficProfile(requests_per_s=40, error_rate=1.0))
    summary_file = tmp_path / "summary.json"
    code, verdict, _ = analyze(istio_env, "broken", tmp_path, capsys, "--duration", "2m",
                               "--verdict-summary-file", str(summary_file))
    assert code == ExitCode.FAIL
    assert (tmp_path / "broken.word").read_text() == "fail"
    summary = json.loads(summary_file.read_text())
    assert "checks" not in summary and summary["check_count"] == len(verdict["checks"])
    assert summary["last_check"] == verdict["checks"][-1]
    assert {k: summary[k] for k in ("verdict", "reason", "failed_check", "started_at", "decided_at")} == {
        k: verdict[k] for k in ("verdict", "reason", "failed_check", "started_at", "decided_at")}
    assert verdict["failed_check"]["metric"] in ("canary_error_rate", "canary_vs_stable_error_rate")
    assert verdict["failed_check"]["threshold"] is not None
    # Stopped at the first decisive failure, long before the 121 planned checks of the bake time
    # (a few checks of slack for a busy machine whose scrapes come late).
    assert len(verdict["checks"]) <= 8
    assert "canary requests failed" in verdict["reason"] or "vs stable" in verdict["reason"]


def test_latency_only_regression_fails(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "sluggish", TrafficProfile(requests_per_s=40, latency_ms=30, slow_rate=1.0,
                                                  slow_latency_ms=900))
    code, verdict, _ = analyze(istio_env, "sluggish", tmp_path, capsys, "--duration", "2m")
    assert code == ExitCode.FAIL
    assert verdict["failed_check"]["metric"] == "canary_p99_latency_ms"
    assert verdict["failed_check"]["threshold"] == 500.0
    assert "slower than 500 ms" in verdict["failed_check"]["detail"]
    assert set(metric_phases(verdict, "canary_error_rate")) == {"ok"}


def test_two_point_regression_at_low_traffic_fails_once_enough_requests_exist(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """2.5 % errors against a 1 % limit: a handful of requests says nothing; about a hundred say fail."""
    start_traffic(istio_env, "regressed", TrafficProfile(requests_per_s=80, error_rate=0.025))
    code, verdict, _ = analyze(istio_env, "regressed", tmp_path, capsys, "--duration", "45s")
    assert code == ExitCode.FAIL, verdict["reason"]
    assert verdict["failed_check"]["metric"] in ("canary_error_rate", "canary_vs_stable_error_rate")
    failing = verdict["checks"][-1]
    assert failing["canary"]["requests"] >= 40  # the evidence took dozens of requests (typically 100-300)
    early = [check for check in verdict["checks"] if check["canary"].get("requests", 0) < 20]
    assert early, "expected checks with little traffic before the verdict"
    assert all(check["outcome"] != "failed" for check in early)


def test_no_traffic_is_inconclusive_never_pass(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "idle", TrafficProfile(requests_per_s=0))
    code, verdict, log = analyze(istio_env, "idle", tmp_path, capsys, "--duration", "3s")
    assert code == ExitCode.INCONCLUSIVE
    assert verdict["verdict"] == "inconclusive"
    assert "no data" in verdict["reason"] and "no canary series" in verdict["reason"]
    assert "canary_error_rate no_data" in log


def test_no_traffic_with_fail_policy_fails_at_once(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "idle2", TrafficProfile(requests_per_s=0))
    code, verdict, _ = analyze(istio_env, "idle2", tmp_path, capsys, "--duration", "1m", "--on-no-data", "fail")
    assert code == ExitCode.FAIL
    assert len(verdict["checks"]) == 1
    assert verdict["failed_check"]["metric"] == "canary_error_rate"


def test_too_little_traffic_is_inconclusive(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "trickle", TrafficProfile(requests_per_s=3))
    code, verdict, _ = analyze(istio_env, "trickle", tmp_path, capsys, "--duration", "3s", "--min-requests", "500")
    assert code == ExitCode.INCONCLUSIVE
    assert "too little traffic" in verdict["reason"]


def write_metrics(tmp_path: Path, text: str) -> str:
    path = tmp_path / "metrics.yaml"
    path.write_text(text)
    return str(path)


def test_nan_custom_metric_follows_the_no_data_policy(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    istio_env.traffic.set_gauge("rollguard_test_ratio", float("nan"), service="nanny")
    start_traffic(istio_env, "nanny", HEALTHY)
    metrics = write_metrics(tmp_path, '- name: ratio\n  query: max(rollguard_test_ratio{service="{{ service }}"})\n'
                                      "  min: 0.5\n")
    code, verdict, log = analyze(istio_env, "nanny", tmp_path, capsys, "--duration", "1m", "--metrics-file", metrics,
                                 "--on-no-data", "inconclusive")
    assert code == ExitCode.INCONCLUSIVE
    assert "ratio: the query returned NaN" in verdict["reason"]
    assert metric_phases(verdict, "ratio") == ["nan"]
    assert "query custom:ratio (line 1): max(rollguard_test_ratio{service=\"nanny\"})" in log


def test_several_series_count_against_the_error_budget(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    istio_env.traffic.set_gauge("rollguard_test_depth", 1.0, service="twins", pod="a")
    istio_env.traffic.set_gauge("rollguard_test_depth", 2.0, service="twins", pod="b")
    start_traffic(istio_env, "twins", HEALTHY)
    metrics = write_metrics(tmp_path, '- name: depth\n  query: rollguard_test_depth{service="{{ service }}"}\n'
                                      "  max: 10\n")
    code, verdict, _ = analyze(istio_env, "twins", tmp_path, capsys, "--duration", "1m", "--metrics-file", metrics,
                               "--max-consecutive-errors", "1")
    assert code == ExitCode.INCONCLUSIVE
    assert "2 checks in a row could not be judged" in verdict["reason"]
    assert "several series where one was expected" in verdict["reason"]
    assert metric_phases(verdict, "depth") == ["multiple", "multiple"]


def test_custom_metric_breach_fails_after_the_failure_limit(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    istio_env.traffic.set_gauge("rollguard_test_queue", 250.0, service="queued")
    start_traffic(istio_env, "queued", HEALTHY)
    metrics = write_metrics(tmp_path, '- name: queue\n  query: max(rollguard_test_queue{service="{{ service }}"})\n'
                                      "  max: 100\n")
    code, verdict, _ = analyze(istio_env, "queued", tmp_path, capsys, "--duration", "1m", "--metrics-file", metrics,
                               "--failure-limit", "2")
    assert code == ExitCode.FAIL
    assert verdict["failed_check"] == {"metric": "queue", "value": 250.0, "threshold": 100.0,
                                       "detail": "value 250, must be <= 100", "samples": None}  # not a share
    assert len(verdict["checks"]) == 2


def test_threshold_rule_fails_after_n_failed_checks(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "plain", TrafficProfile(requests_per_s=40, error_rate=1.0))
    code, verdict, _ = analyze(istio_env, "plain", tmp_path, capsys, "--duration", "1m", "--judge", "threshold",
                               "--failure-limit", "3", "--consecutive")
    assert code == ExitCode.FAIL
    assert "3 failed checks in a row" in verdict["reason"]
    outcomes = [check["outcome"] for check in verdict["checks"]]
    # A first check may find no rate yet (rate() needs two scrapes); then three breaches in a row.
    assert outcomes[-3:] == ["breach", "breach", "breach"] and len(outcomes) <= 8


def test_prometheus_killed_mid_analysis_retries_then_error_policy(prometheus: Any, tmp_path: Path) -> None:
    """A dedicated Prometheus, killed after the first checks: retries are logged, then the outage decides."""
    with SyntheticTraffic(NAMESPACE, seed=3) as traffic:
        traffic.set("outage", "v1", STABLE)
        traffic.set("outage", "v2", HEALTHY)
        server = prometheus([traffic.target])
        verdict_file = tmp_path / "verdict.json"
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "rollguard"), "analyze", "--prometheus-url", server.url,
             "--namespace", NAMESPACE, "--service", "outage", "--stable-version", "v1", "--canary-version", "v2",
             "--interval", "1s", "--duration", "2m", "--max-consecutive-errors", "2", "--query-attempts", "3",
             "--verdict-file", str(verdict_file)],
            stderr=subprocess.PIPE, text=True,
        )
        try:
            assert process.stderr is not None
            lines = []
            for line in process.stderr:  # bounded: the analysis ends by itself
                lines.append(line)
                if " check 2/" in line:
                    server.kill()
            code = process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    log = "".join(lines)
    assert code == ExitCode.INCONCLUSIVE, log
    verdict = json.loads(verdict_file.read_text())
    assert verdict["verdict"] == "inconclusive"
    assert "3 checks in a row could not be judged (budget 2)" in verdict["reason"]
    assert "unreachable after 3 attempts" in verdict["reason"]
    assert "attempt 1 of 3, retrying" in log and "attempt 2 of 3, retrying" in log
    assert [check["outcome"] for check in verdict["checks"]][-3:] == ["error", "error", "error"]


def test_every_flag_can_come_from_the_environment(istio_env: IstioEnvironment, tmp_path: Path) -> None:
    """Argo parameters map onto ROLLGUARD_<NAME> variables: a run configured by environment alone."""
    import os

    start_traffic(istio_env, "envonly", TrafficProfile(requests_per_s=0))
    verdict_file = tmp_path / "verdict.json"
    variables = {
        "ROLLGUARD_PROMETHEUS_URL": istio_env.url, "ROLLGUARD_NAMESPACE": NAMESPACE, "ROLLGUARD_SERVICE": "envonly",
        "ROLLGUARD_STABLE_VERSION": "v1", "ROLLGUARD_CANARY_VERSION": "v2", "ROLLGUARD_INTERVAL": "500ms",
        "ROLLGUARD_DURATION": "2s", "ROLLGUARD_ON_NO_DATA": "inconclusive", "ROLLGUARD_CONSECUTIVE": "true",
        "ROLLGUARD_VERDICT_FILE": str(verdict_file),
    }
    completed = subprocess.run([str(Path(sys.executable).parent / "rollguard"), "analyze"],
                               env={**os.environ, **variables}, capture_output=True, text=True, timeout=60)
    assert completed.returncode == ExitCode.INCONCLUSIVE, completed.stderr
    verdict = json.loads(verdict_file.read_text())
    settings = verdict["settings"]
    assert (settings["service"], settings["interval"], settings["duration"]) == ("envonly", "500ms", "2s")
    assert settings["on_no_data"] == "inconclusive" and settings["consecutive"] is True
    assert len(verdict["checks"]) == 1 and "no canary series" in verdict["reason"]


# gRPC, a canary that never answers, TCP: failures that a destination's HTTP codes do not show.
GRPC_STABLE = TrafficProfile(requests_per_s=100, error_rate=0.005, latency_ms=30, protocol="grpc")


def failed_check(verdict: dict[str, Any]) -> dict[str, Any]:
    assert verdict["failed_check"] is not None, verdict["reason"]
    return dict(verdict["failed_check"])


def test_grpc_canary_failing_with_unavailable_fails(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Half the calls UNAVAILABLE (14), every one HTTP 200: failed, and the evidence names the gRPC status."""
    start_traffic(istio_env, "grpcbad", TrafficProfile(requests_per_s=40, error_rate=0.5, protocol="grpc"),
                  GRPC_STABLE)
    code, verdict, log = analyze(istio_env, "grpcbad", tmp_path, capsys, "--duration", "2m")
    assert code == ExitCode.FAIL, verdict["reason"]
    evidence = failed_check(verdict)
    assert evidence["metric"] in ("canary_error_rate", "canary_vs_stable_error_rate")
    assert "gRPC UNAVAILABLE (14)" in evidence["detail"] and "gRPC UNAVAILABLE (14)" in verdict["reason"]
    assert "HTTP" not in evidence["detail"]
    assert len(verdict["checks"]) <= 8
    assert "failed (" in log and "gRPC UNAVAILABLE (14)" in log
    # The threshold query (the alert's and the experiment's) sees the same failures.
    rate = wait_for_result(istio_env.url, error_rate_query(NAMESPACE, "grpcbad", "v2", "10s"), minimum=0.3)
    assert 0.3 <= float(rate[0]["value"][1]) <= 0.7


def test_healthy_grpc_canary_passes(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "grpcgood", TrafficProfile(requests_per_s=40, error_rate=0.0, latency_ms=30,
                                                        protocol="grpc"), GRPC_STABLE)
    code, verdict, _ = analyze(istio_env, "grpcgood", tmp_path, capsys, "--duration", "5s", "--min-requests", "100")
    assert code == ExitCode.OK, verdict["reason"]
    assert set(metric_phases(verdict, "canary_p99_latency_ms")) == {"ok"}


def test_mixed_http_and_grpc_service_counts_both_once(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One service, HTTP and gRPC, both reporters: every failure counted once, of either kind."""
    start_traffic(istio_env, "mixed", TrafficProfile(requests_per_s=60, error_rate=0.5, protocol="mixed"),
                  TrafficProfile(requests_per_s=100, error_rate=0.005, protocol="mixed"))
    code, verdict, _ = analyze(istio_env, "mixed", tmp_path, capsys, "--duration", "2m")
    assert code == ExitCode.FAIL, verdict["reason"]
    failures = verdict["checks"][-1]["canary"]["failures"]
    assert set(failures) == {"gRPC UNAVAILABLE (14)", "HTTP 500"}
    last = verdict["checks"][-1]["canary"]
    assert sum(failures.values()) == last["errors"] <= last["requests"]
    # Caller-reported twins are not counted: about half the canary's requests failed, not a quarter.
    assert last["errors"] >= 0.3 * last["requests"]


def test_grpc_error_codes_flag_changes_what_fails(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RESOURCE_EXHAUSTED is the caller's quota by default (like HTTP 429); a team may count it."""
    start_traffic(istio_env, "quota", TrafficProfile(requests_per_s=40, error_rate=0.5, protocol="grpc",
                                                     grpc_error_status=8), GRPC_STABLE)
    code, verdict, _ = analyze(istio_env, "quota", tmp_path, capsys, "--duration", "3s", "--min-requests", "20")
    assert code == ExitCode.OK, verdict["reason"]
    code, verdict, _ = analyze(istio_env, "quota", tmp_path, capsys, "--duration", "2m",
                               "--grpc-error-codes", "UNAVAILABLE,RESOURCE_EXHAUSTED")
    assert code == ExitCode.FAIL
    assert "gRPC RESOURCE_EXHAUSTED (8)" in failed_check(verdict)["detail"]
    assert verdict["settings"]["grpc_error_codes"] == "RESOURCE_EXHAUSTED,UNAVAILABLE"


def test_tcp_canary_with_failed_connections_fails(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "tcpbad", TrafficProfile(requests_per_s=40, error_rate=0.5, protocol="tcp"),
                  TrafficProfile(requests_per_s=100, protocol="tcp"))
    code, verdict, _ = analyze(istio_env, "tcpbad", tmp_path, capsys, "--duration", "2m")
    assert code == ExitCode.FAIL, verdict["reason"]
    assert "TCP connection UF (upstream connection failure)" in failed_check(verdict)["detail"]
    assert verdict["checks"][-1]["canary"]["tcp_connections"] == verdict["checks"][-1]["canary"]["requests"]


def test_healthy_tcp_canary_passes_and_says_latency_does_not_apply(
    istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start_traffic(istio_env, "tcpgood", TrafficProfile(requests_per_s=40, protocol="tcp"),
                  TrafficProfile(requests_per_s=100, protocol="tcp"))
    code, verdict, _ = analyze(istio_env, "tcpgood", tmp_path, capsys, "--duration", "5s", "--min-requests", "100")
    assert code == ExitCode.OK, verdict["reason"]
    latency = next(m for m in verdict["checks"][-1]["metrics"] if m["metric"] == "canary_p99_latency_ms")
    assert latency["phase"] == "skipped"
    assert "TCP connections, for which Istio measures no request latency" in latency["detail"]


@pytest.mark.parametrize("flag", ["UH", "UF"])
def test_canary_that_never_answers_fails_as_fast_as_one_that_answers_500(
    flag: str, istio_env: IstioEnvironment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The canary went down: its own series freeze; callers' proxies answer 503 UH (no ready endpoint) or
    UF (connection refused) and report them with reporter="source" only. Counted once, it fails at once."""
    service = f"down{flag.lower()}"
    start_traffic(istio_env, service, HEALTHY)
    istio_env.traffic.set(service, "v2", TrafficProfile(requests_per_s=40, down=flag))
    # From the scrape that shows the callers' failures on, the canary's own series are frozen.
    wait_for_result(istio_env.url, f'istio_requests_total{{reporter="source",destination_service_name="{service}",'
                                   f'response_flags="{flag}"}}')
    code, verdict, _ = analyze(istio_env, service, tmp_path, capsys, "--duration", "2m")
    assert code == ExitCode.FAIL, verdict["reason"]
    assert len(verdict["checks"]) <= 8  # not the 121 checks of the bake time, ending inconclusive
    evidence = failed_check(verdict)
    assert f"request {flag} at the caller" in evidence["detail"] and "never reached it" in evidence["detail"]
    last = verdict["checks"][-1]["canary"]
    assert last["errors"] == last["requests"]  # the frozen destination series add no requests and no twins
    # The alert's query agrees: all of the canary's recent requests failed.
    rate = wait_for_result(istio_env.url, error_rate_query(NAMESPACE, service, "v2", "5s"), minimum=0.9)
    assert float(rate[0]["value"][1]) <= 1.0
    # The stable's query does not take the failures no endpoint could be chosen for.
    stable = query(istio_env.url, error_rate_query(NAMESPACE, service, "v1", "5s", unattributed=False))
    assert float(stable[0]["value"][1]) < 0.1
