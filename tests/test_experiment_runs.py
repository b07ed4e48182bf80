"""`rollguard experiment` end to end in the sandbox: automated runs, an interrupt, and a manual revert."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# Short releases: the canary is judged at 50 % (plenty of canary requests quickly), then promoted.
FAST = ["--rps", "40", "--interval", "1s", "--analysis-duration", "4s", "--window", "5s", "--schedule", "50,100",
        "--min-requests", "10"]


def _command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "rollguard.steps.cli", "experiment", *arguments]


def _runs(report: Path) -> list[dict]:
    try:
        return json.loads((report / "results.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return []


def test_mixed_runs_with_both_judges_write_the_whole_report(tmp_path: Path) -> None:
    report = tmp_path / "report"
    completed = subprocess.run(
        _command("--runs", "2", "--scenario", "mixed", "--judge", "both", "--report-dir", str(report), *FAST),
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    runs = _runs(report)
    assert sorted(run["scenario"] for run in runs) == ["faulty", "healthy"]
    faulty = next(run for run in runs if run["scenario"] == "faulty")
    healthy = next(run for run in runs if run["scenario"] == "healthy")
    assert faulty["outcome"] == "rolled_back" and healthy["outcome"] == "promoted"
    assert healthy["false_rollback"] is False
    assert faulty["fault_start"] < faulty["verdict_at"] < faulty["traffic_cut"]
    assert faulty["threshold_rule_decided_at"] > faulty["verdict_at"], "the plain rule decided before rollguard?"
    assert faulty["detection_ratio"] < 1.0
    assert faulty["series"], "the timeline needs the error-rate series"
    text = (report / "report.md").read_text()
    assert "| breach → cut (s) |" in text and "0 false rollbacks" in text
    assert (report / "results.csv").read_text().count("\n") == 3
    assert (report / "timeline.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupt_keeps_finished_runs(tmp_path: Path) -> None:
    report = tmp_path / "report"
    process = subprocess.Popen(
        _command("--runs", "5", "--scenario", "faulty", "--report-dir", str(report), *FAST),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _runs(report) and process.poll() is None:
            time.sleep(0.3)
        assert _runs(report), "no run finished within 120 s"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-2000:]
    assert 1 <= len(_runs(report)) < 5
    assert "Interrupted" in (report / "report.md").read_text()



def test_manual_mode_records_alert_to_cut(tmp_path: Path) -> None:
    report = tmp_path / "report"
    process = subprocess.Popen(
        _command("--mode", "manual", "--runs", "1", "--alert-for", "0s", "--manual-timeout", "2m",
                 "--report-dir", str(report), *FAST),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("FIRING" in line for line in lines):
            assert process.poll() is None, "".join(lines)[-2000:]
            time.sleep(0.2)
        assert any("FIRING" in line for line in lines), "the alert never fired:\n" + "".join(lines)[-2000:]
        # The person on call: the revert command the experiment printed.
        revert = next(line.strip() for line in lines if line.strip().startswith("rollguard rollback --repo"))
        arguments = shlex.split(revert)[1:]
        done = subprocess.run([sys.executable, "-m", "rollguard.steps.cli", *arguments],
                              capture_output=True, text=True, timeout=60, env=os.environ.copy())
        assert done.returncode == 0, done.stderr
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(5)
    assert process.returncode == 0, "".join(lines)[-2000:]
    run = _runs(report)[0]
    assert run["mode"] == "manual" and run["outcome"] == "rolled_back"
    assert run["fault_start"] < run["alert_firing"] < run["traffic_cut"]
    assert run["alert_to_cut_s"] > 0 and run["failed_requests"] > 0
    assert re.search(r"alert → cut \(s\) \| 1 \|", (report / "report.md").read_text())
