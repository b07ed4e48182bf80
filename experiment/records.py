"""One experiment run as recorded: RunRecord (the sandbox's RunMoments plus the experiment's own fields), CSV/JSON I/O.

Timestamps are Unix seconds (float); a moment that did not happen in a run is null, not guessed.
The moments and the durations derived from them are the sandbox's (rollguard.sandbox.results), so
the demo's results.json and the experiment's mean the same by every name.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, fields
from io import StringIO
from pathlib import Path
from typing import Any

from rollguard.sandbox.results import RunMoments, between
from rollguard.sandbox.scenarios import FAULTY_SCENARIOS
from rollguard.steps.output_files import write_atomically

# The order of results.csv's columns (and of each run's keys in results.json), derived ones after these.
_RECORDED = ("run", "scenario", "outcome", "mode", "judge", "fault_start", "first_breach", "alert_firing",
             "verdict_at", "git_push", "traffic_cut", "failed_requests", "total_requests",
             "threshold_rule_decided_at", "notes")


@dataclass(kw_only=True)
class RunRecord(RunMoments):
    """The timestamps and counts of one run, as in the demo's results.json, plus the plain rule's decision."""

    run: int
    judge: str = "statistical"
    threshold_rule_decided_at: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def faulty(self) -> bool:
        """True for a run whose canary was broken on purpose (faulty or slow)."""
        return self.scenario in FAULTY_SCENARIOS

    @property
    def false_rollback(self) -> bool:
        """A healthy canary that was rolled back anyway."""
        return self.scenario == "healthy" and self.outcome == "rolled_back"

    def fault_to_threshold_rule_s(self) -> float | None:
        """Seconds from the fault's start to when the plain threshold rule would have decided."""
        return between(self.fault_start, self.threshold_rule_decided_at)

    def detection_ratio(self) -> float | None:
        """Our judge's detection time divided by the threshold rule's, on the same run's data."""
        ours, theirs = self.fault_to_verdict_s(), self.fault_to_threshold_rule_s()
        if ours is None or theirs is None or theirs <= 0:
            return None
        return ours / theirs

    def to_row(self) -> dict[str, Any]:
        """A flat dict: the recorded fields plus the derived durations (CSV and JSON)."""
        row = {name: getattr(self, name) for name in _RECORDED}
        row.update(
            breach_to_cut_s=self.breach_to_cut_s(),
            fault_to_cut_s=self.fault_to_cut_s(),
            verdict_to_cut_s=self.verdict_to_cut_s(),
            alert_to_cut_s=self.alert_to_cut_s(),
            fault_to_verdict_s=self.fault_to_verdict_s(),
            fault_to_threshold_rule_s=self.fault_to_threshold_rule_s(),
            detection_ratio=self.detection_ratio(),
            false_rollback=self.false_rollback,
        )
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Rebuild a record from results.json (derived keys are ignored, unknown keys kept in extra)."""
        names = {f.name for f in fields(cls)}
        known = {key: value for key, value in data.items() if key in names}
        derived = set(RunRecord(run=0, scenario="", outcome="").to_row())
        extra = {key: value for key, value in data.items() if key not in names and key not in derived}
        record = cls(**known)
        record.extra.update(extra)
        return record


def save_results(records: list[RunRecord], report_dir: Path, settings: dict[str, Any]) -> None:
    """Write results.json (settings + one object per run) and results.csv (one row per run)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    document = {"settings": settings, "runs": [{**record.to_row(), **record.extra} for record in records]}
    write_atomically(report_dir / "results.json", json.dumps(document, indent=2, sort_keys=False) + "\n")
    columns = list(RunRecord(run=0, scenario="", outcome="").to_row())
    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({key: "" if value is None else value for key, value in record.to_row().items()})
    write_atomically(report_dir / "results.csv", buffer.getvalue())


def load_results(report_dir: Path) -> tuple[list[RunRecord], dict[str, Any]]:
    """Read back what save_results wrote."""
    document = json.loads((report_dir / "results.json").read_text())
    return [RunRecord.from_dict(run) for run in document.get("runs", [])], document.get("settings", {})
