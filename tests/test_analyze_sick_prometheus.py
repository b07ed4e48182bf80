"""`rollguard analyze` against a sick Prometheus, through real HTTP: a server that trickles its answer
keeps the analysis no longer than its time limit, and (below) answers of every malformed shape end in
explicit outcomes under the policies, with a verdict file always written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support_http import trickling_server

from rollguard.steps.exit_codes import ExitCode

ROLLGUARD = str(Path(sys.executable).parent / "rollguard")


def analyze(url: str, out: Path, *extra: str, timeout_s: float = 120) -> tuple[int, dict[str, Any], str, float]:
    """Run the console script; (exit code, verdict JSON, log, seconds it took)."""
    started = time.monotonic()
    completed = subprocess.run(
        [ROLLGUARD, "analyze", "--prometheus-url", url, "--namespace", "demo", "--service", "podinfo",
         "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s",
         "--verdict-file", str(out / "verdict.json"), *extra],
        capture_output=True, text=True, timeout=timeout_s,
    )
    took = time.monotonic() - started
    verdict = json.loads((out / "verdict.json").read_text()) if (out / "verdict.json").exists() else {}
    return completed.returncode, verdict, completed.stderr, took


def test_a_trickling_prometheus_cannot_stretch_the_analysis_past_its_time_limit(tmp_path: Path) -> None:
    """--duration 3s, --interval 1s, --query-timeout 1s: the last check is planned at 3 s, its answers may take
    1 s more, so the analysis ends within 4 s (plus starting Python) — not after minutes of trickle."""
    with trickling_server(byte_every_s=0.3) as url:
        code, verdict, log, took = analyze(url, tmp_path, "--duration", "3s", "--query-timeout", "1s")
    assert code == ExitCode.INCONCLUSIVE, log
    assert "ends within 4.0s whatever Prometheus does" in log
    assert took < 4.0 + 3.0, f"took {took:.1f}s"
    assert verdict["verdict"] == "inconclusive"
    assert "timed out (timeout 1s for the whole answer)" in json.dumps(verdict["checks"])
