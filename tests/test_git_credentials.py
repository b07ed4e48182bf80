"""Git credentials: a token reaches a real HTTPS-style git server (git http-backend behind basic auth on
loopback), and a wrong token fails clearly without the secret ever appearing in the output."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_remote import MANIFEST_PATH, make_remote, remote_file, remote_log

from rollguard.sandbox.git_http_remote import GitHttpRemote
from rollguard.steps.gitops.credentials import GitCredentials, Scrubber, git_environment, load_credentials
from rollguard.steps.options import UsageError
from rollguard.steps.traffic.virtualservice import read_split

GOOD_TOKEN = "ghp_correctHorseBatteryStaple0123456789"
BAD_TOKEN = "ghp_wrongTokenThatMustNeverBePrinted42"
ROLLGUARD = str(Path(sys.executable).parent / "rollguard")


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[tuple[GitHttpRemote, Path]]:
    remote = make_remote(tmp_path)
    with GitHttpRemote(remote, ("x-access-token", GOOD_TOKEN)) as server:
        yield server, remote


def rollguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ROLLGUARD_")}
    return subprocess.run(
        [ROLLGUARD, *args], env={**clean, **(env or {})}, capture_output=True, text=True, timeout=120, check=False
    )


def rollback_args(url: str) -> list[str]:
    return ["rollback", "--repo", url, "--path", MANIFEST_PATH, "--virtual-service", "reviews"]


def test_token_from_the_environment_pushes_over_http(git_server: tuple[GitHttpRemote, Path]) -> None:
    server, remote = git_server
    completed = rollguard(*rollback_args(server.url), env={"ROLLGUARD_GIT_TOKEN": GOOD_TOKEN})
    assert completed.returncode == 0, completed.stderr
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)
    assert "credentials: token" in completed.stderr
    assert GOOD_TOKEN not in completed.stdout + completed.stderr


def test_wrong_token_fails_clearly_without_the_secret(git_server: tuple[GitHttpRemote, Path]) -> None:
    server, remote = git_server
    completed = rollguard(*rollback_args(server.url), env={"ROLLGUARD_GIT_TOKEN": BAD_TOKEN})
    output = completed.stdout + completed.stderr
    assert completed.returncode == 4
    assert "Authentication failed" in output and "`git clone` failed" in output
    assert BAD_TOKEN not in output
    assert remote_log(remote) == ["Add the reviews manifests"]


def test_git_tracing_cannot_leak_the_token(git_server: tuple[GitHttpRemote, Path]) -> None:
    server, _remote = git_server
    tracing = {"GIT_TRACE": "1", "GIT_CURL_VERBOSE": "1", "GIT_TRACE_CURL": "1"}
    completed = rollguard(*rollback_args(server.url), env={"ROLLGUARD_GIT_TOKEN": BAD_TOKEN, **tracing})
    output = completed.stdout + completed.stderr
    assert completed.returncode == 4
    assert BAD_TOKEN not in output and base64.b64encode(f"x-access-token:{BAD_TOKEN}".encode()).decode() not in output


def test_wrong_token_file_fails_without_the_secret(git_server: tuple[GitHttpRemote, Path], tmp_path: Path) -> None:
    server, _remote = git_server
    token_file = tmp_path / "token"
    token_file.write_text(BAD_TOKEN + "\n")
    completed = rollguard(*rollback_args(server.url), "--git-token-file", str(token_file))
    assert completed.returncode == 4
    assert BAD_TOKEN not in completed.stdout + completed.stderr


def test_password_in_the_url_is_scrubbed_from_errors(git_server: tuple[GitHttpRemote, Path], tmp_path: Path) -> None:
    server, _remote = git_server
    url = server.url_for(repo="missing.git", userinfo=f"x-access-token:{GOOD_TOKEN}@")
    result_file = tmp_path / "result.json"
    completed = rollguard(*rollback_args(url), "--result-file", str(result_file))
    output = completed.stdout + completed.stderr + result_file.read_text()
    assert completed.returncode == 4
    assert GOOD_TOKEN not in output
    assert "http://***@127.0.0.1" in output


def test_scrubber_hides_tokens_and_url_passwords() -> None:
    scrubber = Scrubber(secrets=("s3cr3t-token",))
    text = "fatal: unable to access 'https://bot:s3cr3t-token@git.example.com/x.git/': s3cr3t-token"
    assert scrubber.scrub(text) == "fatal: unable to access 'https://***@git.example.com/x.git/': ***"
    assert Scrubber().scrub("ssh://git@host/x.git and https://u:p@h/r") == "ssh://***@host/x.git and https://***@h/r"


def test_token_file_and_ssh_key_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc")
    (tmp_path / "key").write_text("KEY")
    with pytest.raises(UsageError, match="give one"):
        load_credentials(str(tmp_path / "token"), str(tmp_path / "key"))
    with pytest.raises(UsageError, match="no such file"):
        load_credentials(str(tmp_path / "absent"), None)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(UsageError, match="is empty"):
        load_credentials(str(tmp_path / "empty"), None)


def test_ssh_key_is_copied_private_and_used_only_through_git_ssh_command(tmp_path: Path) -> None:
    key = tmp_path / "mounted-key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n...\n")
    key.chmod(0o644)  # as secrets are often mounted
    helper = tmp_path / "helper"
    helper.mkdir()
    env = git_environment(GitCredentials(ssh_key_file=key), helper)
    command = env["GIT_SSH_COMMAND"]
    assert f"-i {helper / 'id_key'}" in command
    assert "IdentitiesOnly=yes" in command and "StrictHostKeyChecking=accept-new" in command
    assert stat.S_IMODE((helper / "id_key").stat().st_mode) == 0o600
    assert env["GIT_TERMINAL_PROMPT"] == "0" and "GIT_ASKPASS" not in env


def test_token_is_in_the_child_environment_only_never_in_a_file(tmp_path: Path) -> None:
    env = git_environment(GitCredentials(token=GOOD_TOKEN), tmp_path)
    script = Path(env["GIT_ASKPASS"])
    assert GOOD_TOKEN not in script.read_text()
    answer = subprocess.run([str(script), "Password for 'https://x@host': "], env=env, capture_output=True, text=True)
    assert answer.stdout == GOOD_TOKEN + "\n"
    assert "ROLLGUARD_GIT_TOKEN" not in env


SLASHED = "s3cr/et?P#W@x"  # `/`, `?`, `#` and `@`, unencoded, as people paste them


@pytest.fixture
def slashed_server(tmp_path: Path) -> Iterator[tuple[GitHttpRemote, Path]]:
    remote = make_remote(tmp_path)
    with GitHttpRemote(remote, ("bot", SLASHED)) as server:
        yield server, remote


def every_channel(completed: subprocess.CompletedProcess[str], remote: Path, *files: Path) -> str:
    """Logs, outputs, files written, and every commit message on the remote."""
    messages = subprocess.run(["git", "--git-dir", str(remote), "log", "--all", "--format=%B"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    written = "".join(file.read_text() for file in files if file.exists())
    return completed.stdout + completed.stderr + written + messages


@pytest.mark.parametrize("repo", ["remote.git", "missing.git"])
def test_a_password_with_slash_question_mark_and_hash_reaches_git_and_no_output(
    slashed_server: tuple[GitHttpRemote, Path], tmp_path: Path, repo: str
) -> None:
    server, remote = slashed_server
    result_file, commit_file = tmp_path / "result.json", tmp_path / "commit.txt"
    completed = rollguard(*rollback_args(server.url_for(repo=repo, userinfo=f"bot:{SLASHED}@")),
                          "--result-file", str(result_file), "--commit-file", str(commit_file))  # fmt: skip
    channels = every_channel(completed, remote, result_file, commit_file)
    for fragment in (SLASHED, "s3cr", "et?P#W"):
        assert fragment not in channels
    assert "http://***@127.0.0.1" in completed.stderr and "http://***@127.0.0.1" in result_file.read_text()
    if repo == "remote.git":
        assert completed.returncode == 0, completed.stderr
        assert "credentials: password in --repo" in completed.stderr
        assert read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)
    else:
        assert completed.returncode == 4 and "`git clone` failed" in completed.stderr


def test_a_password_in_the_url_and_a_token_are_refused_together(git_server: tuple[GitHttpRemote, Path]) -> None:
    server, remote = git_server
    url = server.url_for(userinfo=f"bot:{SLASHED}@")
    completed = rollguard(*rollback_args(url), env={"ROLLGUARD_GIT_TOKEN": "t0k"})
    assert completed.returncode == 2
    assert "carries a password and a token (ROLLGUARD_GIT_TOKEN or --git-token-file) is set too" in completed.stderr
    assert SLASHED not in completed.stderr and remote_log(remote) == ["Add the reviews manifests"]


def test_scrubber_finds_the_userinfo_of_any_url_in_a_message() -> None:
    text = f"fatal: unable to access 'https://bot:{SLASHED}@git.example.com/x.git/': https://h/team/@scope/r"
    assert Scrubber().scrub(text) == (
        "fatal: unable to access 'https://***@git.example.com/x.git/': https://h/team/@scope/r"
    )
