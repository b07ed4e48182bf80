"""What a weight change reports: the outcome as JSON (--result-file) and the pushed SHA (--commit-file).

Both are written whole or not at all, on every exit path (done, refused, failed), so a workflow
always finds them in a known state.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rollguard.steps.gitops.git_publish import PublishOutcome, PublishState
from rollguard.steps.output_files import write_atomically
from rollguard.steps.weight_change.change import WeightChange


@dataclass
class StepReport:
    """Everything the step reports, written to --result-file."""

    action: str
    repo: str
    branch: str
    path: str
    virtual_service: str
    changed: bool = False
    dry_run: bool = False
    commit: str | None = None
    head: str | None = None
    pushed_at: float | None = None
    push_attempts: int = 0
    stable_weight: int | None = None
    canary_weight: int | None = None
    previous_stable_weight: int | None = None
    previous_canary_weight: int | None = None
    started_at: float = field(default_factory=time.time)
    layout: str | None = None
    render_check: dict[str, Any] | None = None
    argocd: dict[str, Any] | None = None
    live_patch: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def record_publish(self, outcome: PublishOutcome[WeightChange]) -> None:
        """Take in what happened in Git: the commit, the head, the weights before and after."""
        edit = outcome.change.edit
        self.changed = outcome.state is PublishState.PUSHED or (outcome.state is PublishState.DRY_RUN and edit.changed)
        self.commit = outcome.commit
        self.head = outcome.head
        self.pushed_at = outcome.pushed_at
        self.push_attempts = outcome.attempts
        self.stable_weight = edit.stable_weight
        self.canary_weight = edit.canary_weight
        self.previous_stable_weight = edit.before_stable_weight
        self.previous_canary_weight = edit.before_canary_weight
        self.warnings = list(edit.warnings)
        self.layout = outcome.change.layout


def write_outputs(report: StepReport, result_file: str | None, commit_file: str | None) -> None:
    """Write the report to `result_file` and the pushed SHA (empty if none) to `commit_file`, each if given."""
    if result_file:
        write_atomically(Path(result_file), json.dumps(asdict(report), indent=2) + "\n")
    if commit_file:
        write_atomically(Path(commit_file), report.commit or "")
