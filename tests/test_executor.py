"""The local workflow executor runs small hand-written WorkflowTemplates the way Argo would."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from rollguard.sandbox.executor.errors import ExecutorError, ExpressionError, UnsupportedFeature
from rollguard.sandbox.executor.expressions import evaluate_when, substitute
from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.nodes import Event, EventKind, Phase
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.steps.cli import main as cli_main

PY = sys.executable


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("PYTHON", PY))
    return path


def _run(path: Path, parameters: dict[str, str] | None = None, events: list[Event] | None = None):
    library = load_files(sorted(path.parent.glob("*.yaml")))
    sink = events.append if events is not None else (lambda _event: None)
    name = next(iter(load_files([path]).definitions))
    return LocalExecutor(library, on_event=sink).run(name, parameters or {})


PASSING = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: pass-params
spec:
  entrypoint: main
  arguments:
    parameters:
      - name: word
        value: hello
      - name: out
  templates:
    - name: main
      steps:
        - - name: produce
            template: write
            arguments:
              parameters:
                - {name: text, value: "{{workflow.parameters.word}}-world"}
        - - name: consume
            template: echo
            arguments:
              parameters:
                - {name: text, value: "{{steps.produce.outputs.parameters.written}}"}
          - name: never
            template: echo
            when: "'{{steps.produce.outputs.parameters.written}}' == 'goodbye'"
            arguments:
              parameters:
                - {name: text, value: nope}
    - name: write
      inputs:
        parameters:
          - name: text
      outputs:
        parameters:
          - name: written
            valueFrom:
              path: "{{workflow.parameters.out}}"
      container:
        image: python:3.11
        command: [PYTHON, -c]
        args: ["import sys; open(sys.argv[1], 'w').write(sys.argv[2] + chr(10))", "{{workflow.parameters.out}}",
               "{{inputs.parameters.text}}"]
    - name: echo
      inputs:
        parameters:
          - name: text
      container:
        image: python:3.11
        command: [PYTHON, -c, "import sys; print('got', sys.argv[1])"]
        args: ["{{inputs.parameters.text}}"]
"""


def test_parameters_flow_from_outputs_to_the_next_step(tmp_path: Path) -> None:
    path = _write(tmp_path, "wf.yaml", PASSING)
    events: list[Event] = []
    result = _run(path, {"out": str(tmp_path / "out.txt")}, events)
    assert result.phase is Phase.SUCCEEDED
    assert result.node("main.produce").outputs == {"written": "hello-world"}
    assert result.node("main.never").phase is Phase.SKIPPED
    logs = [event.text for event in events if event.kind is EventKind.LOG and event.step == "main.consume"]
    assert logs == ["got hello-world"]


def test_unknown_and_missing_workflow_parameters_are_clear_errors(tmp_path: Path) -> None:
    path = _write(tmp_path, "wf.yaml", PASSING)
    with pytest.raises(ExecutorError, match="pass -p out=VALUE"):
        _run(path)
    with pytest.raises(ExecutorError, match="no workflow parameter named colour"):
        _run(path, {"out": "x", "colour": "red"})


EXIT_HANDLER = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: exit-on-failure
spec:
  entrypoint: main
  onExit: cleanup
  arguments:
    parameters:
      - name: marker
  templates:
    - name: main
      steps:
        - - name: tolerated
            template: fail
            continueOn:
              failed: true
        - - name: react
            template: note
            when: "{{steps.tolerated.status}} == Failed && {{steps.tolerated.exitCode}} == 3"
            arguments:
              parameters: [{name: text, value: reacted}]
        - - name: broken
            template: fail
        - - name: after-broken
            template: note
            arguments:
              parameters: [{name: text, value: must-not-run}]
    - name: fail
      retryStrategy:
        limit: "2"
      container:
        image: x
        command: [PYTHON, -c, "import sys; print('failing'); sys.exit(3)"]
    - name: note
      inputs:
        parameters: [{name: text}]
      container:
        image: x
        command: [PYTHON, -c, "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"]
        args: ["{{workflow.parameters.marker}}", "{{inputs.parameters.text}}"]
    - name: cleanup
      steps:
        - - name: on-failure
            templateRef:
              name: shared-notes
              template: note
            when: "{{workflow.status}} != Succeeded"
            arguments:
              parameters: [{name: text, value: "exit handler saw {{workflow.status}}"}]
"""

SHARED = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: shared-notes
spec:
  arguments:
    parameters:
      - name: marker
  templates:
    - name: note
      inputs:
        parameters: [{name: text}]
      container:
        image: x
        command: [PYTHON, -c, "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + chr(10))"]
        args: ["{{workflow.parameters.marker}}", "{{inputs.parameters.text}}"]
"""


def test_continue_on_when_retries_and_exit_handler_on_failure(tmp_path: Path) -> None:
    path = _write(tmp_path, "release.yaml", EXIT_HANDLER)
    _write(tmp_path, "shared.yaml", SHARED)
    marker = tmp_path / "marker.txt"
    events: list[Event] = []
    result = _run(path, {"marker": str(marker)}, events)
    assert result.phase is Phase.FAILED
    broken = result.node("main.broken")
    assert result.message == f"child '{broken.node_id}' failed"  # Argo's steps.go wording, with Argo's node id
    assert (broken.exit_code, broken.message) == (3, "No more retries left")  # the retry node's message, as Argo
    assert marker.read_text().splitlines() == ["reacted", "exit handler saw Failed"]
    assert result.exit_handler is not None and result.exit_handler.phase is Phase.SUCCEEDED
    attempts = [e for e in events if e.kind is EventKind.STARTED and e.step == "main.broken"]
    assert len(attempts) == 3  # the first try and two retries


@pytest.mark.parametrize(
    ("snippet", "feature"),
    [
        (["dag:", "  tasks: []"], "dag"),
        (["script:", "  image: x", "  source: print(1)"], "script"),
        (["resource:", "  action: create"], "resource"),
        (["container:", "  image: x", "  command: [echo]", "sidecars: []"], "sidecars"),
    ],
)
def test_unsupported_template_features_are_refused_before_running(
    tmp_path: Path, snippet: list[str], feature: str
) -> None:
    header = "kind: WorkflowTemplate\nmetadata: {name: odd}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n"
    path = tmp_path / "odd.yaml"
    path.write_text(header + "".join(f"    {line}\n" for line in snippet))
    with pytest.raises(UnsupportedFeature, match=f"template 'main'.*`{feature}`"):
        load_files([path])


def test_with_param_and_expression_templates_are_refused(tmp_path: Path) -> None:
    text = """
    apiVersion: argoproj.io/v1alpha1
    kind: WorkflowTemplate
    metadata: {name: loops}
    spec:
      entrypoint: main
      templates:
      - name: main
        steps:
        - - name: each
            template: main
            withParam: "[1, 2]"
    """
    path = tmp_path / "loops.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(UnsupportedFeature, match=r"step 'each'.*`withParam`"):
        load_files([path])
    with pytest.raises(UnsupportedFeature, match="expression template"):
        substitute("{{=sprig.upper('a')}}", {}, "here")


def test_when_conditions() -> None:
    assert evaluate_when("fail == fail", "t")
    assert evaluate_when("'pass' != fail", "t")
    assert evaluate_when("10 > 9 && (0 == 1 || !false)", "t")
    assert not evaluate_when("10 < 9", "t")
    assert evaluate_when("10 == 10.0", "t")
    # As govaluate (Argo's expression library): quoted values stay strings.
    assert not evaluate_when("'1.0' == '1'", "t")
    assert not evaluate_when("'10' == 10", "t")
    assert not evaluate_when("'9' < '10'", "t")  # alphabetical
    assert evaluate_when("pass > fail", "t")
    with pytest.raises(ExpressionError, match="two numbers or two strings"):
        evaluate_when("'a' < 1", "t")
    with pytest.raises(ExpressionError, match="cannot parse"):
        evaluate_when("my-app == x", "t")
    with pytest.raises(ExpressionError, match="cannot evaluate"):
        evaluate_when("pass ==", "t")
    with pytest.raises(ExpressionError, match="not true or false"):
        evaluate_when("pass", "t")
    with pytest.raises(ExpressionError, match="unknown reference"):
        substitute("{{steps.x.outputs.parameters.y}}", {"a": "b"}, "t")


def test_run_local_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "wf.yaml", PASSING)
    code = cli_main(["run-local", str(path), "-p", f"out={tmp_path / 'o.txt'}", "-p", "word=bye"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "[main.consume] got bye-world" in printed
    assert "Succeeded" in printed.splitlines()[-1]
    assert cli_main(["run-local", str(path), "-p", "nonsense"]) == 2
    assert cli_main(["run-local", str(tmp_path / "missing.yaml")]) == 2


RAW_ARTIFACT = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: raw}
spec:
  entrypoint: main
  arguments:
    parameters: [{name: dir}]
  templates:
    - name: main
      steps:
        - - name: read
            template: read
            arguments:
              parameters: [{name: text, value: '{"verdict": "fail"}'}]
    - name: read
      inputs:
        parameters: [{name: text}]
        artifacts:
          - name: reason
            path: "{{workflow.parameters.dir}}/reason.json"
            raw:
              data: "{{inputs.parameters.text}}"
      container:
        image: x
        command: [PYTHON, -c, "import sys; print(open(sys.argv[1]).read())"]
        args: ["{{workflow.parameters.dir}}/reason.json"]
"""


def test_raw_input_artifact_is_written_before_the_step(tmp_path: Path) -> None:
    path = _write(tmp_path, "raw.yaml", RAW_ARTIFACT)
    events: list[Event] = []
    result = _run(path, {"dir": str(tmp_path / "work")}, events)
    assert result.phase is Phase.SUCCEEDED
    assert [e.text for e in events if e.kind is EventKind.LOG] == ['{"verdict": "fail"}']


WORKFLOW_REF = """
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {generateName: hook-}
spec:
  workflowTemplateRef: {name: slow-or-fast}
  arguments:
    parameters: [{name: seconds, value: "5"}]
---
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: slow-or-fast}
spec:
  entrypoint: main
  arguments:
    parameters: [{name: seconds, value: "0"}]
  templates:
    - name: main
      timeout: 500ms
      container:
        image: x
        command: [PYTHON, -c, "import sys, time; time.sleep(float(sys.argv[1]))"]
        args: ["{{workflow.parameters.seconds}}"]
"""


def test_workflow_from_template_ref_and_step_timeout(tmp_path: Path) -> None:
    path = _write(tmp_path, "hook.yaml", WORKFLOW_REF)
    library = load_files([path])
    executor = LocalExecutor(library, on_event=lambda _event: None)
    result = executor.run("hook-", {})
    assert result.phase is Phase.FAILED
    assert result.message == "Pod was active on the node longer than the specified deadline"
    assert LocalExecutor(library, on_event=lambda _event: None).run("hook-", {"seconds": "0"}).phase is Phase.SUCCEEDED


PARALLEL_SLEEP = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: parallel-sleep}
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: left, template: nap}
      - {name: right, template: nap}
  - name: nap
    container:
      image: python:3.11
      command: [PYTHON, -c, "import time; print('napping', flush=True); time.sleep(37.25)"]
"""


def _naps_running() -> int:
    import subprocess as sp

    found = sp.run(["pgrep", "-f", "time.sleep.37.25"], capture_output=True, text=True)
    return len(found.stdout.split())


def test_ctrl_c_in_a_parallel_group_stops_every_step(tmp_path: Path) -> None:
    import signal
    import subprocess as sp
    import time

    path = _write(tmp_path, "parallel.yaml", PARALLEL_SLEEP)
    # As from a terminal: SIGINT at its default, even when the test itself runs in a background job
    # (where the shell starts everything with SIGINT ignored, and Python then installs no Ctrl-C handler).
    run = sp.Popen([PY, "-m", "rollguard.steps.cli", "run-local", str(path)], stdout=sp.PIPE, stderr=sp.STDOUT,
                   text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 30
        while _naps_running() < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _naps_running() == 2, "the two parallel steps did not start"
        run.send_signal(signal.SIGINT)
        run.wait(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    deadline = time.monotonic() + 10
    while _naps_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _naps_running() == 0, "a step of the parallel group outlived Ctrl-C"


@pytest.mark.parametrize("field", ["retryStrategy: {limit: 2}", "timeout: 10s", "activeDeadlineSeconds: 5"])
def test_retry_and_timeouts_on_a_steps_template_are_refused(tmp_path: Path, field: str) -> None:
    text = (
        "kind: WorkflowTemplate\nmetadata: {name: odd}\nspec:\n  entrypoint: main\n  templates:\n"
        f"  - name: main\n    {field}\n    steps:\n    - - {{name: a, template: leaf}}\n"
        "  - name: leaf\n    container: {image: x, command: [echo]}\n"
    )
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(UnsupportedFeature, match="on a steps template"):
        load_files([path])
