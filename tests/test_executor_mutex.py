"""A workflow's synchronization mutex: two run-local runs of the same key exclude each other, like Argo's Pending."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rollguard.sandbox.executor.errors import UnsupportedFeature
from rollguard.sandbox.executor.loader import load_files

PY = sys.executable

# `hold` writes `<dir>/<run>.started`, then waits (bounded) for `<dir>/<run>.release`; the exit handler
# writes `<dir>/<run>.exited` — the lock is held until the exit handler has run.
LOCKED = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: locked}
spec:
  entrypoint: hold
  onExit: exited
  synchronization:
    mutexes:  # as canary-release: one per namespace and VirtualService
    - name: "rollguard-{{workflow.parameters.virtual-service}}"
      namespace: "{{workflow.parameters.namespace}}"
  arguments:
    parameters: [{name: dir}, {name: run}, {name: namespace, value: demo}, {name: virtual-service, value: podinfo}]
  templates:
  - name: hold
    container:
      image: x
      command: [PYTHON, -c]
      args:
      - |
        import os, sys, time
        directory, run = sys.argv[1], sys.argv[2]
        open(os.path.join(directory, run + ".started"), "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(directory, run + ".release")) and time.monotonic() < deadline:
            time.sleep(0.05)
      - "{{workflow.parameters.dir}}"
      - "{{workflow.parameters.run}}"
  - name: exited
    container:
      image: x
      command: [PYTHON, -c, "import sys; open(sys.argv[1] + '/' + sys.argv[2] + '.exited', 'w').close()"]
      args: ["{{workflow.parameters.dir}}", "{{workflow.parameters.run}}"]
"""


def _start(path: Path, tmp_path: Path, run: str, *parameters: str) -> subprocess.Popen[str]:
    command = [PY, "-m", "rollguard.steps.cli", "run-local", str(path), "--lock-dir", str(tmp_path / "locks"),
               "-p", f"dir={tmp_path}", "-p", f"run={run}", *parameters]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def locked(tmp_path: Path) -> Path:
    path = tmp_path / "locked.yaml"
    path.write_text(textwrap.dedent(LOCKED).replace("PYTHON", PY))
    return path


def test_a_second_run_of_the_same_key_waits_pending_until_the_first_has_ended(locked: Path, tmp_path: Path) -> None:
    first = _start(locked, tmp_path, "first")
    second = None
    try:
        _wait_for((tmp_path / "first.started").exists, "the first run's step")
        second = _start(locked, tmp_path, "second")
        # the second run announces it is Pending, in Argo's words, and starts nothing
        assert second.stdout is not None
        line = second.stdout.readline()
        while line and "Waiting for" not in line:
            line = second.stdout.readline()
        assert "Pending: Waiting for demo/Mutex/rollguard-podinfo lock. Lock status: 0/1" in line, line
        assert not (tmp_path / "second.started").exists()
        (tmp_path / "first.release").touch()
        assert first.wait(timeout=30) == 0
        assert (tmp_path / "first.exited").exists()
        _wait_for((tmp_path / "second.started").exists, "the second run's step after the lock was released")
        # it got the lock only after the first run's exit handler had run
        assert (tmp_path / "first.exited").stat().st_mtime <= (tmp_path / "second.started").stat().st_mtime
        (tmp_path / "second.release").touch()
        assert second.wait(timeout=30) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()


def test_runs_of_different_keys_do_not_wait_for_each_other(locked: Path, tmp_path: Path) -> None:
    first = _start(locked, tmp_path, "first")
    second = _start(locked, tmp_path, "second", "-p", "virtual-service=other")
    try:
        _wait_for(lambda: (tmp_path / "first.started").exists() and (tmp_path / "second.started").exists(),
                  "both runs' steps at once")
        (tmp_path / "first.release").touch()
        (tmp_path / "second.release").touch()
        assert first.wait(timeout=30) == 0 and second.wait(timeout=30) == 0
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()


@pytest.mark.parametrize(
    ("synchronization", "accepted"),
    [
        ("{mutex: {name: legacy}}", True),  # v3.5 to v3.7
        ("{mutexes: [{name: a}, {name: b, namespace: argo}]}", True),
        ("{semaphores: [{configMapKeyRef: {name: limits, key: releases}}]}", False),
        ("{mutexes: [{name: a, database: true}]}", False),
    ],
)
def test_which_synchronization_is_held_locally(tmp_path: Path, synchronization: str, accepted: bool) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text("kind: WorkflowTemplate\nmetadata: {name: sync}\nspec:\n  entrypoint: main\n"
                    f"  synchronization: {synchronization}\n"
                    "  templates:\n  - name: main\n    container: {image: x, command: [echo]}\n")
    if accepted:
        load_files([path])
    else:
        with pytest.raises(UnsupportedFeature, match="synchronization"):
            load_files([path])
