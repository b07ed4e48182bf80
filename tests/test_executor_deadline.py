"""A workflow's activeDeadlineSeconds: the running step is stopped, the workflow Fails as in Argo, onExit still runs."""

from __future__ import annotations

import calendar
import sys
import textwrap
import time
from pathlib import Path

from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.nodes import Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor

PY = sys.executable

# `slow` records its ARGO_DEADLINE and sleeps far past the deadline; `after` must never run; the exit handler
# (a rollback stand-in) records the status it saw, its own ARGO_DEADLINE, and takes a while itself.
DEADLINE = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: deadline}
spec:
  entrypoint: main
  onExit: exit-handler
  activeDeadlineSeconds: 2
  arguments:
    parameters: [{name: dir}]
  templates:
  - name: main
    steps:
    - - {name: slow, template: slow}
    - - {name: after, template: note, arguments: {parameters: [{name: file, value: after-ran}]}}
  - name: slow
    RETRY
    container:
      image: x
      command: [PYTHON, -c]
      args:
      - |
        import os, sys, time
        open(sys.argv[1] + "/slow-deadline", "w").write(os.environ["ARGO_DEADLINE"])
        time.sleep(SLEEP)
        sys.exit(1)
      - "{{workflow.parameters.dir}}"
  - name: note
    inputs: {parameters: [{name: file}]}
    container:
      image: x
      command: [PYTHON, -c, "import sys; open(sys.argv[1] + '/' + sys.argv[2], 'w').close()"]
      args: ["{{workflow.parameters.dir}}", "{{inputs.parameters.file}}"]
  - name: exit-handler
    steps:
    - - name: rollback
        template: rollback
        when: "'{{workflow.status}}' != 'Succeeded'"
  - name: rollback
    container:
      image: x
      command: [PYTHON, -c]
      args:
      - |
        import os, sys, time
        time.sleep(1.5)  # longer than nothing: the deadline must not stop the exit handler
        open(sys.argv[1] + "/rolled-back", "w").write(sys.argv[2] + " " + os.environ["ARGO_DEADLINE"])
      - "{{workflow.parameters.dir}}"
      - "{{workflow.status}}"
"""


def _run(tmp_path: Path, sleep: str = "30", retry: str = "") -> tuple[WorkflowResult, float]:
    path = tmp_path / "deadline.yaml"
    text = textwrap.dedent(DEADLINE).replace("PYTHON", PY).replace("SLEEP", sleep)
    path.write_text(text.replace("    RETRY\n", f"    retryStrategy: {retry}\n" if retry else ""))
    started = time.monotonic()
    result = LocalExecutor(load_files([path]), on_event=lambda _event: None).run("deadline", {"dir": str(tmp_path)})
    return result, time.monotonic() - started


def test_a_deadline_stops_the_running_step_fails_the_workflow_and_the_exit_handler_rolls_back(tmp_path: Path) -> None:
    result, took_s = _run(tmp_path)
    slow = result.node("main.slow")
    assert (slow.phase, slow.message) == (Phase.FAILED, "Step exceeded its deadline")
    assert (result.phase, result.message) == (Phase.FAILED, f"child '{slow.node_id}' failed")
    assert not (tmp_path / "after-ran").exists(), "a step started after the deadline"
    # the exit handler ran after the deadline, saw Failed, and has no deadline of its own
    status, exit_deadline = (tmp_path / "rolled-back").read_text().split()
    assert (status, exit_deadline) == ("Failed", "0001-01-01T00:00:00Z")
    assert result.exit_handler is not None and result.exit_handler.phase is Phase.SUCCEEDED
    step_deadline = calendar.timegm(time.strptime((tmp_path / "slow-deadline").read_text(), "%Y-%m-%dT%H:%M:%SZ"))
    assert (tmp_path / "rolled-back").stat().st_mtime >= step_deadline
    assert took_s < 20, "the step was not stopped at the deadline"


def test_retries_stop_at_the_deadline(tmp_path: Path) -> None:
    result, took_s = _run(tmp_path, sleep="0.1", retry="{limit: 50, backoff: {duration: 500ms}}")
    slow = result.node("main.slow")
    assert slow.phase is Phase.FAILED and slow.message.startswith("retry exceeded workflow deadline ")
    assert result.phase is Phase.FAILED and (tmp_path / "rolled-back").read_text().startswith("Failed ")
    assert took_s < 20


def test_a_workflow_within_its_deadline_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "deadline.yaml"
    text = textwrap.dedent(DEADLINE).replace("PYTHON", PY).replace("SLEEP", "0").replace("sys.exit(1)", "pass")
    path.write_text(text.replace("    RETRY\n", "").replace("activeDeadlineSeconds: 2", "activeDeadlineSeconds: 60"))
    result = LocalExecutor(load_files([path]), on_event=lambda _event: None).run("deadline", {"dir": str(tmp_path)})
    assert result.phase is Phase.SUCCEEDED, result.message
    assert (tmp_path / "after-ran").exists() and not (tmp_path / "rolled-back").exists()
