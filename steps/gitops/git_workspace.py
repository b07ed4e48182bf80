"""A private shallow clone of one branch driven through the `git` CLI: clone, read, write, commit, push.

rollguard drives the `git` command-line tool (via subprocess) rather than a Python Git library: the
step image needs git anyway, no extra dependency is pulled in, and authentication, proxies, SSH and
`insteadOf` rewrites behave exactly as they do for the user's own git. Every message that reaches a
log or an exception goes through a Scrubber first, because git's own messages can contain the URL
with its credentials.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rollguard.steps.gitops.credentials import (
    GitCredentials,
    git_config_arguments,
    git_environment,
    scrubber_for,
    with_url_password,
)
from rollguard.steps.gitops.repo_url import parse_repo_url

DEFAULT_AUTHOR = "rollguard <rollguard@localhost>"
_AUTHOR = re.compile(r"^\s*(?P<name>[^<>]+?)\s*<(?P<email>[^<>\s]+)>\s*$")
# Push summaries (git push --porcelain) that mean "someone else pushed first": fetch and re-apply. A server
# that lost the race while updating the ref says "failed to update ref" and "... is at X but expected Y".
_RACE_MARKERS = ("fetch first", "non-fast-forward", "stale info")
_RACE_ON_THE_SERVER = "but expected"
# "cannot lock ref ...: Unable to create '.../main.lock': File exists": another push holds the lock, or a
# crashed git process on the server left the lock file behind. Not a race: nothing else landed.
_LOCK_TAKEN = "File exists"


class GitError(Exception):
    """A git operation failed at run time; the message is scrubbed and says what state things are in."""


class BranchNotFound(GitError):
    """The branch to change does not exist in the repository (a usage problem: check --branch)."""


class FileNotInRepo(GitError):
    """The file to change is not in the branch (a usage problem: check --path)."""


class GitTimeout(GitError):
    """A git command did not finish within --git-timeout (it was stopped)."""


class PushRefused(GitError):
    """The remote refused the push for a reason other than a race (hook, permissions, protection)."""


class PushRaced(Exception):
    """One push was rejected because the remote branch moved: fetch, re-apply and push again."""


class RefLocked(PushRaced):
    """One push was rejected because the remote's ref lock file exists: try again; it may be stale."""


def parse_author(text: str) -> tuple[str, str]:
    """Split `Name <email>` into (name, email); raise ValueError naming the expected form."""
    match = _AUTHOR.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Git author; write it as 'Name <email@example.com>'")
    return match.group("name"), match.group("email")


def display_url(repo: str) -> str:
    """The repository URL as it may be shown: without any user:password part."""
    return parse_repo_url(repo).shown


class GitWorkspace:
    """A private temporary clone of one branch, with the credentials wired into every git call."""

    def __init__(self, repo: str, branch: str, credentials: GitCredentials, *, timeout_s: float = 60.0) -> None:
        url = parse_repo_url(repo)
        credentials = with_url_password(credentials, repo)  # UsageError if a token is set too
        self.repo = _absolute_if_local(url.for_git)  # git never sees the password: askpass answers with it
        self.branch = branch
        self.credentials = credentials
        self.timeout_s = timeout_s
        self.scrubber = scrubber_for(credentials, *filter(None, (url.password, url.password_as_written)))
        self._temp = tempfile.TemporaryDirectory(prefix="rollguard-git-")
        root = Path(self._temp.name)
        helper_dir = root / "helper"
        helper_dir.mkdir(mode=0o700)
        self.clone_dir = root / "clone"
        self._env = git_environment(credentials, helper_dir)

    def __enter__(self) -> GitWorkspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the clone and the credential helper files."""
        self._temp.cleanup()

    def run(
        self, *args: str, cwd: Path | None = None, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one git command; raise GitError (scrubbed) if it fails (unless `check` is False; a failed push is
        never raised here: push() reads its output) or takes longer than the timeout."""
        command = ["git", *git_config_arguments(self.credentials), *args]
        try:
            completed = subprocess.run(
                command,
                cwd=cwd or self.clone_dir,
                env=self._env,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise GitTimeout(
                f"`git {_subcommand(args)}` did not finish within {self.timeout_s:g} s (repository {self.safe_url})"
            ) from None
        if check and completed.returncode != 0 and _subcommand(args) != "push":
            detail = self.scrubber.scrub((completed.stderr or completed.stdout).strip())
            raise GitError(f"`git {_subcommand(args)}` failed for {self.safe_url}: {detail}{_hint(detail)}")
        return completed

    @property
    def safe_url(self) -> str:
        """The repository as it may appear in logs."""
        return self.scrubber.scrub(parse_repo_url(self.repo).shown)

    def clone(self) -> str:
        """Shallow-clone the branch; return its head SHA. BranchNotFound if it is missing or is a tag."""
        try:
            self.run(
                "clone", "--quiet", "--depth", "1", "--single-branch", "--branch", self.branch, "--",
                self.repo, str(self.clone_dir),
                cwd=self.clone_dir.parent,
            )  # fmt: skip
        except GitError as exc:
            if "not found in upstream" in str(exc) or "Remote branch" in str(exc):
                raise BranchNotFound(
                    f"branch {self.branch!r} does not exist in {self.safe_url}; check --branch"
                ) from None
            raise
        if self.run("symbolic-ref", "-q", "HEAD", check=False).returncode != 0:  # `clone --branch` takes tags too
            raise BranchNotFound(
                f"--branch {self.branch} names a tag in {self.safe_url}, not a branch; a push there would create a "
                "new branch of that name. Give the branch ArgoCD follows"
            )
        return self.head()

    def head(self) -> str:
        """SHA of the clone's HEAD."""
        return self.run("rev-parse", "HEAD").stdout.strip()

    def catch_up(self) -> str:
        """Move the clone onto the remote branch's current head (after a rejected push); return its SHA."""
        self.run("fetch", "--quiet", "--depth", "1", "origin", f"+refs/heads/{self.branch}:refs/rollguard/remote")
        self.run("reset", "--quiet", "--hard", "refs/rollguard/remote")
        return self.head()

    def read(self, path: str) -> str:
        """Text of a file in the clone; FileNotInRepo if it is not there."""
        file = self._file(path)
        if not file.is_file():
            raise FileNotInRepo(f"{path} is not in branch {self.branch!r} of {self.safe_url}; check --path")
        try:
            # Bytes, then decode: text mode would turn CRLF into LF and rewrite every line on commit.
            return file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileNotInRepo(
                f"{path} in branch {self.branch!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "rollguard edits YAML text files"
            ) from None

    def read_optional(self, path: str) -> str | None:
        """Text of another file of the same head (a kustomization, a base), or None if it is not a readable file
        inside the repository."""
        try:
            file = self._file(path)
            return file.read_bytes().decode("utf-8") if file.is_file() else None
        except (FileNotInRepo, UnicodeDecodeError, OSError):
            return None

    def write(self, path: str, text: str) -> None:
        """Replace a file's text in the clone (bytes exactly as given; no newline translation)."""
        self._file(path).write_bytes(text.encode("utf-8"))

    def _file(self, path: str) -> Path:
        """The file at --path in the clone; FileNotInRepo if it is outside or reached through a symbolic link.

        A symbolic link is refused rather than followed: rollguard would edit one file and commit
        another path, and ArgoCD may read the link differently; naming the real file is unambiguous.
        """
        root = self.clone_dir.resolve()
        file = (self.clone_dir / path).resolve()
        if root not in file.parents:
            raise FileNotInRepo(f"--path {path} points outside the repository; give a path inside it")
        if file != root / os.path.normpath(path):
            real = file.relative_to(root).as_posix()
            raise FileNotInRepo(
                f"--path {path} is a symbolic link (or goes through one) to {real}; rollguard edits the file "
                f"itself: pass --path {real}"
            )
        return file

    def commit(self, path: str, message: str, author: str) -> str:
        """Commit the file with `message` as `author`; return the new SHA."""
        name, email = parse_author(author)
        identity = {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }
        saved = dict(self._env)
        self._env.update(identity)
        try:
            self.run("add", "--", path)
            self.run("-c", "commit.gpgSign=false", "commit", "--quiet", "--no-verify", "-F", "-", stdin=message)
        finally:
            self._env = saved
        return self.head()

    def push(self) -> None:
        """Push HEAD to the branch. Raises PushRaced if the branch moved, PushRefused/GitError otherwise."""
        try:
            completed = self.run("push", "--porcelain", "origin", f"HEAD:refs/heads/{self.branch}")
        except GitTimeout:  # the server may have taken the commit after all: say so, and how to converge
            raise GitTimeout(
                f"`git push` to {self.safe_url} did not finish within {self.timeout_s:g} s: commit "
                f"{self.head()[:12]} may or may not have landed on {self.branch!r}. Running the step again "
                "converges: it finds the change already in Git and commits nothing, or pushes it"
            ) from None
        if completed.returncode == 0:
            return
        output = self.scrubber.scrub(f"{completed.stdout}\n{completed.stderr}")
        rejected = [line for line in output.splitlines() if line.startswith("!")]
        summary = " ".join(line.split("\t")[-1] for line in rejected)
        remote_says = [
            line.removeprefix("remote:").strip()
            for line in output.splitlines()
            if line.startswith("remote:") and line.removeprefix("remote:").strip()
        ]
        said = " ".join(remote_says)
        if any(marker in summary for marker in _RACE_MARKERS) or _RACE_ON_THE_SERVER in said:
            raise PushRaced(summary)
        if _LOCK_TAKEN in said and ".lock" in said:
            raise RefLocked(remote_says[0])
        if rejected:
            because = f"; the remote said: {' / '.join(remote_says)}" if remote_says else ""
            raise PushRefused(
                f"{self.safe_url} refused the push to {self.branch!r} ({summary.strip()}){because}. "
                "Nothing was changed in the repository"
            )
        detail = " ".join(line.strip() for line in completed.stderr.splitlines() if line.strip())
        raise GitError(
            f"`git push` to {self.safe_url} failed: {self.scrubber.scrub(detail)}. "
            "Nothing was changed in the repository"
        )


def _hint(detail: str) -> str:
    """What to check, for the failures people meet most."""
    if "Authentication failed" in detail or "could not read Username" in detail or "403" in detail:
        return (
            " (check the token in ROLLGUARD_GIT_TOKEN or --git-token-file, its user name --git-username, "
            "and that it may read and push to this repository)"
        )
    if "Permission denied (publickey" in detail or "Host key verification failed" in detail:
        return " (check --git-ssh-key-file, that the key is registered with the Git server, and known_hosts)"
    return ""


def _absolute_if_local(repo: str) -> str:
    """A relative local path made absolute (git runs in a temporary directory); URLs unchanged."""
    if "://" in repo or re.match(r"^[^/]+@[^/:]+:", repo):
        return repo
    path = Path(repo).expanduser()
    return str(path.resolve()) if path.exists() else repo


def _subcommand(args: Sequence[str]) -> str:
    """The git sub-command of an argument list, skipping `-c key=value` options (for error messages)."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        index += 2 if args[index] == "-c" else 1
    return args[index] if index < len(args) else "?"
