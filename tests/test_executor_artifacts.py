"""Output artifacts fail a step exactly as on an Argo without an artifact repository, and are stored with one."""

from __future__ import annotations

import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from rollguard.sandbox.executor.artifacts import NO_ARTIFACT_STORAGE
from rollguard.sandbox.executor.errors import SubmissionRefused
from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.local_cluster import LocalCluster
from rollguard.sandbox.executor.nodes import Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.steps.cli import main as cli_main

PY = sys.executable

# `analyze` writes its verdict file (or not) and exits with `code`; the verdict is an optional output artifact,
# like rollguard's analyze step; `continueOn: {failed: true}` as in canary-release; `after` runs only if the
# group did not fail.
VERDICT = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: verdict}
spec:
  entrypoint: main
  arguments:
    parameters: [{name: dir}, {name: code, value: "0"}, {name: write, value: "yes"}]
  templates:
  - name: main
    steps:
    - - name: analyze
        template: analyze
        continueOn: {failed: true}
    - - {name: after, template: after}
  - name: analyze
    outputs:
      artifacts:
      - name: verdict
        optional: true
        path: "{{workflow.parameters.dir}}/verdict.json"
        archive: {none: {}}
      - name: logs
        optional: true
        path: "{{workflow.parameters.dir}}/logs"
    container:
      image: x
      command: [PYTHON, -c]
      args:
      - |
        import os, sys
        if sys.argv[3] == "yes":
            open(os.path.join(sys.argv[1], "verdict.json"), "w").write('{"verdict": "pass"}')
        sys.exit(int(sys.argv[2]))
      - "{{workflow.parameters.dir}}"
      - "{{workflow.parameters.code}}"
      - "{{workflow.parameters.write}}"
  - name: after
    container: {image: x, command: [PYTHON, -c, "print('after')"]}
"""


def _run(tmp_path: Path, code: str = "0", write: str = "yes", repository: Path | None = None,
         text: str = VERDICT) -> WorkflowResult:
    path = tmp_path / "verdict.yaml"
    path.write_text(textwrap.dedent(text).replace("PYTHON", PY))
    executor = LocalExecutor(load_files([path]), on_event=lambda _event: None,
                             cluster=LocalCluster(artifact_repository=repository))
    return executor.run("verdict", {"dir": str(tmp_path), "code": code, "write": write})


def test_without_a_repository_an_artifact_fails_a_step_that_exited_0_with_error(tmp_path: Path) -> None:
    result = _run(tmp_path)
    analyze = result.node("main.analyze")
    assert analyze.exit_code == 0
    assert analyze.phase is Phase.ERROR  # the wait container failed: Error, not Failed
    assert analyze.message == f"Error (exit code 1): {NO_ARTIFACT_STORAGE};"
    # continueOn.failed does not cover Error: the group fails, `after` never runs
    assert result.phase is Phase.FAILED and result.message == f"child '{analyze.node_id}' failed"
    with pytest.raises(KeyError):
        result.node("main.after")


def test_a_failed_main_container_keeps_its_own_phase_and_message(tmp_path: Path) -> None:
    result = _run(tmp_path, code="1")
    analyze = result.node("main.analyze")
    assert (analyze.phase, analyze.message) == (Phase.FAILED, "Error (exit code 1)")
    assert result.phase is Phase.SUCCEEDED and result.node("main.after").phase is Phase.SUCCEEDED  # continueOn


def test_an_optional_artifact_whose_file_is_missing_is_skipped(tmp_path: Path) -> None:
    result = _run(tmp_path, write="no")
    assert result.phase is Phase.SUCCEEDED, result.message


def test_a_required_artifact_whose_file_is_missing_errors_even_with_a_repository(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    required = VERDICT.replace('optional: true\n        path: "{{workflow.parameters.dir}}/v',
                               'path: "{{workflow.parameters.dir}}/v')
    result = _run(tmp_path, write="no", repository=repository, text=required)
    analyze = result.node("main.analyze")
    assert analyze.phase is Phase.ERROR
    assert analyze.message == f"Error (exit code 1): {tmp_path}/verdict.json no such file or directory;"


def test_with_a_repository_the_artifact_is_stored_as_argo_keys_it(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "analyze.log").write_text("checked\n")
    result = _run(tmp_path, repository=repository)
    assert result.phase is Phase.SUCCEEDED, result.message
    (pod,) = (repository / result.name).iterdir()
    assert pod.name.startswith(f"{result.name}-analyze-")
    assert (pod / "verdict.json").read_text() == '{"verdict": "pass"}'  # archive none: the file itself
    with tarfile.open(pod / "logs.tgz") as archive:  # default archive: <name>.tgz
        assert archive.getnames() == ["logs", "logs/analyze.log"]


def test_a_declared_artifact_repository_ref_needs_a_local_repository(tmp_path: Path) -> None:
    text = VERDICT.replace("  entrypoint: main\n", "  entrypoint: main\n  artifactRepositoryRef: {configMap: minio, "
                                                   "key: default}\n")
    with pytest.raises(SubmissionRefused, match='failed to resolve artifact repository: configmaps "minio" not found'):
        _run(tmp_path, text=text)
    repository = tmp_path / "repository"
    repository.mkdir()
    assert _run(tmp_path, repository=repository, text=text).phase is Phase.SUCCEEDED


def test_run_local_takes_an_artifact_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "verdict.yaml"
    path.write_text(textwrap.dedent(VERDICT).replace("PYTHON", PY))
    assert cli_main(["run-local", str(path), "-p", f"dir={tmp_path}"]) == 1  # Failed: the artifact had nowhere to go
    assert "configure artifact storage" in capsys.readouterr().out
    repository = tmp_path / "repository"
    repository.mkdir()
    assert cli_main(["run-local", str(path), "-p", f"dir={tmp_path}", "--artifact-repository", str(repository)]) == 0
    assert cli_main(["run-local", str(path), "-p", f"dir={tmp_path}", "--artifact-repository",
                     str(tmp_path / "missing")]) == 2
