"""What Argo refuses at submission is refused before anything runs, in Argo's words (workflow/validate/validate.go)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from rollguard.sandbox.executor.errors import SubmissionRefused, UnsupportedFeature
from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.nodes import Event, EventKind
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.steps.cli import main as cli_main

PY = sys.executable

# `plan` writes a marker when it runs; the exit handler writes another: neither may exist after a refusal.
RELEASE = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: release}
spec:
  entrypoint: main
  onExit: cleanup
  arguments:
    parameters: [{name: dir}]
  templates:
  - name: main
    steps:
    - - name: plan
        template: touch
        arguments: {parameters: [{name: file, value: plan-ran}]}
    - - name: deploy
        template: deploy
        arguments: {parameters: [{name: weight, value: "{{steps.plan.outputs.parameters.weight}}"}]}
  - name: touch
    inputs: {parameters: [{name: file}]}
    outputs:
      parameters:
      - {name: weight, valueFrom: {path: "{{workflow.parameters.dir}}/weight", default: "10"}}
    container:
      image: x
      command: [PYTHON, -c, "import sys; open(sys.argv[1], 'w').write('x')"]
      args: ["{{workflow.parameters.dir}}/{{inputs.parameters.file}}"]
  - name: deploy
    inputs: {parameters: [{name: weight}]}
    container:
      image: x
      command: [PYTHON, -c, "print('deploy')"]
      args: ["{{inputs.parameters.weight}}"]
  - name: cleanup
    steps:
    - - name: note
        template: touch
        arguments: {parameters: [{name: file, value: exit-handler-ran}]}
"""

SHARED = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: rollguard-steps}
spec:
  templates:
  - name: status
    container: {image: x, command: [PYTHON, -c, "print(1)"]}
"""


def _refused(tmp_path: Path, text: str, *others: str) -> str:
    for index, other in enumerate(others):
        (tmp_path / f"other-{index}.yaml").write_text(textwrap.dedent(other).replace("PYTHON", PY))
    path = tmp_path / "release.yaml"
    path.write_text(textwrap.dedent(text).replace("PYTHON", PY))
    events: list[Event] = []
    library = load_files(sorted(tmp_path.glob("*.yaml")))
    name = next(iter(load_files([path]).definitions))
    with pytest.raises(SubmissionRefused) as refused:
        LocalExecutor(library, on_event=events.append).run(name, {"dir": str(tmp_path)})
    assert not [e for e in events if e.kind is EventKind.STARTED], "a step ran before the refusal"
    assert not (tmp_path / "plan-ran").exists() and not (tmp_path / "exit-handler-ran").exists()
    return refused.value.argo_message


def test_the_release_fixture_runs_when_nothing_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(textwrap.dedent(RELEASE).replace("PYTHON", PY))
    result = LocalExecutor(load_files([path]), on_event=lambda _e: None).run("release", {"dir": str(tmp_path)})
    assert result.phase.value == "Succeeded", result.message
    assert (tmp_path / "plan-ran").exists() and (tmp_path / "exit-handler-ran").exists()


def test_an_unresolvable_step_reference_is_refused(tmp_path: Path) -> None:
    text = RELEASE.replace("steps.plan.outputs.parameters.weight", "steps.plan.outputs.parameters.wieght")
    assert _refused(tmp_path, text) == "templates.main.steps failed to resolve {{steps.plan.outputs.parameters.wieght}}"


def test_a_step_cannot_see_a_later_steps_outputs(tmp_path: Path) -> None:
    text = RELEASE.replace("value: plan-ran}", "value: '{{steps.deploy.status}}'}")
    assert _refused(tmp_path, text) == "templates.main.steps failed to resolve {{steps.deploy.status}}"


def test_an_unresolvable_reference_in_a_called_template_is_refused(tmp_path: Path) -> None:
    text = RELEASE.replace('args: ["{{inputs.parameters.weight}}"]', 'args: ["{{inputs.parameters.wieght}}"]')
    assert _refused(tmp_path, text) == (
        "templates.main.steps[1].deploy templates.deploy: failed to resolve {{inputs.parameters.wieght}}")


def test_an_unknown_template_name_is_refused(tmp_path: Path) -> None:
    text = RELEASE.replace("template: deploy\n", "template: judge\n")
    assert _refused(tmp_path, text) == "templates.main.steps[1].deploy template name 'judge' undefined"
    assert _refused(tmp_path, RELEASE.replace("onExit: cleanup", "onExit: clean-up")) == (
        "template name 'clean-up' undefined")


def test_a_template_ref_to_a_missing_workflow_template_or_template_is_refused(tmp_path: Path) -> None:
    by_ref = RELEASE.replace("        template: deploy\n", "        templateRef: {name: rollguard-steps, "
                                                              "template: deploy}\n")
    assert _refused(tmp_path, by_ref) == (
        "templates.main.steps[1].deploy template reference rollguard-steps.deploy not found")
    assert _refused(tmp_path, by_ref, SHARED) == (
        "templates.main.steps[1].deploy template reference rollguard-steps.deploy not found")


def test_a_workflow_template_ref_to_a_missing_template_is_refused(tmp_path: Path) -> None:
    text = """
    apiVersion: argoproj.io/v1alpha1
    kind: Workflow
    metadata: {generateName: hook-}
    spec:
      workflowTemplateRef: {name: canary-analysis}
    """
    assert _refused(tmp_path, text) == 'workflowtemplate.argoproj.io "canary-analysis" not found'


def test_a_workflow_parameter_without_value_is_refused_with_argos_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(textwrap.dedent(RELEASE).replace("PYTHON", PY))
    assert cli_main(["run-local", str(path)]) == 2
    error = capsys.readouterr().err
    assert "spec.arguments.dir.value or spec.arguments.dir.valueFrom is required" in error
    assert "pass -p dir=VALUE" in error


def test_a_reference_argo_fills_but_the_executor_cannot_is_refused_as_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "release.yaml"
    text = RELEASE.replace("steps.plan.outputs.parameters.weight", "steps.plan.startedAt")
    path.write_text(textwrap.dedent(text).replace("PYTHON", PY))
    with pytest.raises(UnsupportedFeature, match=r"`\{\{steps.plan.startedAt\}\}`.*Argo fills it"):
        LocalExecutor(load_files([path]), on_event=lambda _e: None).run("release", {"dir": str(tmp_path)})


def test_an_unknown_pod_gc_strategy_is_refused_and_known_ones_have_no_local_meaning(tmp_path: Path) -> None:
    text = RELEASE.replace("  onExit: cleanup\n", "  onExit: cleanup\n  podGC: {strategy: OnPodFailure}\n")
    assert _refused(tmp_path, text) == "podGC.strategy unknown strategy 'OnPodFailure'"
    path = tmp_path / "release.yaml"
    path.write_text(textwrap.dedent(text.replace("OnPodFailure", "OnWorkflowSuccess")).replace("PYTHON", PY))
    notes: list[str] = []
    result = LocalExecutor(load_files([path]), on_event=lambda e: notes.append(e.text)).run(
        "release", {"dir": str(tmp_path)})
    assert result.phase.value == "Succeeded"
    assert any("no local meaning, not used: WorkflowTemplate release: podGC" in note for note in notes)
