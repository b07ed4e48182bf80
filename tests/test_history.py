"""Release history from Git: the trailers deploy, promote and rollback write, and `rollguard history` reading them
back from a real bare repository (also commits made before the trailers existed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from git_remote import MANIFEST_PATH, commit_message, land_commit, make_remote

from rollguard.steps import cli, trailers
from rollguard.steps.exit_codes import ExitCode

VERDICT = {
    "verdict": "fail",
    "format_version": 2,
    "reason": "canary_error_rate 50 % is over the 1 % limit\n(24 requests)",
    "started_at": 1795680000.0,
    "decided_at": 1795680003.5,
    "first_breach_at": 1795680002.0,
    "failed_check": {"metric": "canary_error_rate", "value": 0.5, "threshold": 0.01, "detail": "12 of 24 5xx",
                     "samples": 24},
    "settings": {},
    "check_count": 4,
    "last_check": None,
}


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_remote(tmp_path)


def run(remote: Path, command: str, *extra: str) -> int:
    args = [command, "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews", *extra]
    try:
        return cli.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


def git_trailers(message: str) -> dict[str, str]:
    """What git itself reads as the trailers of `message` (the contract: `git interpret-trailers --parse`)."""
    out = subprocess.run(["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_the_trailer_block_is_what_git_reads_and_what_we_parse() -> None:
    block = trailers.ReleaseTrailers(
        action="rollback",
        virtual_service="reviews",
        weights={"v1": 100, "v2": 0},
        previous_weights={"v1": 90, "v2": 10},
        evidence=trailers.evidence_from_verdict_json(VERDICT),
        workflow="canary-release-x7k2p",
    )
    message = "rollguard: roll back reviews\n\nVerdict: fail: long\n\n" + block.block()
    assert git_trailers(message) == {
        "Rollguard-Action": "rollback",
        "Rollguard-Virtual-Service": "reviews",
        "Rollguard-Weights": "v1=100 v2=0",
        "Rollguard-Previous-Weights": "v1=90 v2=10",
        "Rollguard-Verdict": "fail",
        "Rollguard-Reason": "canary_error_rate 50 % is over the 1 % limit (24 requests)",
        "Rollguard-Metric": "canary_error_rate",
        "Rollguard-Value": "0.5",
        "Rollguard-Threshold": "0.01",
        "Rollguard-Samples": "24",
        "Rollguard-First-Breach": "2026-11-26T08:00:02Z",
        "Rollguard-Workflow": "canary-release-x7k2p",
    }
    read_back = trailers.read_release_trailers(message)
    assert read_back is not None and read_back.lines() == block.lines()  # the reason is one line in a trailer
    assert trailers.read_release_trailers("rollguard: x\n\nSome text: here\nnot a trailer\n") is None
    assert trailers.one_line("a\nb   c", 4) == "a b…"


def test_each_step_writes_its_trailers_and_history_lists_them(remote: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("ROLLGUARD_WORKFLOW_NAME", "canary-release-abc12")
    assert run(remote, "deploy", "--weight", "20") == ExitCode.OK  # the fixture holds 90/10
    assert trailers.parse_trailers(commit_message(remote))["Rollguard-Weights"] == "v1=80 v2=20"
    monkeypatch.setenv("ROLLGUARD_VERDICT_JSON", json.dumps({**VERDICT, "verdict": "pass", "reason": "all good",
                                                            "failed_check": None, "first_breach_at": None}))
    assert run(remote, "promote", "--weight", "50") == ExitCode.OK
    promoted = trailers.parse_trailers(commit_message(remote))
    assert (promoted["Rollguard-Verdict"], promoted["Rollguard-Reason"]) == ("pass", "all good")
    land_commit(remote, "README.md", "unrelated\n")  # another file: not in the log of --path
    land_commit(remote, MANIFEST_PATH, "# a comment\n", message="Someone edits the manifest")
    monkeypatch.delenv("ROLLGUARD_VERDICT_JSON")
    verdict_file = tmp_path / "verdict.json"
    verdict_file.write_text(json.dumps(VERDICT))
    assert run(remote, "rollback", "--reason-file", str(verdict_file)) == ExitCode.OK
    capsys.readouterr()

    assert run(remote, "history", "--json") == ExitCode.OK
    releases = json.loads(capsys.readouterr().out)
    assert [r["action"] for r in releases] == ["rollback", "promote", "deploy"]
    rollback, promote, deploy = releases
    assert (rollback["weights"], rollback["previous_weights"]) == ({"v1": 100, "v2": 0}, {"v1": 50, "v2": 50})
    assert (rollback["verdict"], rollback["metric"], rollback["value"], rollback["threshold"], rollback["samples"]) == (
        "fail", "canary_error_rate", 0.5, 0.01, 24)
    assert rollback["first_breach_at"] == "2026-11-26T08:00:02Z"
    assert rollback["workflow"] == "canary-release-abc12" and len(rollback["commit"]) == 40
    assert promote["verdict"] == "pass" and deploy["weights"] == {"v1": 80, "v2": 20}
    assert all(r["trailers"] for r in releases)

    assert run(remote, "history") == ExitCode.OK
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["time", "(UTC)", "action", "weights", "(v1/v2)", "verdict", "reason", "commit",
                                "workflow"]
    assert "rollback" in table[1] and "50/50 -> 100/0" in table[1] and "fail" in table[1]
    assert "canary_error_rate 0.5 (limit 0.01, 24 requests)" in table[1]
    assert "deploy" in table[3] and "90/10 -> 80/20" in table[3]

    assert run(remote, "history", "--limit", "1", "--json") == ExitCode.OK
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_other_virtual_services_and_pre_trailer_commits(remote: Path, capsys) -> None:
    old_style = ("rollguard: roll back reviews to stable v1 (canary v2 0 %)\n\nVerdict: fail: too many 5xx\n\n"
                 "Weights: v1 90 -> 100 %, v2 10 -> 0 % (VirtualService reviews, k8s/istio.yml).\n\n"
                 "Rollguard-Action: rollback\n")
    land_commit(remote, MANIFEST_PATH, "# one\n", message=old_style)
    other = ("rollguard: shift 10 % of ratings traffic\n\nx\n\nRollguard-Action: deploy\n"
             "Rollguard-Virtual-Service: ratings\nRollguard-Weights: v1=90 v2=10\n")
    land_commit(remote, MANIFEST_PATH, "# two\n", message=other)
    assert run(remote, "history", "--json") == ExitCode.OK
    (release,) = json.loads(capsys.readouterr().out)
    assert (release["action"], release["verdict"], release["reason"]) == ("rollback", "fail", "too many 5xx")
    assert (release["weights"], release["previous_weights"], release["trailers"]) == (
        {"v1": 100, "v2": 0}, {"v1": 90, "v2": 10}, False)


def test_no_history_and_a_missing_branch(remote: Path, capsys) -> None:
    assert run(remote, "history") == ExitCode.OK
    assert "no rollguard commits for VirtualService reviews" in capsys.readouterr().out
    assert run(remote, "history", "--branch", "nope") == ExitCode.USAGE
    assert "branch 'nope' does not exist" in capsys.readouterr().err
