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

import pytest
from support_http import answering_server, trickling_server

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


def vector_of(value: str) -> bytes:
    """A vector answer whose every series (a request counter) has the value `value`, as Prometheus writes it."""
    series = {"metric": {"__name__": "istio_requests_total", "response_code": "200"}, "value": [1.0, value]}
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [series]}}).encode()


MALFORMED = [
    pytest.param(b'{"status": "success"}', "without data", id="success-without-data"),
    pytest.param(b'{"status": "success", "data": null}', "without data", id="data-null"),
    pytest.param(b"[1, 2]", "its JSON is a list, not an object", id="json-list"),
    pytest.param(b'{"status": "error", "errorType": "execution", "error": "query timed out"}',
                 "with status error: execution: query timed out", id="status-error-with-200"),
    pytest.param(vector_of("NaN"), "has the value nan; counters must be finite numbers", id="nan-counters"),
    pytest.param(vector_of("+Inf"), "has the value inf; counters must be finite numbers", id="inf-counters"),
    pytest.param(vector_of("-Inf"), "has the value -inf; counters must be finite numbers", id="minus-inf-counters"),
]


@pytest.mark.parametrize(("body", "problem"), MALFORMED)
def test_a_malformed_answer_is_an_error_outcome_under_the_error_policy(body: bytes, problem: str,
                                                                       tmp_path: Path) -> None:
    with answering_server(200, body) as (url, seen):
        code, verdict, log, _ = analyze(url, tmp_path, "--duration", "10s", "--max-consecutive-errors", "1",
                                        "--on-error", "fail", "--query-attempts", "1")
    assert code == ExitCode.FAIL, log
    assert seen, "the server was never asked"
    assert verdict["verdict"] == "fail"
    assert "2 checks in a row could not be judged (budget 1)" in verdict["reason"]
    assert problem in verdict["reason"]
    assert [check["canary"]["status"] for check in verdict["checks"]] == ["error", "error"]


@pytest.mark.parametrize(("body", "problem"), MALFORMED[:3])
def test_under_the_default_policies_a_malformed_answer_ends_inconclusive_with_a_verdict(
    body: bytes, problem: str, tmp_path: Path
) -> None:
    with answering_server(200, body) as (url, _):
        code, verdict, log, _ = analyze(url, tmp_path, "--duration", "2s", "--query-attempts", "1")
    assert code == ExitCode.INCONCLUSIVE, log
    assert verdict["verdict"] == "inconclusive" and problem in verdict["reason"]
