"""--pod-start-delay: each container step attempt waits as a pod start would, its node Pending; a stop still works."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rollguard.sandbox.demo import release_switches
from rollguard.sandbox.demo_settings import DemoSettings
from rollguard.sandbox.executor.control import RunControl
from rollguard.sandbox.executor.loader import Library, load_files
from rollguard.sandbox.executor.nodes import Event, EventKind, Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.steps.cli import main as cli_main
from rollguard.steps.options import UsageError

DELAY_S = 0.5

# main: a container (which records when its process started), an approval (suspend), a nested steps
# template around a container that fails once and is retried; the exit handler is one more container.
RELEASE = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: pod-start}
spec:
  entrypoint: main
  onExit: exit-handler
  arguments:
    parameters: [{name: dir}]
  templates:
  - name: main
    steps:
    - - {name: first, template: clock}
    - - {name: approve, template: approve}
    - - {name: nested, template: nested}
  - name: nested
    steps:
    - - {name: flaky, template: flaky}
  - name: approve
    suspend: {}
  - name: clock
    outputs:
      parameters:
      - name: at
        valueFrom: {path: "{{workflow.parameters.dir}}/first-at"}
    container:
      image: x
      command: [PYTHON, -c, "import sys, time; open(sys.argv[1] + '/first-at', 'w').write(repr(time.time()))"]
      args: ["{{workflow.parameters.dir}}"]
  - name: flaky
    retryStrategy: {limit: 1}
    container:
      image: x
      command: [PYTHON, -c, "import sys; sys.exit(0 if sys.argv[1] == '1' else 3)"]
      args: ["{{retries}}"]
  - name: exit-handler
    container:
      image: x
      command: [PYTHON, -c, "print('exit handler ran')"]
"""

# `slow` is the step the stop lands on while its pod starts; `after` must never be created.
STOPPED = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: stopped-while-pending}
spec:
  entrypoint: main
  onExit: cleanup
  templates:
  - name: main
    steps:
    - - {name: slow, template: say}
    - - {name: after, template: say}
  - name: say
    container:
      image: x
      command: [PYTHON, -c, "print('main ran')"]
  - name: cleanup
    container:
      image: x
      command: [PYTHON, -c, "print('cleanup ran')"]
"""


def _library(tmp_path: Path, text: str, name: str = "workflow.yaml") -> Library:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("PYTHON", sys.executable))
    return load_files([path])


def _wait_for(events: list[Event], predicate: Callable[[Event], bool], timeout_s: float) -> Event:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = next((event for event in list(events) if predicate(event)), None)
        if found is not None:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no such event within {timeout_s} s: {[(e.kind.value, e.step) for e in events]}")


def test_each_container_attempt_waits_the_pod_start_and_no_other_node_does(tmp_path: Path) -> None:
    events: list[Event] = []
    executor = LocalExecutor(_library(tmp_path, RELEASE), on_event=events.append, control=RunControl(approve_after_s=0),
                             pod_start_delay_s=DELAY_S)
    result = executor.run("pod-start", {"dir": str(tmp_path)})
    assert result.phase is Phase.SUCCEEDED, result.message
    # one Pending per pod: the container, both attempts of the retried one, the exit handler's; none for the
    # steps nodes (main, main.nested) or the suspend node
    pending = [event.step for event in events if event.kind is EventKind.PENDING]
    assert pending == ["main.first", "main.nested.flaky", "main.nested.flaky", "onExit"]
    first = result.node("main.first")
    assert float(first.outputs["at"]) - first.started_at >= DELAY_S  # the process started a pod start after creation
    assert first.running_at - first.started_at >= DELAY_S and first.finished_at >= first.running_at
    exit_node = result.exit_handler
    assert exit_node is not None and exit_node.running_at - exit_node.started_at >= DELAY_S
    approve = result.node("main.approve")  # a suspend node is no pod: answered at once, no delay
    assert approve.finished_at - approve.started_at < DELAY_S
    flaky = result.node("main.nested.flaky")
    assert flaky.phase is Phase.SUCCEEDED and flaky.running_at - flaky.started_at >= DELAY_S


def test_a_stop_while_a_pod_starts_fails_the_node_unstarted_and_the_exit_handler_runs(tmp_path: Path) -> None:
    delay_s = 2.0
    events: list[Event] = []
    control = RunControl()
    executor = LocalExecutor(_library(tmp_path, STOPPED), on_event=events.append, control=control,
                             pod_start_delay_s=delay_s)
    outcome: dict[str, WorkflowResult] = {}
    worker = threading.Thread(target=lambda: outcome.update(result=executor.run("stopped-while-pending", {})))
    worker.start()
    try:
        _wait_for(events, lambda e: e.kind is EventKind.PENDING and e.step == "main.slow", 10.0)
        control.stop()
    finally:
        worker.join(20)
    result = outcome["result"]
    slow = result.node("main.slow")
    assert slow.phase is Phase.FAILED and slow.message == "workflow shutdown with strategy:  Stop"
    assert slow.running_at == 0.0 and slow.finished_at - slow.started_at < delay_s  # deleted while pending
    assert not [e for e in events if e.kind is EventKind.STARTED and e.step == "main.slow"], "main ran anyway"
    assert "main.after" not in [node.display_name for node in result.nodes]  # the failed group ended main
    assert result.phase is Phase.FAILED and result.message == "Stopped with strategy 'Stop'"
    assert result.exit_handler is not None and result.exit_handler.phase is Phase.SUCCEEDED
    assert "cleanup ran" in [e.text for e in events if e.kind is EventKind.LOG]


@pytest.mark.parametrize("command", ["run-local", "demo", "experiment"])
def test_a_bad_pod_start_delay_is_a_usage_error_naming_the_flag(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = {"run-local": [str(tmp_path / "x.yaml")], "demo": [], "experiment": ["--report-dir", str(tmp_path)]}
    with pytest.raises(SystemExit) as exited:
        cli_main([command, *extra[command], "--pod-start-delay", "soon"])
    assert exited.value.code == 2
    assert "--pod-start-delay" in capsys.readouterr().err


WITH_SWITCH = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: canary-release}
spec:
  entrypoint: main
  arguments:
    parameters: [SWITCH]
  templates:
  - name: main
    container: {image: x, command: [PYTHON, -c, "pass"]}
"""


def test_rollback_in_analysis_is_passed_only_to_a_template_that_declares_it(tmp_path: Path) -> None:
    def settings(value: str | None) -> DemoSettings:
        return DemoSettings(scenario="faulty", report_dir=tmp_path, rps=1, interval_s=1, analysis_duration_s=1,
                            window_s=1, schedule="10,100", min_requests=1, max_error_rate=0.01, max_p99_ms=500,
                            error_rate=0.5, latency_ms=0, alert_for_s=60, sync_delay_s=0, scrape_interval_s=1, seed=1,
                            workflow_dir=tmp_path, rollback_in_analysis=value)

    switch = "{name: rollback-in-analysis, value: 'true'}"
    declared = _library(tmp_path, WITH_SWITCH.replace("SWITCH", switch), "a.yaml")
    assert release_switches(declared, settings("false")) == {"rollback-in-analysis": "false"}
    assert release_switches(declared, settings(None)) == {}
    without = _library(tmp_path, WITH_SWITCH.replace("SWITCH", "{name: other, value: x}"), "b.yaml")
    assert release_switches(without, settings("false")) == {}  # what that template does anyway
    with pytest.raises(UsageError, match=r"--rollback-in-analysis true.*declares no parameter rollback-in-analysis"):
        release_switches(without, settings("true"))


def test_run_local_shows_each_pod_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stopped.yaml"
    path.write_text(textwrap.dedent(STOPPED).replace("PYTHON", sys.executable))
    assert cli_main(["run-local", str(path), "--pod-start-delay", "200ms"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Pending (pod starting: 0.2 s, --pod-start-delay)") == 3  # slow, after, the exit handler
    assert printed.index("== main.slow: Pending") < printed.index("[main.slow] main ran")


def test_the_workflow_deadline_passing_while_a_pod_starts_fails_it_unstarted(tmp_path: Path) -> None:
    events: list[Event] = []
    text = STOPPED.replace("  onExit: cleanup\n", "  onExit: cleanup\n  activeDeadlineSeconds: 1\n")
    executor = LocalExecutor(_library(tmp_path, text), on_event=events.append, pod_start_delay_s=1.5)
    result = executor.run("stopped-while-pending", {})  # the deadline (≤ 1 s after the start) comes first
    slow = result.node("main.slow")
    assert slow.phase is Phase.FAILED and slow.message == "Step exceeded its deadline" and slow.running_at == 0.0
    assert not [e for e in events if e.kind is EventKind.STARTED and e.step == "main.slow"], "main ran anyway"
    assert result.exit_handler is not None and result.exit_handler.phase is Phase.SUCCEEDED  # spared by the deadline
