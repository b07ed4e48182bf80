"""`{{workflow.status}}`, `{{workflow.failures}}` and the workflow's phase take Argo's values for Argo's causes."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.nodes import Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor

PY = sys.executable

# The exit handler writes what it saw into `report`; `outcome` picks what the entrypoint does.
STATUS = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: status}
spec:
  entrypoint: ENTRY
  onExit: report
  arguments:
    parameters: [{name: report}, {name: outcome, value: ok}]
  templates:
  - name: steps-entry
    steps:
    - - {name: work, template: leaf}
  - name: leaf
    outputs:
      parameters:
      - name: answer
        valueFrom: {path: /nonexistent/rollguard-answer}
    container:
      image: x
      command: [PYTHON, -c, "import sys; sys.exit(0 if sys.argv[1] in ('ok', 'no-output') else 5)"]
      args: ["{{workflow.parameters.outcome}}"]
  - name: report
    container:
      image: x
      command: [PYTHON, -c, "import sys; open(sys.argv[1], 'w').write(sys.argv[2] + chr(10) + sys.argv[3])"]
      args: ["{{workflow.parameters.report}}", "{{workflow.status}}", "{{workflow.failures}}"]
"""


def _run(tmp_path: Path, entry: str, outcome: str, template: str = STATUS) -> tuple[WorkflowResult, str, object]:
    path = tmp_path / "status.yaml"
    text = template.replace("ENTRY", entry).replace("PYTHON", PY)
    if outcome == "ok":  # the leaf writes its output, so it can succeed
        text = text.replace("/nonexistent/rollguard-answer", str(tmp_path / "answer"))
        (tmp_path / "answer").write_text("42\n")
    path.write_text(textwrap.dedent(text))
    report = tmp_path / "report.txt"
    result = LocalExecutor(load_files([path]), on_event=lambda _event: None).run(
        "status", {"report": str(report), "outcome": outcome})
    status, failures = report.read_text().split("\n", 1)
    return result, status, json.loads(failures)


@pytest.mark.parametrize(
    ("entry", "outcome", "status"),
    [
        ("steps-entry", "ok", "Succeeded"),
        ("steps-entry", "fail", "Failed"),  # main container exit 5: node Failed
        ("steps-entry", "no-output", "Failed"),  # a steps entrypoint with an Error child is Failed (steps.go)
        ("leaf", "fail", "Failed"),
        ("leaf", "no-output", "Error"),  # exit 0 but the output parameter's file is missing: the node is Error
    ],
)
def test_workflow_status_is_argos(tmp_path: Path, entry: str, outcome: str, status: str) -> None:
    result, seen, failures = _run(tmp_path, entry, outcome)
    assert seen == status
    assert result.phase.value == status
    if status == "Succeeded":
        assert failures is None  # Argo marshals an empty (nil) list: null
        return
    assert isinstance(failures, list)
    (failure,) = [f for f in failures if f["templateName"] == "leaf"]
    expected_phase = "Error" if outcome == "no-output" else "Failed"
    assert failure["phase"] == expected_phase and failure["displayName"] in ("work", "leaf")
    assert failure["podName"].startswith(f"{result.name}-leaf-")
    assert ("exit code 5" in failure["message"]) if outcome == "fail" else ("answer" in failure["message"])


def test_a_failing_exit_handler_fails_a_succeeded_workflow_with_its_own_phase_and_message(tmp_path: Path) -> None:
    broken_handler = STATUS.replace("open(sys.argv[1], 'w').write(sys.argv[2] + chr(10) + sys.argv[3])",
                                    "open(sys.argv[1], 'w').write(sys.argv[2] + chr(10) + 'null'); sys.exit(7)")
    result, seen, _ = _run(tmp_path, "steps-entry", "ok", broken_handler)
    assert seen == "Succeeded"
    assert result.exit_handler is not None and result.exit_handler.phase is Phase.FAILED
    assert (result.phase, result.message) == (Phase.FAILED, "Error (exit code 7)")
