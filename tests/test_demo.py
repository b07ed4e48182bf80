"""`rollguard demo` end to end through real processes: Git remote, apps, router, Prometheus, executor.

Each run is a `rollguard demo` subprocess with short settings (100 req/s so the canary's 10 % gets
enough requests quickly). After every run no process that mentions the run's directory may remain.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from webhook_server import webhook_server

from rollguard.experiment.records import load_results
from rollguard.sandbox.git_remote import GitRemote
from rollguard.sandbox.loadgen import read_responses

pytestmark = pytest.mark.slow

FAST = ["--rps", "100", "--interval", "1s", "--min-requests", "30", "--window", "5s"]


MARKER = "SANDBOX_TEST_MARKER"


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """Live processes whose command line, environment or working directory contains `marker` (a test's directory).

    The demo runs with SANDBOX_TEST_MARKER=<its directory>; every sandbox process it starts inherits it.
    Workflow steps inherit nothing (as in a pod), but run in a directory under the demo's report dir.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environment = (entry / "environ").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().split(") ")[-1].split()[0]
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (marker in command or f"{MARKER}={marker}" in environment or cwd.startswith(marker)) and state != "Z":
            found.append((int(entry.name), command))
    return found


def assert_nothing_left(marker: Path) -> None:
    deadline = time.monotonic() + 10
    left = processes_mentioning(str(marker))
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_mentioning(str(marker))
    assert not left, f"stray processes: {left}"


def demo(
    report_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`rollguard demo --report-dir report_dir`; with `cwd`, run there and give the report dir relative to it
    (as `./run.sh demo` does: its default is ./reports/demo-TIME)."""
    shown = report_dir if cwd is None else report_dir.relative_to(cwd)
    command = [sys.executable, "-m", "rollguard.steps.cli", "demo", "--report-dir", str(shown), *args]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                               env={**os.environ, MARKER: str(report_dir), **(env or {})}, check=False)
    assert_nothing_left(report_dir)
    return completed


def only_run(report_dir: Path) -> tuple[dict, Path]:
    runs = json.loads((report_dir / "results.json").read_text())["runs"]
    assert len(runs) == 1
    (run_dir,) = report_dir.glob("run-*")
    return runs[0], run_dir


def test_faulty_canary_is_rolled_back_with_evidence(tmp_path: Path) -> None:
    # A 3 s sync delay (ArgoCD-like) keeps the canary failing for a few scrapes after the push, so
    # Prometheus's own rate() query surely crosses the threshold: without it the cut can come first.
    # Run as the README's `./run.sh demo` is: the report dir relative to the working directory, which the
    # steps (each in its own pod directory) do not share.
    reports = tmp_path / "reports"
    completed = demo(reports, "--scenario", "faulty", "--schedule", "10,100", "--sync-delay", "3s", *FAST,
                     cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    run, run_dir = only_run(reports)
    assert run["scenario"] == "faulty" and run["outcome"] == "rolled_back"
    for key in ("fault_start", "first_breach", "verdict_at", "git_push", "traffic_cut"):
        assert isinstance(run[key], float), key
    assert run["fault_start"] < run["verdict_at"] < run["git_push"] < run["traffic_cut"]
    assert run["traffic_cut"] - run["git_push"] >= 3.0
    assert run["fault_start"] <= run["first_breach"] < run["traffic_cut"]
    assert run["failed_requests"] > 0
    assert "rolled back" in completed.stdout and "failed user requests" in completed.stdout

    remote = GitRemote(run_dir / "sandbox" / "gitops.git")
    (sha, message), *_ = remote.log()
    assert "canary_error_rate" in message, message  # the verdict's evidence is quoted
    assert "weight: 0 # canary" in remote.show(revision=sha)
    # Every request sent after the cut (plus one in-flight margin) went to stable.
    after = [r for r in read_responses(run_dir / "responses.csv") if r.sent_at > run["traffic_cut"] + 0.2]
    assert after and {r.version for r in after} == {"v1"}
    assert run["final_split"] == [100, 0]
    # The experiment reads the same file.
    records, _settings = load_results(reports)
    assert records[0].run == 1 and records[0].breach_to_cut_s() == pytest.approx(run["breach_to_cut_s"], abs=0.01)


def test_slow_canary_is_rolled_back_and_the_notification_reaches_a_real_server(tmp_path: Path) -> None:
    with webhook_server() as server:  # `rollguard demo --notify-url`: the workflow's exit handler posts it
        completed = demo(tmp_path, "--scenario", "slow", "--schedule", "10,100", "--notify-url", server.url(),
                         "--notify-format", "teams", *FAST)  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    run, run_dir = only_run(tmp_path)
    assert run["outcome"] == "rolled_back"
    assert run["failed_check"]["metric"] == "canary_p99_latency_ms"
    assert run["traffic_cut"] > run["fault_start"]
    (sha, message), *_ = GitRemote(run_dir / "sandbox" / "gitops.git").log()
    assert "canary_p99_latency_ms" in message
    (received,) = server.received
    card = received.json()["attachments"][0]["content"]
    facts = {fact["title"]: fact["value"] for fact in card["body"][2]["facts"]}
    assert card["body"][0]["text"] == "Canary rolled back: podinfo in demo (canary at 0 %)"
    assert facts["Commit"] == sha[:7] and facts["Evidence"].startswith("canary_p99_latency_ms")
    assert "SECRET" not in completed.stdout + completed.stderr  # the URL is never printed


def test_a_bad_notify_url_is_a_usage_error_before_anything_starts(tmp_path: Path) -> None:
    completed = demo(tmp_path, "--notify-url", "ftp://hooks.example.com/XXXXSECRETXXXX")
    assert completed.returncode == 2
    assert "the notify URL from --notify-url is not http(s) (scheme 'ftp')" in completed.stderr
    assert "SECRET" not in completed.stderr and not list(tmp_path.glob("run-*"))


def test_grpc_canary_failing_with_unavailable_is_rolled_back(tmp_path: Path) -> None:
    """Real gRPC end to end (grpcio apps, a router relaying the status, gRPC users): every failed call is HTTP 200
    with UNAVAILABLE, and the verdict, the commit and the users' records say so."""
    completed = demo(tmp_path, "--protocol", "grpc", "--scenario", "faulty", "--schedule", "10,100", *FAST)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    run, run_dir = only_run(tmp_path)
    assert run["outcome"] == "rolled_back" and run["settings"]["protocol"] == "grpc"
    assert "gRPC UNAVAILABLE (14)" in run["failed_check"]["detail"]
    (_, message), *_ = GitRemote(run_dir / "sandbox" / "gitops.git").log()
    assert "gRPC UNAVAILABLE (14)" in message  # the rollback commit names the status
    responses = read_responses(run_dir / "responses.csv")
    assert {r.grpc_status for r in responses} == {0, 14}
    assert {r.status for r in responses if r.grpc_status == 14} == {503} and run["failed_requests"] > 0
    assert "scenario faulty (gRPC)" in completed.stdout


def test_canary_that_is_down_is_rolled_back_at_once(tmp_path: Path) -> None:
    """The canary app stops and never comes back: the router answers its share 503 UH as callers' sidecars do,
    and the analysis fails at once instead of waiting out the bake time for requests that never come."""
    completed = demo(tmp_path, "--scenario", "down", "--schedule", "10,100", "--analysis-duration", "60s", *FAST)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    run, run_dir = only_run(tmp_path)
    assert run["outcome"] == "rolled_back" and run["verdict"] == "fail"
    assert "never reached it" in run["failed_check"]["detail"]
    assert run["traffic_cut"] - run["fault_start"] < 15  # not the 60 s bake time
    failed = [r for r in read_responses(run_dir / "responses.csv") if r.version == "v2" and r.failed]
    assert failed and {r.status for r in failed} == {503}


def test_healthy_canary_is_promoted(tmp_path: Path) -> None:
    completed = demo(tmp_path, "--scenario", "healthy", "--schedule", "10,100", "--analysis-duration", "6s", *FAST)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    run, run_dir = only_run(tmp_path)
    assert run["outcome"] == "promoted" and run["verdict"] == "pass"
    assert run["traffic_cut"] is None and run["fault_start"] is None
    assert run["failed_requests"] == 0
    assert run["final_split"] == [0, 100]
    remote = GitRemote(run_dir / "sandbox" / "gitops.git")
    assert "weight: 100 # canary" in remote.show()


def test_unknown_scenario_is_a_usage_error(tmp_path: Path) -> None:
    completed = demo(tmp_path, "--scenario", "sideways")
    assert completed.returncode == 2
    assert "sideways" in completed.stderr and "faulty" in completed.stderr


def test_missing_prometheus_binary(tmp_path: Path) -> None:
    completed = demo(tmp_path, "--scenario", "faulty", env={"PROMETHEUS_BIN": "/nonexistent/prometheus"})
    assert completed.returncode == 4
    assert "PROMETHEUS_BIN=/nonexistent/prometheus" in completed.stderr


def test_router_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        completed = demo(tmp_path, "--scenario", "faulty", "--router-port", str(port))
    assert completed.returncode == 4
    assert f"port {port}" in completed.stderr and "already in use" in completed.stderr


def _start_demo(report_dir: Path, *args: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "rollguard.steps.cli", "demo", "--report-dir", str(report_dir), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, MARKER: str(report_dir)})


def _wait_for_analysis(report_dir: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if any("rollguard.steps.cli analyze" in command for _, command in processes_mentioning(str(report_dir))):
            time.sleep(1.0)  # a few checks into the analysis
            return
        time.sleep(0.1)
    raise AssertionError("the analysis did not start within 60 s")


def test_router_dying_mid_run_stops_everything(tmp_path: Path) -> None:
    process = _start_demo(tmp_path, "--scenario", "healthy", "--analysis-duration", "60s", *FAST)
    try:
        _wait_for_analysis(tmp_path, process)
        (router_pid, _), = [p for p in processes_mentioning(str(tmp_path)) if "rollguard.sandbox.router" in p[1]]
        os.kill(router_pid, signal.SIGKILL)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()  # its children get SIGTERM (parent-death signal); assert_nothing_left checks
    assert process.returncode == 4
    assert "a sandbox component died: router" in stderr and "killed by SIGKILL" in stderr
    assert_nothing_left(tmp_path)


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    process = _start_demo(tmp_path, "--scenario", "healthy", "--analysis-duration", "60s", *FAST)
    try:
        _wait_for_analysis(tmp_path, process)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()  # its children get SIGTERM (parent-death signal); assert_nothing_left checks
    assert process.returncode == 130
    assert_nothing_left(tmp_path)
