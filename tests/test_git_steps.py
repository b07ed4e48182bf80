"""deploy, promote, rollback and status against a real bare repository: commits, refusals, races, dry runs."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from git_remote import (
    FIXTURE,
    MANIFEST_PATH,
    commit_author,
    commit_message,
    git,
    land_commit,
    make_remote,
    remote_file,
    remote_head,
    remote_log,
)

from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.credentials import GitCredentials
from rollguard.steps.gitops.git_publish import PublishState, PushRaceLost, ReadFile, publish_change
from rollguard.steps.traffic.virtualservice import read_split
from rollguard.steps.traffic.weight_edit import set_split
from rollguard.steps.weight_change.change import WeightChange, WeightPlan

ORIGINAL = FIXTURE.read_text(encoding="utf-8")
VERDICT = {
    "verdict": "fail",
    "reason": "canary v2 error rate 12.0 % is above the 1.0 % limit",
    "started_at": 1795680000.0,
    "decided_at": 1795680012.5,
    "failed_check": {"metric": "error_rate", "value": 0.12, "threshold": 0.01, "detail": "36 of 300 requests 5xx"},
    "checks": [],
    "settings": {},
}


NOT_FOUND = "no VirtualService named 'nope' in the file; VirtualServices in this file: reviews, ratings"
WITHOUT_V2 = ORIGINAL.replace('    - name: v2\n      labels:\n        version: "v2"\n', "")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return make_remote(tmp_path)


def run(remote: Path, command: str, *extra: str) -> int:
    args = [command, "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews", *extra]
    try:
        return cli.main(args)
    except SystemExit as exc:  # argparse refusing a flag value
        return int(exc.code or 0)


def weights(remote: Path) -> tuple[int, int]:
    return read_split(remote_file(remote), "reviews", "v1", "v2")


def test_rollback_commits_only_the_weights_with_the_evidence(remote: Path, tmp_path: Path) -> None:
    verdict_file = tmp_path / "verdict.json"
    verdict_file.write_text(json.dumps(VERDICT))
    result_file, commit_file = tmp_path / "result.json", tmp_path / "commit.txt"
    code = run(
        remote, "rollback", "--reason-file", str(verdict_file), "--result-file", str(result_file),
        "--commit-file", str(commit_file), "--git-author", "Release Bot <release@example.com>",
    )  # fmt: skip
    assert code == ExitCode.OK
    assert remote_file(remote) == set_split(ORIGINAL, "reviews", "v1", "v2", 0).text
    assert weights(remote) == (100, 0)
    message = commit_message(remote)
    assert message.startswith("rollguard: roll back reviews to stable v1 (canary v2 0 %)\n")
    for evidence in (
        "canary v2 error rate 12.0 % is above the 1.0 % limit",
        "Evidence: metric error_rate, value 0.12, threshold 0.01",
        "36 of 300 requests 5xx",
        "Analysis started 2026-11-26T",
        "Weights: v1 90 -> 100 %, v2 10 -> 0 %",
    ):
        assert evidence in message
    assert commit_author(remote) == "Release Bot <release@example.com>"
    result = json.loads(result_file.read_text())
    assert result["action"] == "rollback" and result["changed"] is True
    assert result["commit"] == remote_head(remote) == commit_file.read_text()
    assert (result["stable_weight"], result["canary_weight"]) == (100, 0)
    assert (result["previous_stable_weight"], result["previous_canary_weight"]) == (90, 10)
    assert result["pushed_at"] >= result["started_at"]


def test_second_rollback_does_nothing_and_exits_0(
    remote: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert run(remote, "rollback") == ExitCode.OK
    head = remote_head(remote)
    result_file, commit_file = tmp_path / "result.json", tmp_path / "commit.txt"
    capfd.readouterr()
    assert run(remote, "rollback", "--result-file", str(result_file), "--commit-file", str(commit_file)) == 0
    assert remote_head(remote) == head
    assert "already rolled back" in capfd.readouterr().err
    result = json.loads(result_file.read_text())
    assert result["changed"] is False and result["commit"] is None and result["head"] == head
    assert commit_file.read_text() == ""


def test_deploy_then_status(remote: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run(remote, "deploy", "--weight", "25") == ExitCode.OK
    assert weights(remote) == (75, 25)
    assert remote_log(remote)[0] == "rollguard: shift 25 % of reviews traffic to canary v2"
    weight_file = tmp_path / "canary-weight"
    capfd.readouterr()
    assert run(remote, "status", "--canary-weight-file", str(weight_file)) == ExitCode.OK
    assert "reviews: stable v1 75 %, canary v2 25 %" in capfd.readouterr().out
    assert weight_file.read_text() == "25"


def test_flags_come_from_the_environment(remote: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "REPO": str(remote),
        "PATH": MANIFEST_PATH,
        "VIRTUAL_SERVICE": "reviews",
        "WEIGHT": "40",
    }.items():
        monkeypatch.setenv(f"ROLLGUARD_{name}", value)
    assert cli.main(["deploy"]) == ExitCode.OK
    assert weights(remote) == (60, 40)


def test_promote_moves_forward_and_completes(remote: Path) -> None:
    assert run(remote, "promote", "--weight", "50") == ExitCode.OK
    assert weights(remote) == (50, 50)
    assert remote_log(remote)[0] == "rollguard: promote canary v2 of reviews to 50 %"
    head = remote_head(remote)
    assert run(remote, "promote", "--weight", "20") == ExitCode.USAGE  # backwards: refused
    assert remote_head(remote) == head
    assert run(remote, "promote", "--weight", "100") == ExitCode.OK
    assert weights(remote) == (0, 100)
    assert "canary v2 takes 100 %" in remote_log(remote)[0]
    assert "is now the stable version" in commit_message(remote)
    # The stable destination stays in the route with weight 0.
    assert "subset: v1\n        port: {number: 9080}\n      weight: 0     # stable" in remote_file(remote)


def test_promote_after_a_rollback_is_refused(remote: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run(remote, "rollback") == ExitCode.OK
    head = remote_head(remote)
    assert run(remote, "promote", "--weight", "50") == ExitCode.USAGE
    assert "nothing to promote: canary v2 has 0 %" in capfd.readouterr().err
    assert remote_head(remote) == head


def test_dry_run_prints_the_diff_and_changes_nothing(remote: Path, capfd: pytest.CaptureFixture[str]) -> None:
    head = remote_head(remote)
    assert run(remote, "rollback", "--dry-run") == ExitCode.OK
    out = capfd.readouterr().out
    assert "--- a/k8s/istio.yml\n+++ b/k8s/istio.yml\n" in out
    assert "-      weight: 10     # canary\n+      weight: 0     # canary\n" in out
    assert remote_head(remote) == head and remote_file(remote) == ORIGINAL


@pytest.mark.parametrize(
    ("extra", "file_text", "words"),
    [
        (["--path", "k8s/missing.yml"], None, "k8s/missing.yml is not in branch 'main'"),
        ([], ORIGINAL + "\n  broken: [\n", "not valid YAML at line"),
        (["--virtual-service", "nope"], None, NOT_FOUND),
        (["--canary-subset", "v3"], None, "no route (HTTP, TCP or TLS) whose destinations include both subset 'v1'"),
        (["--branch", "release"], None, "branch 'release' does not exist"),
        ([], WITHOUT_V2, "subset 'v2' is not declared"),
        (["--git-author", "no email"], None, "not a Git author"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_no_commit(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], extra: list[str], file_text: str | None, words: str
) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: file_text} if file_text is not None else None)
    head = remote_head(remote)
    assert run(remote, "rollback", *extra) == ExitCode.USAGE
    assert words in capfd.readouterr().err
    assert remote_head(remote) == head


def test_weight_outside_0_to_100_is_a_usage_error(remote: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert run(remote, "deploy", "--weight", "101") == ExitCode.USAGE
    assert "outside 0..100" in capfd.readouterr().err
    assert len(remote_log(remote)) == 1


def test_a_remote_that_refuses_the_push(remote: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch main is protected: open a merge request' >&2\nexit 1\n")
    hook.chmod(0o755)
    result_file = tmp_path / "result.json"
    assert run(remote, "rollback", "--result-file", str(result_file)) == ExitCode.ERROR
    err = capfd.readouterr().err
    assert "refused the push to 'main'" in err and "branch main is protected" in err
    assert "Nothing was changed in the repository" in err
    assert remote_file(remote) == ORIGINAL and len(remote_log(remote)) == 1
    result = json.loads(result_file.read_text())
    assert result["commit"] is None and "refused" in result["error"]


def test_unreadable_reason_file_does_not_stop_a_rollback(remote: Path, tmp_path: Path) -> None:
    assert run(remote, "rollback", "--reason-file", str(tmp_path / "missing.json"), "--reason", "workflow died") == 0
    message = commit_message(remote)
    assert "Reason: workflow died" in message and "Verdict: unavailable (reason file" in message
    assert weights(remote) == (100, 0)


def rollback_change(text: str, _previous: WeightChange | None = None, _read: object = None) -> WeightChange:
    return WeightChange(set_split(text, "reviews", "v1", "v2", 0), WeightPlan(0, "already"), "rollguard: roll back")


def rollback_racing(others: Callable[[int], None]) -> Callable[[str, WeightChange | None, ReadFile], WeightChange]:
    """The rollback edit, with `others(attempt)` landing their commits between our clone (or fetch) and our push."""
    attempts = 0

    def make_change(text: str, previous: WeightChange | None, _read: ReadFile) -> WeightChange:
        nonlocal attempts
        attempts += 1
        assert (previous is None) == (attempts == 1), "after a race, the change made on the old head is handed in"
        others(attempts)
        return rollback_change(text)

    return make_change


@pytest.mark.parametrize("scheme", ["path", "file://"])  # file:// makes git really clone shallow
def test_push_race_reapplies_the_edit_and_keeps_the_other_commit(remote: Path, scheme: str) -> None:
    landed: list[str] = []

    def someone_else_pushes(attempt: int) -> None:
        if attempt == 1:  # between our clone and our push, a colleague edits a comment in the same file
            text = remote_file(remote).replace(
                "# Testers always get the canary.", "# Testers (QA team) get the canary."
            )
            landed.append(land_commit(remote, MANIFEST_PATH, text=text, message="Clarify the testers route"))

    outcome = publish_change(
        repo=f"file://{remote}" if scheme == "file://" else str(remote), branch="main", path=MANIFEST_PATH,
        make_change=rollback_racing(someone_else_pushes), author="rollguard <rollguard@localhost>",
        credentials=GitCredentials(),
    )  # fmt: skip
    assert outcome.state is PublishState.PUSHED and outcome.attempts == 2
    assert remote_log(remote) == ["rollguard: roll back", "Clarify the testers route", "Add the reviews manifests"]
    final = remote_file(remote)
    assert "# Testers (QA team) get the canary." in final
    assert read_split(final, "reviews", "v1", "v2") == (100, 0)
    assert outcome.commit == remote_head(remote)


def test_push_race_lost_to_an_identical_rollback_is_a_no_op(remote: Path) -> None:
    def someone_else_rolls_back(attempt: int) -> None:
        if attempt == 1:
            land_commit(remote, MANIFEST_PATH, text=rollback_change(ORIGINAL).text, message="Manual rollback")

    outcome = publish_change(
        repo=str(remote), branch="main", path=MANIFEST_PATH, make_change=rollback_racing(someone_else_rolls_back),
        author="rollguard <rollguard@localhost>", credentials=GitCredentials(),
    )  # fmt: skip
    assert outcome.state is PublishState.UNCHANGED and outcome.commit is None
    assert remote_log(remote) == ["Manual rollback", "Add the reviews manifests"]


def test_push_races_are_bounded(remote: Path) -> None:
    def others_keep_pushing(attempt: int) -> None:
        land_commit(remote, "README.md", f"line {attempt}\n", message=f"Other commit {attempt}")

    with pytest.raises(PushRaceLost, match="rejected 3 times because other commits kept landing first"):
        publish_change(
            repo=str(remote), branch="main", path=MANIFEST_PATH, make_change=rollback_racing(others_keep_pushing),
            author="rollguard <rollguard@localhost>", credentials=GitCredentials(), push_retries=2,
        )  # fmt: skip
    assert remote_log(remote)[:3] == ["Other commit 3", "Other commit 2", "Other commit 1"]
    assert remote_file(remote) == ORIGINAL


def test_status_refuses_a_split_that_does_not_add_up(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: ORIGINAL.replace("weight: 10     # canary", "weight: 30")})
    weight_file = tmp_path / "canary-weight"
    assert run(remote, "status", "--canary-weight-file", str(weight_file)) == ExitCode.USAGE
    assert "add up to 120, not 100" in capfd.readouterr().err
    assert not weight_file.exists()


def test_crlf_file_keeps_its_line_endings_in_the_commit(tmp_path: Path) -> None:
    crlf = ORIGINAL.replace("\n", "\r\n")
    remote = make_remote(tmp_path, {MANIFEST_PATH: crlf})
    assert run(remote, "rollback") == ExitCode.OK
    pushed = subprocess.run(
        ["git", "--git-dir", str(remote), "show", f"main:{MANIFEST_PATH}"], capture_output=True, check=True
    ).stdout  # bytes: text mode would hide the CRs
    assert pushed == set_split(ORIGINAL, "reviews", "v1", "v2", 0).text.replace("\n", "\r\n").encode()
    stat = git("--git-dir", str(remote), "show", "--numstat", "--format=", "main")
    assert stat.split()[:2] == ["2", "2"]


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: ORIGINAL})
    land_commit(remote, MANIFEST_PATH, text="", message="empty it")
    work = tmp_path / "latin1"
    git("clone", "--quiet", str(remote), str(work))
    (work / MANIFEST_PATH).write_bytes(ORIGINAL.replace("Traffic", "Tr\xe4ffic").encode("latin-1"))
    git("commit", "--quiet", "-am", "latin-1", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    assert run(remote, "rollback") == ExitCode.USAGE
    assert "is not UTF-8 text" in capfd.readouterr().err


def test_refusal_is_recorded_in_the_result_file(remote: Path, tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    assert run(remote, "rollback", "--virtual-service", "nope", "--result-file", str(result_file)) == 2
    result = json.loads(result_file.read_text())
    assert result["changed"] is False and result["commit"] is None
    assert "no VirtualService named 'nope'" in result["error"]


def test_a_tag_given_as_branch_is_refused(remote: Path, capfd: pytest.CaptureFixture[str]) -> None:
    git("--git-dir", str(remote), "tag", "v1.0", "main")
    head = remote_head(remote)
    for command in (["rollback"], ["status"]):
        assert run(remote, *command, "--branch", "v1.0") == ExitCode.USAGE
        assert "--branch v1.0 names a tag in" in capfd.readouterr().err
    assert git("--git-dir", str(remote), "for-each-ref", "--format=%(refname)", "refs/heads") == "refs/heads/main\n"
    assert remote_head(remote) == head


def test_a_push_that_times_out_says_the_commit_may_have_landed(
    remote: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    release, done = tmp_path / "release", tmp_path / "hook-done"
    hook = remote / "hooks" / "pre-receive"  # a server that takes the push but answers only much later
    hook.write_text(f'#!/bin/sh\nwhile [ ! -e "{release}" ]; do sleep 0.05; done\ntouch "{done}"\n')
    hook.chmod(0o755)
    result_file = tmp_path / "result.json"
    try:
        assert run(remote, "rollback", "--git-timeout", "2s", "--result-file", str(result_file)) == ExitCode.ERROR
    finally:
        release.touch()
    error = json.loads(result_file.read_text())["error"]
    assert "did not finish within 2 s: commit" in error and "may or may not have landed on 'main'" in error
    assert "Running the step again converges" in capfd.readouterr().err
    deadline = time.monotonic() + 30
    while not done.exists() and time.monotonic() < deadline:  # the server side finishes once released
        time.sleep(0.05)
    hook.unlink()
    assert run(remote, "rollback") == ExitCode.OK
    assert weights(remote) == (100, 0) and remote_log(remote)[0].startswith("rollguard: roll back")
    assert len(remote_log(remote)) == 2  # one rollback commit, whether the first push landed or not


def test_a_stale_ref_lock_on_the_remote_is_not_called_a_push_race(
    remote: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (remote / "refs" / "heads" / "main.lock").write_text("")  # left by a git process that crashed on the server
    result_file = tmp_path / "result.json"
    assert run(remote, "rollback", "--push-retries", "1", "--result-file", str(result_file)) == ExitCode.ERROR
    err = capfd.readouterr().err
    assert "could not lock branch 'main' in 2 attempts" in err and "main.lock': File exists" in err
    assert "remove that file on the server" in json.loads(result_file.read_text())["error"]
    assert "another commit landed first" not in err and "kept landing" not in err
    assert remote_log(remote) == ["Add the reviews manifests"]


@pytest.mark.parametrize("link", ["k8s/istio.yml", "deploy/istio.yml"])  # a linked file, a linked directory
def test_a_path_through_a_symbolic_link_is_refused_naming_the_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], link: str
) -> None:
    remote = make_remote(tmp_path, {"k8s/base/istio.yml": ORIGINAL})
    work = tmp_path / "links"
    git("clone", "--quiet", str(remote), str(work))
    (work / "k8s" / "istio.yml").symlink_to("base/istio.yml")
    (work / "deploy").symlink_to("k8s/base")
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "links", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    head = remote_head(remote)
    for command in (["rollback"], ["status"]):
        assert cli.main([*command, "--repo", str(remote), "--path", link, "--virtual-service", "reviews"]) == 2
        assert f"--path {link} is a symbolic link (or goes through one) to k8s/base/istio.yml" in (
            capfd.readouterr().err
        )
    assert remote_head(remote) == head
