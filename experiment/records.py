"""One experiment run as recorded: the results.json contract, the durations derived from it, CSV/JSON I/O.

Timestamps are Unix seconds (float). A moment that did not happen in a run (the alert never fired
because the rollback came first, no cut for a promoted canary) is recorded as null, not guessed.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rollguard.steps.output_files import write_atomically

FAULTY_SCENARIOS = ("faulty", "slow")


@dataclass
class RunRecord:
    """The timestamps and counts of one run, as in the demo's results.json."""

    run: int
    scenario: str
    outcome: str
    mode: str = "automated"
    judge: str = "statistical"
    fault_start: float | None = None
    first_breach: float | None = None
    alert_firing: float | None = None
    verdict_at: float | None = None
    git_push: float | None = None
    traffic_cut: float | None = None
    failed_requests: int = 0
    total_requests: int = 0
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

    def breach_to_cut_s(self) -> float | None:
        """Seconds from the first threshold breach Prometheus saw to the router/VirtualService cut."""
        return _between(self.first_breach, self.traffic_cut)

    def fault_to_cut_s(self) -> float | None:
        """Seconds from the fault's start to the cut: what users lived through."""
        return _between(self.fault_start, self.traffic_cut)

    def alert_to_cut_s(self) -> float | None:
        """Seconds from the alert firing (the manual baseline's start) to the cut."""
        return _between(self.alert_firing, self.traffic_cut)

    def fault_to_verdict_s(self) -> float | None:
        """Seconds from the fault's start to rollguard's verdict."""
        return _between(self.fault_start, self.verdict_at)

    def fault_to_threshold_rule_s(self) -> float | None:
        """Seconds from the fault's start to when the plain threshold rule would have decided."""
        return _between(self.fault_start, self.threshold_rule_decided_at)

    def detection_ratio(self) -> float | None:
        """Our judge's detection time divided by the threshold rule's, on the same run's data."""
        ours, theirs = self.fault_to_verdict_s(), self.fault_to_threshold_rule_s()
        if ours is None or theirs is None or theirs <= 0:
            return None
        return ours / theirs

    def to_row(self) -> dict[str, Any]:
        """A flat dict: the recorded fields plus the derived durations (CSV and JSON)."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        row.update(
            breach_to_cut_s=self.breach_to_cut_s(),
            fault_to_cut_s=self.fault_to_cut_s(),
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


def _between(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or math.isnan(start) or math.isnan(end):
        return None
    return end - start


def save_results(records: list[RunRecord], report_dir: Path, settings: dict[str, Any]) -> None:
    """Write results.json (settings + one object per run) and results.csv (one row per run)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    document = {"settings": settings, "runs": [{**record.to_row(), **record.extra} for record in records]}
    write_atomically(report_dir / "results.json", json.dumps(document, indent=2, sort_keys=False) + "\n")
    rows = [record.to_row() for record in records]
    columns = list(RunRecord(run=0, scenario="", outcome="").to_row())
    from io import StringIO

    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    write_atomically(report_dir / "results.csv", buffer.getvalue())


def load_results(report_dir: Path) -> tuple[list[RunRecord], dict[str, Any]]:
    """Read back what save_results wrote."""
    document = json.loads((report_dir / "results.json").read_text())
    return [RunRecord.from_dict(run) for run in document.get("runs", [])], document.get("settings", {})


def record_as_dict(record: RunRecord) -> dict[str, Any]:
    """The record's own fields (not derived), for embedding elsewhere."""
    return asdict(record)
