"""Each local step runs as its own pod would: only the declared environment, a fresh directory, given Secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rollguard.sandbox.executor.errors import ExecutorError, UnsupportedFeature
from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.local_cluster import LocalCluster
from rollguard.sandbox.executor.nodes import Phase, WorkflowResult, node_id
from rollguard.sandbox.executor.runner import LocalExecutor

PY = sys.executable

# Each step writes what it sees (environment, working directory, files there) as JSON to its `report`.
REPORTING = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: reporting}
spec:
  entrypoint: main
  arguments:
    parameters: [{name: dir}]
  templates:
  - name: main
    steps:
    - - {name: first, template: report, arguments: {parameters: [{name: name, value: first}]}}
    - - {name: second, template: report, arguments: {parameters: [{name: name, value: second}]}}
  - name: report
    inputs:
      parameters: [{name: name}]
    container:
      image: x
      command: [PYTHON, -c]
      args:
      - |
        import json, os, subprocess, sys
        git = subprocess.run(["git", "config", "--get", "user.name"], capture_output=True, text=True)
        seen = {"env": dict(os.environ), "cwd": os.getcwd(), "files": sorted(os.listdir(".")),
                "git_user": git.stdout.strip()}
        open("left-behind", "w").write("x")
        json.dump(seen, open(sys.argv[1], "w"))
      - "{{workflow.parameters.dir}}/{{inputs.parameters.name}}.json"
      env:
      - {name: DECLARED, value: "{{inputs.parameters.name}}"}
      - name: TOKEN
        valueFrom: {secretKeyRef: {name: git-credentials, key: token, optional: true}}
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).replace("PYTHON", PY))
    return path


def _run(path: Path, parameters: dict[str, str], **options: object) -> WorkflowResult:
    library = load_files([path])
    name = next(iter(library.definitions))
    return LocalExecutor(library, on_event=lambda _event: None, **options).run(name, parameters)  # type: ignore[arg-type]


def _machine_with_credentials(tmp_path: Path) -> dict[str, str]:
    """A machine environment full of things a step must not inherit: a token, a kubeconfig, a gitconfig."""
    home = tmp_path / "machine-home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    subprocess.run(["git", "config", "--file", str(home / ".gitconfig"), "user.name", "Machine Owner"], check=True)
    return {**os.environ, "HOME": str(home), "ROLLGUARD_GIT_TOKEN": "machine-token", "TOKEN": "machine-token",
            "KUBECONFIG": str(home / ".kube" / "config"), "AWS_SECRET_ACCESS_KEY": "machine-secret"}


def test_a_step_sees_only_its_declared_environment_and_a_fresh_directory(tmp_path: Path) -> None:
    path = _write(tmp_path, "reporting.yaml", REPORTING)
    out = tmp_path / "out"
    out.mkdir()
    result = _run(path, {"dir": str(out)}, environment=_machine_with_credentials(tmp_path), work_dir=tmp_path / "pods")
    assert result.phase is Phase.SUCCEEDED, result.message
    first, second = (json.loads((out / f"{name}.json").read_text()) for name in ("first", "second"))
    environment = first["env"]
    assert environment["DECLARED"] == "first"
    for leaked in ("ROLLGUARD_GIT_TOKEN", "TOKEN", "KUBECONFIG", "AWS_SECRET_ACCESS_KEY"):
        assert leaked not in environment, leaked
    assert first["git_user"] == "", "the machine's gitconfig reached the step"
    # HOME, working directory and TMPDIR are one fresh, empty directory per step (the image's /tmp)
    assert environment["HOME"] == first["cwd"] == environment["TMPDIR"]
    assert first["files"] == [] and second["files"] == [], "a step saw files of another"
    assert first["cwd"] != second["cwd"] and Path(first["cwd"]).parent == tmp_path / "pods" / result.name
    # what Argo's controller adds to the main container (workflowpod.go createWorkflowPod)
    assert environment["ARGO_CONTAINER_NAME"] == "main" and environment["ARGO_INCLUDE_SCRIPT_OUTPUT"] == "false"
    assert environment["ARGO_DEADLINE"] == "0001-01-01T00:00:00Z"
    assert environment["ARGO_NODE_ID"] == node_id(result.name, f"{result.name}[0].first")
    extra = set(environment) - {"DECLARED", "PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE",
                                "PYTHONUNBUFFERED", "GIT_CONFIG_NOSYSTEM", "ARGO_CONTAINER_NAME", "ARGO_NODE_ID",
                                "ARGO_INCLUDE_SCRIPT_OUTPUT", "ARGO_DEADLINE", "LC_CTYPE"}
    assert not extra, f"undeclared variables reached the step: {sorted(extra)}"


def test_node_ids_are_argos() -> None:
    # Workflow.NodeID: the workflow's name, then FNV-32a of the node's name (values computed with Go's hash/fnv).
    assert node_id("hello-world-abcde", "hello-world-abcde") == "hello-world-abcde"
    assert node_id("wf", "wf[0].step") == f"wf-{_fnv32a(b'wf[0].step')}"


def _fnv32a(data: bytes) -> int:
    value = 2166136261
    for byte in data:
        value = ((value ^ byte) * 16777619) % 2**32
    return value


def test_secret_env_comes_from_a_given_secret_only(tmp_path: Path) -> None:
    path = _write(tmp_path, "reporting.yaml", REPORTING)
    secret = tmp_path / "git-credentials"
    secret.mkdir()
    (secret / "token").write_text("from-the-secret")
    out = tmp_path / "out"
    out.mkdir()
    result = _run(path, {"dir": str(out)}, cluster=LocalCluster(secrets={"git-credentials": secret}))
    assert result.phase is Phase.SUCCEEDED, result.message
    assert json.loads((out / "first.json").read_text())["env"]["TOKEN"] == "from-the-secret"


def test_a_required_secret_that_was_not_given_is_refused_before_anything_runs(tmp_path: Path) -> None:
    # Kubernetes would keep the pod waiting for the Secret forever; locally the run does not start
    path = _write(tmp_path, "reporting.yaml", REPORTING.replace("optional: true", "optional: false"))
    with pytest.raises(ExecutorError, match=r"env TOKEN of template 'report' needs Secret 'git-credentials'.*"
                                            r"--secret git-credentials=DIR"):
        _run(path, {"dir": str(tmp_path)}, environment=_machine_with_credentials(tmp_path))
    assert not (tmp_path / "first.json").exists()


# The git credentials come as a Secret volume mounted at /etc/rollguard/git; the step is told the file's path
# in the container, and prints what it finds there (or that there is nothing).
MOUNTED = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: mounted}
spec:
  entrypoint: main
  ttlStrategy: {secondsAfterCompletion: 300}
  podGC: {strategy: OnPodCompletion}
  podMetadata:
    labels: {sidecar.istio.io/inject: "false"}
  volumes:
  - name: git-credentials
    secret: {secretName: rollguard-git, optional: OPTIONAL}
  arguments:
    parameters: [{name: out}]
  templates:
  - name: main
    container:
      image: x
      command: [PYTHON, -c]
      args:
      - |
        import os, sys
        token = sys.argv[2]
        seen = open(token).read() if os.path.exists(token) else "no token"
        writable = bool(os.stat(token).st_mode & 0o222) if os.path.exists(token) else None
        open(sys.argv[1], "w").write(f"{seen} {writable} {os.environ['TOKEN_FILE'] == token}")
      - "{{workflow.parameters.out}}"
      - /etc/rollguard/git/token
      env:
      - {name: TOKEN_FILE, value: /etc/rollguard/git/token}
      volumeMounts:
      - {name: git-credentials, mountPath: /etc/rollguard/git, readOnly: true}
"""


def _mounted(tmp_path: Path, optional: str, secrets: dict[str, Path]) -> tuple[WorkflowResult, Path]:
    path = _write(tmp_path, "mounted.yaml", MOUNTED.replace("OPTIONAL", optional))
    out = tmp_path / "seen.txt"
    return _run(path, {"out": str(out)}, cluster=LocalCluster(secrets=secrets)), out


def test_a_secret_volume_is_mounted_from_the_given_directory_read_only(tmp_path: Path) -> None:
    secret = tmp_path / "rollguard-git"
    secret.mkdir()
    (secret / "token").write_text("s3cret")
    result, out = _mounted(tmp_path, "false", {"rollguard-git": secret})
    assert result.phase is Phase.SUCCEEDED, result.message
    assert out.read_text() == "s3cret False True"  # read-only; the env value was rewritten to the mount too


def test_an_optional_secret_volume_that_was_not_given_mounts_empty(tmp_path: Path) -> None:
    result, out = _mounted(tmp_path, "true", {})
    assert result.phase is Phase.SUCCEEDED, result.message
    assert out.read_text() == "no token None True"


def test_a_required_secret_volume_that_was_not_given_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match=r"volume 'git-credentials' needs Secret 'rollguard-git'.*--secret "
                                            r"rollguard-git=DIR"):
        _mounted(tmp_path, "false", {})
    assert not (tmp_path / "seen.txt").exists()


def test_other_volume_kinds_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "mounted.yaml", MOUNTED.replace("secret: {secretName: rollguard-git, optional: OPTIONAL}",
                                                            "emptyDir: {}"))
    with pytest.raises(UnsupportedFeature, match="volume of kind emptyDir"):
        load_files([path])
