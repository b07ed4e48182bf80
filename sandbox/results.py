"""One run's record, shared by the demo and the experiment, and the demo's `results.json`.

`RunMoments` holds what every run records — Unix-time floats, or null for a moment that did not
happen (the alert never fired because the rollback came first; no cut for a promoted canary) — and
derives the durations from them; the experiment's RunRecord builds on it. The demo's RunResult adds
the release's context. `results.json` holds `{"runs": [...]}`, one RunResult per run with `run`
(1-based number in the file) and the derived seconds; a new run into the same report directory is
appended. rollguard.experiment.records reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from rollguard.steps.output_files import write_atomically

RESULTS_FILE = "results.json"


def between(start: float | None, end: float | None) -> float | None:
    """Seconds from `start` to `end`; None when either moment did not happen (None or NaN)."""
    if start is None or end is None or math.isnan(start) or math.isnan(end):
        return None
    return end - start


class Outcome(str, Enum):
    """How the release ended, as the Git remote and the router both show it."""

    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"
    INCOMPLETE = "incomplete"


@dataclass(kw_only=True)
class RunMoments:
    """The moments and counts of one run (Unix seconds, None when it did not happen) and their durations."""

    scenario: str
    outcome: str
    fault_start: float | None = None
    first_breach: float | None = None
    alert_firing: float | None = None
    verdict_at: float | None = None
    git_push: float | None = None
    traffic_cut: float | None = None
    failed_requests: int = 0
    mode: str = "automated"
    judge: str = ""
    total_requests: int = 0

    def breach_to_cut_s(self) -> float | None:
        """Seconds from the first threshold breach Prometheus saw to the router/VirtualService cut."""
        return between(self.first_breach, self.traffic_cut)

    def fault_to_cut_s(self) -> float | None:
        """Seconds from the fault's start to the cut: what users lived through."""
        return between(self.fault_start, self.traffic_cut)

    def alert_to_cut_s(self) -> float | None:
        """Seconds from the alert firing (the manual baseline's start) to the cut."""
        return between(self.alert_firing, self.traffic_cut)

    def verdict_to_cut_s(self) -> float | None:
        """Seconds from rollguard's verdict (the analysis's decided_at) to the cut: what acting on it costs."""
        return between(self.verdict_at, self.traffic_cut)

    def fault_to_verdict_s(self) -> float | None:
        """Seconds from the fault's start to rollguard's verdict."""
        return between(self.fault_start, self.verdict_at)


@dataclass(kw_only=True)
class RunResult(RunMoments):
    """One demo run: its moments plus the release's context (verdict, split, counts, settings)."""

    outcome: Outcome
    release_start: float = 0.0
    release_end: float = 0.0
    verdict: str | None = None
    failed_check: dict[str, Any] | None = None
    canary_requests: int = 0
    slow_requests: int = 0
    final_split: tuple[int, int] | None = None
    workflow_phase: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as written to results.json (derived seconds, to the millisecond, included for readers)."""
        record = {"run": 0, **asdict(self)}
        record["outcome"] = self.outcome.value
        record["final_split"] = list(self.final_split) if self.final_split else None
        record["breach_to_cut_s"] = _milliseconds(self.breach_to_cut_s())
        record["fault_to_cut_s"] = _milliseconds(self.fault_to_cut_s())
        record["verdict_to_cut_s"] = _milliseconds(self.verdict_to_cut_s())
        return record


def _milliseconds(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def read_results(report_dir: Path) -> list[dict[str, Any]]:
    """The runs already recorded in `report_dir` (empty when there is no results.json yet)."""
    path = report_dir / RESULTS_FILE
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return list(data.get("runs", []))


def append_result(report_dir: Path, run: RunResult) -> Path:
    """Add `run` to `report_dir/results.json` (written atomically) and return the file's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    runs = read_results(report_dir)
    runs.append({**run.to_json(), "run": len(runs) + 1})
    path = report_dir / RESULTS_FILE
    write_atomically(path, json.dumps({"runs": runs}, indent=2) + "\n")
    return path
