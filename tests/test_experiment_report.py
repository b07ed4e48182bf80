"""The experiment's records, statistics, report.md, CSV/JSON and timeline plot, on hand-made runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rollguard.experiment.records import RunRecord, load_results, save_results
from rollguard.experiment.report_markdown import render_report
from rollguard.experiment.summary import check_goals, percentile, spread, summarise
from rollguard.experiment.timeline_plot import plot_timeline
from rollguard.sandbox.results import Outcome, RunResult, append_result, between


def _faulty(run: int, breach: float, cut: float, *, alert: float | None = None, rule: float | None = None) -> RunRecord:
    record = RunRecord(
        run=run,
        scenario="faulty",
        outcome="rolled_back",
        fault_start=1000.0,
        first_breach=1000.0 + breach,
        alert_firing=None if alert is None else 1000.0 + alert,
        verdict_at=1000.0 + breach + 0.5,
        git_push=1000.0 + cut - 0.3,
        traffic_cut=1000.0 + cut,
        failed_requests=run * 10,
        total_requests=500,
        threshold_rule_decided_at=None if rule is None else 1000.0 + rule,
    )
    record.extra["series"] = [[995.0 + step, 0.0 if step < 5 else 1.0] for step in range(12)]
    return record


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([1, 2, 3, 4], 0.5) == pytest.approx(2.5)
    assert percentile(list(range(1, 21)), 0.95) == pytest.approx(19.05)
    assert percentile([7.0], 0.95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_spread_ignores_moments_that_did_not_happen() -> None:
    figures = spread([1.0, None, 3.0])
    assert (figures.count, figures.mean, figures.maximum) == (2, 2.0, 3.0)
    assert spread([None, None]).mean is None


def test_derived_durations() -> None:
    record = _faulty(1, breach=2.0, cut=4.0, alert=30.0, rule=10.0)
    assert record.breach_to_cut_s() == pytest.approx(2.0)
    assert record.fault_to_cut_s() == pytest.approx(4.0)
    assert record.alert_to_cut_s() == pytest.approx(-26.0)
    assert record.detection_ratio() == pytest.approx(2.5 / 10.0)
    assert RunRecord(run=1, scenario="healthy", outcome="promoted").fault_to_cut_s() is None


def test_between_is_none_when_a_moment_did_not_happen() -> None:
    assert between(10.0, 12.5) == pytest.approx(2.5)
    assert between(None, 12.5) is None and between(10.0, None) is None
    assert between(float("nan"), 12.5) is None and between(10.0, float("nan")) is None


def test_the_demo_result_and_the_experiment_record_derive_the_same_durations(tmp_path: Path) -> None:
    result = RunResult(scenario="faulty", outcome=Outcome.ROLLED_BACK, fault_start=1000.0, first_breach=1001.2345,
                       alert_firing=None, verdict_at=1001.5, git_push=1001.8, traffic_cut=1002.0004,
                       failed_requests=7, release_start=999.0)
    append_result(tmp_path, result)
    written = json.loads((tmp_path / "results.json").read_text())["runs"][0]
    assert written["run"] == 1 and written["outcome"] == "rolled_back"
    assert written["breach_to_cut_s"] == round(1002.0004 - 1001.2345, 3)  # results.json: to the millisecond
    record = RunRecord.from_dict(written)
    assert written["verdict_to_cut_s"] == round(1002.0004 - 1001.5, 3)
    for duration in ("breach_to_cut_s", "fault_to_cut_s", "alert_to_cut_s", "fault_to_verdict_s", "verdict_to_cut_s"):
        assert getattr(record, duration)() == getattr(result, duration)(), duration
    assert record.extra["release_start"] == 999.0 and record.faulty and not record.false_rollback


def test_goals_fail_when_a_run_is_slow_and_when_a_healthy_run_is_rolled_back() -> None:
    fast = [_faulty(run, breach=2.0, cut=3.0) for run in range(1, 20)]
    assert all(check.met for check in check_goals(fast))
    slow = [*fast, _faulty(20, breach=2.0, cut=70.0), _faulty(21, breach=2.0, cut=65.0)]
    by_goal = {check.goal: check.met for check in check_goals(slow)}
    assert by_goal["proposal: every automated rollback within 60 s of the fault"] is False
    assert by_goal["rollguard: fault → cut p95 ≤ 8 s"] is False
    assert by_goal["rollguard: verdict → cut p95 ≤ 1 s"] is False  # a slow cut after a quick verdict
    never_cut = _faulty(22, breach=2.0, cut=3.0)
    never_cut.traffic_cut, never_cut.outcome = None, "no_cut"
    by_goal = {check.goal: check.met for check in check_goals([*fast, never_cut])}
    assert by_goal["rollguard: breach → cut p95 ≤ 3 s"] is False, "a run that never rolled back met the goal"
    assert by_goal["rollguard: fault → cut p95 ≤ 8 s"] is False
    false_rollback = RunRecord(run=21, scenario="healthy", outcome="rolled_back")
    assert any(check.met is False and "false rollbacks" in check.goal for check in check_goals([false_rollback]))


def test_results_round_trip_through_json_and_csv(tmp_path: Path) -> None:
    records = [_faulty(1, 2.0, 3.5, rule=12.0), RunRecord(run=2, scenario="healthy", outcome="promoted")]
    save_results(records, tmp_path, {"scrape interval": "1s"})
    loaded, settings = load_results(tmp_path)
    assert settings == {"scrape interval": "1s"}
    assert [record.to_row() for record in loaded] == [record.to_row() for record in records]
    assert loaded[0].extra["series"] == records[0].extra["series"]
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["runs"][0]["breach_to_cut_s"] == pytest.approx(1.5)
    with (tmp_path / "results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 and rows[1]["traffic_cut"] == "" and rows[0]["outcome"] == "rolled_back"
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")], "temporary file left"


def test_report_has_runs_summary_goals_and_settings() -> None:
    records = [_faulty(run, breach=2.0, cut=3.0 + run / 10) for run in range(1, 6)]
    text = render_report(records, {"scrape interval": "1s"}, interrupted=True)
    assert "Interrupted" in text
    assert text.count("| faulty | automated |") == 5
    fault_to_cut = summarise(records)["fault → cut (s)"]
    assert f"| fault → cut (s) | 5 | {fault_to_cut.mean:.2f} |" in text
    assert "- scrape interval: 1s" in text and "- machine: " in text


def test_timeline_png_is_written(tmp_path: Path) -> None:
    records = [_faulty(run, breach=2.0, cut=3.0, alert=40.0 if run == 2 else None) for run in range(1, 4)]
    path = plot_timeline(records, 0.01, tmp_path / "timeline.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["timeline.png"], "written atomically: no temporary file left"
