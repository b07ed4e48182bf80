"""The `results.json` contract of `rollguard demo`: one record per run, Unix-time floats (or null).

Fields per run: `scenario`, `outcome` (`rolled_back` | `promoted`; `incomplete` when the release
ended in neither state, e.g. interrupted), `fault_start`, `first_breach`, `alert_firing`,
`verdict_at`, `git_push`, `traffic_cut`, `failed_requests`, plus `run` (1-based number in the
file), `mode`, `judge`, `total_requests`, derived seconds and context — the shape
rollguard.experiment.records reads. The file holds `{"runs": [...]}`; a new run into the same
report directory is appended.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from rollguard.steps.output_files import write_atomically

RESULTS_FILE = "results.json"


class Outcome(str, Enum):
    """How the release ended, as the Git remote and the router both show it."""

    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"
    INCOMPLETE = "incomplete"


@dataclass
class RunResult:
    """One demo run's timeline and counts (times are Unix seconds; null when it did not happen)."""

    scenario: str
    outcome: Outcome
    fault_start: float | None
    first_breach: float | None
    alert_firing: float | None
    verdict_at: float | None
    git_push: float | None
    traffic_cut: float | None
    failed_requests: int
    mode: str = "automated"
    judge: str = ""
    total_requests: int = 0
    release_start: float = 0.0
    release_end: float = 0.0
    verdict: str | None = None
    failed_check: dict[str, Any] | None = None
    canary_requests: int = 0
    slow_requests: int = 0
    final_split: tuple[int, int] | None = None
    workflow_phase: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def breach_to_cut_s(self) -> float | None:
        """Seconds from the first threshold breach to the traffic cut (null if either is missing)."""
        return _between(self.first_breach, self.traffic_cut)

    def fault_to_cut_s(self) -> float | None:
        """Seconds from fault start to the traffic cut (null if either is missing)."""
        return _between(self.fault_start, self.traffic_cut)

    def to_json(self) -> dict[str, Any]:
        """The record as written to results.json (derived seconds included for readers)."""
        record = {"run": 0, **asdict(self)}
        record["outcome"] = self.outcome.value
        record["final_split"] = list(self.final_split) if self.final_split else None
        record["breach_to_cut_s"] = self.breach_to_cut_s()
        record["fault_to_cut_s"] = self.fault_to_cut_s()
        return record


def _between(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 3)


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
