"""`rollguard finish`, the exit handler: the outcome of every way a release can end, the rollback of an unfinished
one (real Git), the notification (real local HTTP server), and the exit code and termination message that make
Argo's workflow phase tell the outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from git_remote import MANIFEST_PATH, commit_message, make_remote, remote_file, remote_head
from webhook_server import webhook_server

from rollguard.sandbox.ports import free_port
from rollguard.steps import cli, trailers
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.finish import Failure, decide, parse_json, read_failures
from rollguard.steps.traffic.virtualservice import read_split

FAIL = trailers.Evidence(verdict="fail", reason="canary_error_rate 50 % over 1 %", metric="canary_error_rate",
                         value=0.5, threshold=0.01, samples=24, first_breach_at=100.0)  # fmt: skip
PASS = trailers.Evidence(verdict="pass", reason="all metrics within limits")
INCONCLUSIVE = trailers.Evidence(verdict="inconclusive", reason="Prometheus unreachable")
NONE = trailers.Evidence()
STOPPED = [Failure("release", "release", "child 'x' failed", "2026-11-29T08:00:09Z"),
           Failure("deploy", "deploy", "workflow shutdown with strategy:  Stop", "2026-11-29T08:00:08Z")]
# What Argo substitutes for {{workflow.failures}}: strconv.Quote of the JSON list (operator.go).
ARGO_FAILURES = json.dumps(json.dumps([
    {"displayName": "approve", "message": "Step exceeded its deadline", "templateName": "approve",
     "phase": "Failed", "podName": "", "finishedAt": "2026-11-29T08:30:00Z"},
]))  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "status", "failures", "evidence", "policy", "weight", "outcome", "rollback"),
    [
        ("release", "Succeeded", [], FAIL, "rollback", 0, "rolled_back", False),
        ("release", "Succeeded", [], trailers.Evidence(verdict="error", reason="no verdict"), "rollback", 10,
         "rolled_back", False),
        ("release", "Succeeded", [], INCONCLUSIVE, "rollback", 0, "rolled_back", False),
        ("release", "Succeeded", [], INCONCLUSIVE, "stop", 10, "inconclusive", False),
        ("release", "Succeeded", [], INCONCLUSIVE, "promote", 100, "promoted", False),
        ("release", "Succeeded", [], PASS, "rollback", 100, "promoted", False),
        ("release", "Succeeded", [], NONE, "rollback", 100, "promoted", False),
        ("analysis", "Succeeded", [], PASS, "rollback", 10, "passed", False),
        ("analysis", "Succeeded", [], FAIL, "rollback", 10, "rolled_back", False),
        ("analysis", "Succeeded", [], INCONCLUSIVE, "promote", 10, "inconclusive", False),
        ("analysis", "Succeeded", [], NONE, "rollback", 0, "skipped", False),
        ("release", "Failed", STOPPED, PASS, "rollback", 10, "aborted", True),
        ("release", "Failed", read_failures(ARGO_FAILURES), PASS, "rollback", 50, "aborted", True),
        ("release", "Failed", [Failure("analyze", "analyze", "Step exceeded its deadline", "t")], NONE, "rollback", 10,
         "error", True),
        ("release", "Error", [Failure("deploy", "deploy", "Error (exit code 4): push refused", "t")], NONE,
         "rollback", 10, "error", True),
        ("release", "", [], NONE, "rollback", None, "error", True),
    ],
)
def test_the_outcome_of_every_ending(kind: str, status: str, failures: list[Failure], evidence: trailers.Evidence,
                                     policy: str, weight: int | None, outcome: str, rollback: bool) -> None:
    decision = decide(kind, status, failures, evidence, policy, weight)
    assert (decision.outcome, decision.needs_rollback) == (outcome, rollback), decision.reason


def test_reasons_name_what_happened() -> None:
    assert decide("release", "Failed", STOPPED, NONE, "rollback", 10).reason == "stopped (argo stop) during deploy"
    approval = decide("release", "Failed", read_failures(ARGO_FAILURES), NONE, "rollback", 50)
    assert approval.reason == "no approval before the workflow's deadline"
    crashed = [Failure("deploy", "deploy", "Error (exit code 4): push refused", "t")]
    crash = decide("release", "Failed", crashed, NONE, "rollback", 10)
    assert crash.reason == "deploy: Error (exit code 4): push refused"


def test_argo_values_are_read_as_argo_writes_them() -> None:
    assert parse_json("{{workflow.outputs.parameters.verdict-json}}") is None  # never set: literal text
    assert parse_json('{"verdict": "fail"}') == {"verdict": "fail"}
    assert parse_json("null") is None and parse_json("") is None
    (failure,) = read_failures(ARGO_FAILURES)
    assert (failure.step, failure.message) == ("approve", "Step exceeded its deadline")
    assert read_failures(json.dumps("null")) == []


VERDICT = {
    "verdict": "fail", "format_version": 2, "reason": "canary_error_rate 50 % over the 1 % limit",
    "started_at": 1795680000.0, "decided_at": 1795680003.5, "first_breach_at": 1795680002.0,
    "failed_check": {"metric": "canary_error_rate", "value": 0.5, "threshold": 0.01, "detail": "12 of 24",
                     "samples": 24},
    "settings": {}, "check_count": 4, "last_check": None,
}  # fmt: skip


def finish(remote: Path, out: Path, *extra: str) -> int:
    args = ["finish", "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews",
            "--namespace", "demo", "--service", "reviews", "--workflow-name", "canary-release-abc",
            "--outcome-file", str(out / "outcome"), "--final-weight-file", str(out / "weight"),
            "--breach-to-cut-file", str(out / "breach-to-cut"),
            "--termination-message-file", str(out / "termination-log"), *extra]  # fmt: skip
    try:
        return cli.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_remote(tmp_path)


def test_a_rolled_back_release_ends_failed_with_its_reason_and_no_second_rollback(remote: Path, tmp_path: Path) -> None:
    head = remote_head(remote)
    rollback_result = {"commit": "3f1c2ab9d0e4c5b6a7980f1e2d3c4b5a69788796", "pushed_at": 1795680003.0,
                       "live_patch": {"outcome": "patched", "patched_at": 1795680003.25}}
    with webhook_server() as server:
        code = finish(remote, tmp_path, "--workflow-status", "Succeeded", "--verdict-json", json.dumps(VERDICT),
                      "--rollback-result", json.dumps(rollback_result), "--canary-weight", "10",
                      "--notify-url", server.url(), "--notify-format", "json")  # fmt: skip
    assert code == ExitCode.FAIL
    assert remote_head(remote) == head  # nothing pushed: the release's rollback had already landed
    message = (tmp_path / "termination-log").read_text()
    assert message == "canary rolled back: canary_error_rate 50 % over the 1 % limit"
    (request,) = server.received
    sent = request.json()
    assert (sent["outcome"], sent["canary_weight"], sent["commit"]["short"]) == ("rolled_back", 0, "3f1c2ab")
    assert sent["timing"]["breach_to_cut_seconds"] == 1.25  # live patch 1.25 s after the first breach
    assert sent["workflow"]["name"] == "canary-release-abc"
    assert (tmp_path / "outcome").read_text() == "rolled_back"
    assert (tmp_path / "weight").read_text() == "0" and (tmp_path / "breach-to-cut").read_text() == "1.250"


def test_a_rollback_made_by_analyze_gives_the_commit_and_the_cut(remote: Path, tmp_path: Path) -> None:
    """analyze --rollback-on-fail pushed and patched; the rollback step after it found nothing to do."""
    in_analysis = {"commit": "3f1c2ab9d0e4c5b6a7980f1e2d3c4b5a69788796", "pushed_at": 1795680002.5,
                   "live_patch": {"outcome": "patched", "patched_at": 1795680002.75}}
    safety_net = {"commit": None, "pushed_at": None, "changed": False,
                  "live_patch": {"outcome": "already", "patched_at": None}}
    with webhook_server() as server:
        code = finish(remote, tmp_path, "--workflow-status", "Succeeded", "--verdict-json", json.dumps(VERDICT),
                      "--rollback-result", json.dumps(safety_net),
                      "--analysis-rollback-result", json.dumps(in_analysis), "--canary-weight", "10",
                      "--notify-url", server.url(), "--notify-format", "json")  # fmt: skip
    assert code == ExitCode.FAIL
    (request,) = server.received
    sent = request.json()
    assert (sent["outcome"], sent["canary_weight"], sent["commit"]["short"]) == ("rolled_back", 0, "3f1c2ab")
    assert sent["timing"]["breach_to_cut_seconds"] == 0.75  # the analyze step's live patch, not a later no-op
    assert (tmp_path / "breach-to-cut").read_text() == "0.750"


def test_the_old_behaviour_on_request_and_a_dead_webhook_changes_nothing(remote: Path, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"
    code = finish(remote, tmp_path, "--workflow-status", "Succeeded", "--verdict-json", json.dumps(VERDICT),
                  "--fail-on-rollback", "false", "--notify-url", dead, "--notify-attempts", "1")  # fmt: skip
    assert code == ExitCode.OK and not (tmp_path / "termination-log").exists()
    assert (tmp_path / "outcome").read_text() == "rolled_back"


def test_an_aborted_release_is_rolled_back_here_and_says_why(remote: Path, tmp_path: Path) -> None:
    failures = json.dumps(json.dumps([{"displayName": "deploy", "templateName": "deploy", "phase": "Failed",
                                       "message": "workflow shutdown with strategy:  Stop", "finishedAt": "t"}]))
    with webhook_server() as server:
        code = finish(remote, tmp_path, "--workflow-status", "Failed", "--workflow-failures", failures,
                      "--verdict-json", "{{workflow.outputs.parameters.verdict-json}}", "--canary-weight", "10",
                      "--notify-url", server.url(), "--notify-format", "slack")  # fmt: skip
    assert code == ExitCode.OK  # the workflow is Failed already (stopped); the exit handler did its job
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)
    found = trailers.read_release_trailers(commit_message(remote))
    assert found is not None and found.evidence.reason == "release aborted: stopped (argo stop) during deploy"
    assert found.workflow == "" and found.action == "rollback"
    blocks = server.received[0].json()["blocks"]
    assert blocks[0]["text"]["text"] == "Release aborted: reviews in demo (canary at 0 %)"
    assert "The exit handler rolled the canary back to 0 %." in json.dumps(blocks)
    assert (tmp_path / "outcome").read_text() == "aborted"


def test_an_exit_handler_that_cannot_roll_back_says_so(tmp_path: Path) -> None:
    with webhook_server() as server:
        code = finish(tmp_path / "no-such-repo.git", tmp_path, "--workflow-status", "Error",
                      "--rollback-attempts", "1", "--notify-url", server.url())  # fmt: skip
    assert code == ExitCode.ERROR
    sent = server.received[0].json()
    assert sent["outcome"] == "error" and "could NOT roll the canary back" in sent["notes"][0]


def test_promoted_passed_and_skipped(remote: Path, tmp_path: Path) -> None:
    passed = json.dumps({**VERDICT, "verdict": "pass", "reason": "ok", "failed_check": None, "first_breach_at": None})
    with webhook_server() as server:
        assert finish(remote, tmp_path, "--workflow-status", "Succeeded", "--verdict-json", passed,
                      "--canary-weight", "100", "--release-commit", "abcdef1234567",
                      "--notify-url", server.url()) == ExitCode.OK  # fmt: skip
        assert finish(remote, tmp_path, "--kind", "analysis", "--workflow-status", "Succeeded",
                      "--canary-weight", "0", "--notify-url", server.url()) == ExitCode.OK  # fmt: skip
    (promoted,) = (request.json() for request in server.received)  # skipped sends nothing
    assert (promoted["outcome"], promoted["canary_weight"], promoted["commit"]["sha"]) == (
        "promoted", 100, "abcdef1234567")
    assert (tmp_path / "outcome").read_text() == "skipped"


def test_a_bad_notify_url_never_stops_the_rollback(remote: Path, tmp_path: Path, capsys) -> None:
    code = finish(remote, tmp_path, "--workflow-status", "Failed", "--notify-url", "ftp://x.example/hook")
    assert code == ExitCode.OK and read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)
    assert "no notification: the notify URL from --notify-url is not http(s)" in capsys.readouterr().err


def test_a_release_refused_at_its_preflight_changes_nothing(remote: Path, tmp_path: Path) -> None:
    head = remote_head(remote)
    failures = json.dumps([{"displayName": "preflight", "templateName": "notify", "phase": "Failed",
                            "message": "Error (exit code 2)", "finishedAt": "t"},
                           {"displayName": "release", "templateName": "release", "phase": "Failed",
                            "message": "child 'x' failed", "finishedAt": "u"}])  # fmt: skip
    code = finish(remote, tmp_path, "--workflow-status", "Failed", "--workflow-failures", failures)
    assert code == ExitCode.OK and remote_head(remote) == head  # a split someone set is not rolled back
    assert (tmp_path / "outcome").read_text() == "error"
