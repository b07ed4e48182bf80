"""Automated mode: N independent releases in the sandbox, each timed from fault to traffic cut.

Each run is a whole `rollguard demo` release with a fresh sandbox (fresh Prometheus data, weights
reset to the seeded 90/10), so runs cannot leak into each other. While a run's sandbox is still up,
the canary's metric series is read for the timeline plot and, with `--judge both`, the plain
threshold rule is replayed over the same Prometheus data.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from rollguard.experiment.records import RunRecord
from rollguard.experiment.threshold_replay import ThresholdRule, replay
from rollguard.sandbox.demo import run_demo
from rollguard.sandbox.demo_settings import DemoSettings
from rollguard.sandbox.environment import Sandbox
from rollguard.sandbox.prometheus_queries import PrometheusQueryError, series_range
from rollguard.sandbox.results import RunResult
from rollguard.sandbox.scenarios import FAULTY_SCENARIOS, scenario_signal


def scenario_sequence(scenario: str, runs: int, seed: int) -> list[str]:
    """The scenario of each run; `mixed` is half faulty, half healthy, in a seeded random order."""
    if scenario != "mixed":
        return [scenario] * runs
    sequence = ["faulty" if index % 2 == 0 else "healthy" for index in range(runs)]
    random.Random(seed).shuffle(sequence)
    return sequence


def make_inspector(
    settings: DemoSettings, record_extra: dict[str, Any], rule: ThresholdRule | None
) -> Callable[[Sandbox, RunResult], None]:
    """A demo hook that stores the run's metric series (and the plain rule's decision) in `record_extra`."""

    def inspect(sandbox: Sandbox, result: RunResult) -> None:
        signal = scenario_signal(settings.scenario, sandbox.settings.alert)
        query, threshold = signal.query, signal.threshold
        begin = (result.fault_start or result.release_start) - 10.0
        end = max(result.release_end, result.traffic_cut or 0.0) + 2.0
        record_extra.update(series_query=query, series_unit=signal.unit, threshold=threshold)
        try:
            samples = series_range(sandbox.prometheus_url, query, begin, end, settings.scrape_interval_s)
            record_extra["series"] = [[sample.at, sample.value] for sample in samples]
            if rule is not None:
                observed_until = result.traffic_cut if result.traffic_cut is not None else result.release_end
                decision = replay(sandbox.prometheus_url, query, threshold, result.release_start, observed_until,
                                  rule, breach_at=result.first_breach,
                                  fault_persists=settings.scenario in FAULTY_SCENARIOS)
                record_extra.update(
                    threshold_rule_decided_at=decision.at,
                    threshold_rule_extrapolated=decision.extrapolated,
                    threshold_rule_failed_checks=decision.failed_checks,
                )
        except PrometheusQueryError as exc:
            record_extra["inspect_error"] = str(exc)

    return inspect


def run_one(
    index: int, base: DemoSettings, scenario: str, judge: str, rule: ThresholdRule | None, runs_dir: Path
) -> RunRecord:
    """One release in a fresh sandbox; returns its record (the demo's own output goes nowhere)."""
    settings = dataclasses.replace(
        base,
        scenario=scenario,
        report_dir=runs_dir,
        seed=base.seed + index,
        judge="statistical" if judge == "both" else judge,
    )
    extra: dict[str, Any] = {}
    result = run_demo(settings, Console(quiet=True), inspect=make_inspector(settings, extra, rule))
    row = {**result.to_json(), "run": index, "judge": judge}
    row["threshold_rule_decided_at"] = extra.pop("threshold_rule_decided_at", None)
    record = RunRecord.from_dict(row)
    record.extra.update(extra)
    return record
