"""The plain threshold rule's replay (pure), the run sequence, and the experiment's bad-input checks."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rollguard.experiment.automated import scenario_sequence
from rollguard.experiment.threshold_replay import ThresholdRule, check_times, decision_time
from rollguard.sandbox.alert_rules import ERROR_ALERT, LATENCY_ALERT, AlertSettings
from rollguard.sandbox.scenarios import scenario_signal


def test_rule_decides_at_the_limit_th_failed_check() -> None:
    points = [(0.0, 0.0), (5.0, 0.2), (10.0, 0.0), (15.0, 0.3), (20.0, 0.4)]
    decision = decision_time(points, 0.01, ThresholdRule(5.0, 3), observed_until=100.0)
    assert (decision.at, decision.extrapolated, decision.failed_checks) == (20.0, False, 3)


def test_consecutive_rule_restarts_after_a_good_check() -> None:
    points = [(0.0, 0.2), (5.0, 0.2), (10.0, 0.0), (15.0, 0.3), (20.0, 0.4)]
    assert decision_time(points, 0.01, ThresholdRule(5.0, 3, consecutive=True), observed_until=100.0).at is None
    assert decision_time(points, 0.01, ThresholdRule(5.0, 3, consecutive=False), observed_until=100.0).at == 15.0


def test_no_data_neither_counts_nor_breaks_a_streak() -> None:
    points = [(0.0, 0.2), (5.0, None), (10.0, 0.2), (15.0, None), (20.0, 0.2)]
    assert decision_time(points, 0.01, ThresholdRule(5.0, 3, consecutive=True), observed_until=100.0).at == 20.0


def test_checks_past_the_observed_data_are_marked_extrapolated() -> None:
    points = [(0.0, 0.0), (5.0, 0.5), (10.0, math.inf), (15.0, math.inf)]
    decision = decision_time(points, 0.01, ThresholdRule(5.0, 3), observed_until=7.0)
    assert (decision.at, decision.extrapolated) == (15.0, True)


def test_check_times_cover_the_window() -> None:
    assert check_times(10.0, 20.0, 5.0) == [10.0, 15.0, 20.0]
    with pytest.raises(ValueError):
        check_times(0.0, 1.0, 0.0)


def test_mixed_runs_are_half_faulty_half_healthy_and_seeded() -> None:
    sequence = scenario_sequence("mixed", 10, seed=3)
    assert sorted(sequence) == ["faulty"] * 5 + ["healthy"] * 5
    assert sequence == scenario_sequence("mixed", 10, seed=3)
    assert scenario_sequence("slow", 3, seed=3) == ["slow"] * 3


def _experiment(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", "experiment", *arguments],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--runs", "0"], "--runs: '0' must be at least 1"),
        (["--scenario", "flaky"], "argument --scenario: invalid choice: 'flaky'"),
        (["--mode", "manual", "--judge", "both"], "manual mode has no judge"),
    ],
)
def test_bad_flags_stop_before_anything_starts(tmp_path: Path, arguments: list[str], message: str) -> None:
    report = tmp_path / "report"
    completed = _experiment(*arguments, "--report-dir", str(report))
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert not (report / "results.json").exists()
    assert "prometheus started" not in completed.stderr


def test_report_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    completed = _experiment("--report-dir", str(blocker))
    assert completed.returncode == 2
    assert f"--report-dir {blocker} is a file" in completed.stderr
    assert blocker.read_text() == "keep me"


def test_report_dir_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("")
    completed = _experiment("--report-dir", str(blocker / "inside"))
    assert completed.returncode == 2
    assert "is not writable" in completed.stderr


def test_cluster_target_without_kube_config_is_refused(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": ""}
    completed = _experiment("--target", "cluster", "--namespace", "shop", "--service", "reviews",
                            "--report-dir", str(tmp_path / "report"), env=env)
    assert completed.returncode == 2, completed.stderr
    assert "no Kubernetes configuration" in completed.stderr
    missing = _experiment("--target", "cluster", "--namespace", "shop", "--service", "reviews",
                          "--kubeconfig", str(tmp_path / "nope"), "--report-dir", str(tmp_path / "report"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    names = _experiment("--target", "cluster", "--report-dir", str(tmp_path / "report"))
    assert names.returncode == 2 and "needs --namespace and --service" in names.stderr


def test_each_scenario_is_watched_on_its_own_signal() -> None:
    alert = AlertSettings(window="5s", max_error_rate=0.02, max_p99_ms=300.0)
    slow = scenario_signal("slow", alert)
    assert (slow.threshold, slow.unit, slow.alert_name) == (300.0, "ms", LATENCY_ALERT)
    assert "histogram_quantile(0.99" in slow.query and "[5s]" in slow.query
    for scenario in ("faulty", "healthy"):  # a healthy run is watched where a false rollback would show
        signal = scenario_signal(scenario, alert)
        assert (signal.threshold, signal.unit, signal.alert_name) == (0.02, "fraction", ERROR_ALERT)
        assert 'response_code=~"5.."' in signal.query and 'destination_version="v2"' in signal.query
    assert slow.alert_firing_query() == f'ALERTS{{alertname="{LATENCY_ALERT}",alertstate="firing"}}'
