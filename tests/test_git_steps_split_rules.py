"""The split rules through the commands, against a real bare repository: status, deploy, promote and rollback
read the same split (which routes, which weights, within bounded work), a matched route outside it stays byte
for byte, and a push race that moved the split stops every step but rollback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from git_remote import (
    FIXTURE,
    MANIFEST_PATH,
    git,
    make_remote,
    race_next_push,
    remote_file,
    remote_head,
    remote_log,
)

from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.traffic.virtualservice import read_split
from rollguard.steps.traffic.weight_edit import set_split

ORIGINAL = FIXTURE.read_text(encoding="utf-8")
ROLLGUARD = str(Path(sys.executable).parent / "rollguard")
PINNED_TESTERS = (
    "    route:\n    - destination:\n        host: reviews\n        subset: v1\n      weight: 0\n"
    "    - destination:\n        host: reviews\n        subset: v2\n      weight: 100\n  # The weighted split"
)
PINNED = ORIGINAL.replace(
    "    route:\n    - destination:\n        host: reviews\n        subset: v2\n  # The weighted split", PINNED_TESTERS
)


def run(remote: Path, command: str, *extra: str) -> int:
    args = [command, "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews", *extra]
    try:
        return cli.main(args)
    except SystemExit as exc:  # argparse refusing a flag value
        return int(exc.code or 0)


def test_a_pinned_header_route_is_left_alone_by_every_command(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: PINNED})
    assert run(remote, "status") == ExitCode.OK
    assert "reviews: stable v1 90 %, canary v2 10 %" in capfd.readouterr().out
    assert run(remote, "deploy", "--weight", "20") == ExitCode.OK
    assert run(remote, "promote", "--weight", "50") == ExitCode.OK
    assert run(remote, "rollback") == ExitCode.OK
    err = capfd.readouterr().err
    assert "(was v1 50 %, v2 50 %)" in err and "was v1 0 %" not in err
    assert PINNED_TESTERS in remote_file(remote)
    assert remote_file(remote) == PINNED.replace("weight: 90     # stable", "weight: 100     # stable").replace(
        "weight: 10     # canary", "weight: 0     # canary"
    )


def test_route_flag_decides_and_is_refused_when_it_names_no_split(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote = make_remote(tmp_path, {MANIFEST_PATH: PINNED})
    assert run(remote, "deploy", "--weight", "0", "--route", "testers") == ExitCode.OK
    assert read_split(remote_file(remote), "reviews", "v1", "v2", ("testers",)) == (100, 0)
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (90, 10)
    capfd.readouterr()
    assert run(remote, "status", "--route", "primary") == ExitCode.OK
    assert "stable v1 90 %, canary v2 10 %" in capfd.readouterr().out
    head = remote_head(remote)
    assert run(remote, "rollback", "--route", "nope") == ExitCode.USAGE
    assert "--route nope: no HTTP route is named 'nope'; named routes: 'testers', 'primary'" in capfd.readouterr().err
    assert remote_head(remote) == head


def test_a_split_written_by_kubectl_without_a_zero_weight(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    kubectl_style = ORIGINAL.replace("      weight: 90     # stable", "      weight: 100").replace(
        "      weight: 10     # canary\n", ""
    )
    remote = make_remote(tmp_path, {MANIFEST_PATH: kubectl_style})
    head = remote_head(remote)
    assert run(remote, "rollback") == ExitCode.OK
    assert remote_head(remote) == head and "already rolled back" in capfd.readouterr().err
    assert run(remote, "deploy", "--weight", "10") == ExitCode.OK
    assert git("--git-dir", str(remote), "show", "--numstat", "--format=", "main").split()[:2] == ["2", "1"]
    assert "        port: {number: 9080}\n      weight: 10\n    timeout: 3s\n" in remote_file(remote)
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (90, 10)


def test_weights_that_do_not_add_up_to_100_are_refused_alike_and_rollback_repairs_them(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    relative = ORIGINAL.replace("weight: 90     # stable", "weight: 9     # stable").replace(
        "weight: 10     # canary", "weight: 1     # canary"
    )
    remote = make_remote(tmp_path, {MANIFEST_PATH: relative})
    head = remote_head(remote)
    for command in (["status"], ["deploy", "--weight", "10"], ["promote", "--weight", "50"]):
        assert run(remote, *command) == ExitCode.USAGE, command
        assert "add up to 10, not 100: rollguard reads weights as percent" in capfd.readouterr().err
    assert remote_head(remote) == head
    assert run(remote, "rollback") == ExitCode.OK
    assert "(was v1 9 %, v2 1 %)" in capfd.readouterr().err
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)


def test_dry_run_prints_exactly_the_diff_of_the_commit_on_a_long_file(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    header_route = (
        '  - match:\n    - headers:\n        x-user:\n          exact: "u{i}"\n    route:\n    - destination:\n'
        "        host: reviews\n        subset: v2\n        port: {{number: 9080}}\n"
    )
    long_file = ORIGINAL.replace(
        "  # The weighted split that rollguard moves.\n",
        "".join(header_route.format(i=i) for i in range(30)) + "  # The weighted split that rollguard moves.\n",
    )  # over 200 lines, most of them alike: difflib's autojunk showed unchanged lines as changed here
    remote = make_remote(tmp_path, {MANIFEST_PATH: long_file})
    capfd.readouterr()
    assert run(remote, "rollback", "--dry-run") == ExitCode.OK
    printed = capfd.readouterr().out
    assert run(remote, "rollback") == ExitCode.OK
    committed = git("--git-dir", str(remote), "diff", "main~1", "main")
    hunk = printed[printed.index("@@ ") :]  # git adds the enclosing key after the second @@; the rest is equal
    assert hunk.startswith("@@ -319,12 +319,12 @@\n")
    assert hunk.split("@@\n", 1)[1] == committed.split(" @@ spec:\n", 1)[1]
    assert [line[0] for line in hunk.splitlines()[1:] if line[0] != " "] == ["-", "+", "-", "+"]


BOMB = (  # "billion laughs": 9 levels of 9 aliases, under 600 bytes, 387 million strings when expanded
    '---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n  a: &a ["lol", "lol", "lol", "lol"]\n'
    + "".join(
        f"  {name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
        for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (ORIGINAL + BOMB, "the file's YAML aliases (*name) expand to more than 500,000 values (an alias bomb?)"),
        (ORIGINAL + "# padding\n" * 120_000, "the file is 1.1 MiB; rollguard edits manifests up to 1 MiB"),
    ],
    ids=["alias-bomb", "over-1-MiB"],
)
def test_a_manifest_that_would_take_unbounded_work_is_refused(tmp_path: Path, text: str, words: str) -> None:
    assert len(BOMB) < 600
    remote = make_remote(tmp_path, {MANIFEST_PATH: text})
    head = remote_head(remote)
    for command in (["rollback"], ["deploy", "--weight", "20"]):
        completed = subprocess.run(  # a separate process: a hang fails the test at the timeout instead of the suite
            [ROLLGUARD, *command, "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert completed.returncode == ExitCode.USAGE, completed.stderr
        assert words in completed.stderr
    assert remote_head(remote) == head


@pytest.mark.parametrize(
    ("command", "racing_weight", "code", "landed"),
    [
        (["deploy", "--weight", "20"], 0, ExitCode.ERROR, (100, 0)),  # a rollback won: the deploy stops
        (["promote", "--weight", "50"], 0, ExitCode.ERROR, (100, 0)),
        (["deploy", "--weight", "20"], 20, ExitCode.OK, (80, 20)),  # the same deploy won: nothing left to do
        (["rollback"], 50, ExitCode.OK, (100, 0)),  # rollback applies whatever happened (safety first)
    ],
)
def test_a_lost_push_race_that_moved_the_split(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], command: list[str], racing_weight: int, code: int,
    landed: tuple[int, int],
) -> None:
    remote = make_remote(tmp_path)
    race_next_push(remote, MANIFEST_PATH, set_split(ORIGINAL, "reviews", "v1", "v2", racing_weight).text, "Other")
    result_file = tmp_path / "result.json"
    assert run(remote, *command, "--result-file", str(result_file)) == code
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == landed
    if code == ExitCode.ERROR:
        err = capfd.readouterr().err
        assert "changed the split: Git now has v1 100 %, v2 0 % (this step started from 90 % / 10 %)" in err
        assert remote_log(remote)[0] == "Other"
        assert "Nothing was pushed" in json.loads(result_file.read_text())["error"]
