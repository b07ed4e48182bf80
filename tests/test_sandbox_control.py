"""`rollguard sandbox up` leaves a working sandbox running; `down` stops every process of it.

Also: the committed workflow YAML uses only features the local executor implements, and
`rollguard run-local workflows/canary-analysis.yaml` rolls back a faulty canary in that sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support_prometheus import query

from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.git_remote import GitRemote
from rollguard.sandbox.ports import wait_listening

pytestmark = pytest.mark.slow

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"


def rollguard(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rollguard.steps.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_committed_workflows_use_only_supported_features() -> None:
    paths = [p for p in sorted(WORKFLOWS.glob("*.yaml")) if "kind: Kustomization" not in p.read_text()]
    library = load_files(paths)
    assert {"canary-release", "canary-analysis", "rollguard-steps"} <= set(library.definitions)


def test_sandbox_up_then_run_local_analysis_then_down(tmp_path: Path) -> None:
    directory = tmp_path / "sandbox"
    started = rollguard("sandbox", "up", "--dir", str(directory), "--rps", "100")
    assert started.returncode == 0, started.stderr
    state = json.loads((directory / "state.json").read_text())
    urls = state["urls"]
    try:
        assert "prometheus" in started.stdout and urls["router"] in started.stdout
        assert _json(urls["router_admin"])["canary"] == 10
        request = urllib.request.Request(urls["canary_app"] + "/control", data=b'{"error_rate": 1.0}', method="POST")
        urllib.request.urlopen(request, timeout=5).close()
        remote = GitRemote(directory / "data" / "gitops.git")
        verdict = tmp_path / "verdict.json"
        parameters = {
            "repo": remote.url, "path": "k8s/istio.yml", "virtual-service": "podinfo", "namespace": "demo",
            "service": "podinfo", "stable-version": "v1", "canary-version": "v2", "prometheus-url": urls["prometheus"],
            "interval": "1s", "duration": "30s", "window": "5s", "min-requests": "20",
            "verdict-file": str(verdict), "verdict-word-file": str(tmp_path / "word"),
            "canary-weight-file": str(tmp_path / "weight"),
        }
        arguments = [item for name, value in parameters.items() for item in ("-p", f"{name}={value}")]
        # the test's own lock directory: the template's mutex is not shared with other runs on this machine
        ran = rollguard("run-local", str(WORKFLOWS / "canary-analysis.yaml"), "--lock-dir", str(tmp_path / "locks"),
                        "--metrics-url", urls["workflow_metrics"], *arguments)
        # A rolled-back canary ends the workflow Failed, its reason as the message (fail-on-rollback)
        assert ran.returncode == 1, ran.stdout[-3000:] + ran.stderr[-2000:]
        assert "Failed; exit handler Failed: Error (exit code 1): canary rolled back:" in ran.stdout
        assert "[analysis.judge.rollback]" in ran.stdout
        assert json.loads(verdict.read_text())["verdict"] == "fail"
        deadline = time.monotonic() + 10
        while _json(urls["router_admin"])["canary"] != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _json(urls["router_admin"])["canary"] == 0
        # The run's template metrics, in the sandbox's Prometheus (its job argo-workflows)
        found: list[dict] = []
        deadline = time.monotonic() + 15
        while not found and time.monotonic() < deadline:
            found = query(urls["prometheus"], 'argo_workflows_rollguard_releases_total{outcome="rolled_back"}')
            time.sleep(0.3)
        assert found and found[0]["metric"]["kind"] == "analysis" and found[0]["metric"]["job"] == "argo-workflows"
    finally:
        stopped = rollguard("sandbox", "down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    assert not directory.exists()
    for pid in state["pids"]:
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid), f"process {pid} is still running"
    for url in (urls["router"], urls["prometheus"]):
        assert not wait_listening(int(url.rsplit(":", 1)[1]), 0.3)


def test_sandbox_up_twice_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "sandbox"
    directory.mkdir()
    (directory / "state.json").write_text("{}")
    refused = rollguard("sandbox", "up", "--dir", str(directory))
    assert refused.returncode == 2 and "already up" in refused.stderr
    assert rollguard("sandbox", "down", "--dir", str(tmp_path / "nothing")).returncode == 0


def test_prometheus_that_fails_to_start(tmp_path: Path) -> None:
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\necho 'err: bad flag' >&2\nexit 3\n")
    fake.chmod(0o755)
    completed = subprocess.run([sys.executable, "-m", "rollguard.steps.cli", "demo", "--report-dir",
                                str(tmp_path / "report")], capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PROMETHEUS_BIN": str(fake)}, check=False)
    assert completed.returncode == 4
    assert "exited with code 3" in completed.stderr and "bad flag" in completed.stderr


def test_missing_workflow_yaml_is_named(tmp_path: Path) -> None:
    completed = rollguard("demo", "--report-dir", str(tmp_path / "report"), "--workflow-dir", str(tmp_path))
    assert completed.returncode == 4
    assert "canary-release.yaml is missing" in completed.stderr
