"""Change one file in a Git repository the GitOps way: shallow clone, edit, commit, push; re-apply on races.

rollguard drives the `git` command-line tool (via subprocess) rather than a Python Git library: the
step image needs git anyway, no extra dependency is pulled in, and authentication, proxies, SSH and
`insteadOf` rewrites behave exactly as they do for the user's own git. Every message that reaches a
log or an exception goes through a Scrubber first, because git's own messages can contain the URL
with its credentials. A rejected push is never forced: rollguard fetches the new head, re-applies its
edit to the file there, and pushes again, a bounded number of times with backoff.
"""

from __future__ import annotations

import logging
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from rollguard.steps.gitops.credentials import (
    GitCredentials,
    Scrubber,
    git_config_arguments,
    git_environment,
    scrubber_for,
)

log = logging.getLogger(__name__)

DEFAULT_AUTHOR = "rollguard <rollguard@localhost>"
_AUTHOR = re.compile(r"^\s*(?P<name>[^<>]+?)\s*<(?P<email>[^<>\s]+)>\s*$")
# Push summaries (git push --porcelain) that mean "someone else pushed first": fetch and re-apply.
_RACE_MARKERS = ("fetch first", "non-fast-forward", "stale info", "failed to update ref", "cannot lock ref")


class GitError(Exception):
    """A git operation failed at run time; the message is scrubbed and says what state things are in."""


class BranchNotFound(GitError):
    """The branch to change does not exist in the repository (a usage problem: check --branch)."""


class FileNotInRepo(GitError):
    """The file to change is not in the branch (a usage problem: check --path)."""


class PushRefused(GitError):
    """The remote refused the push for a reason other than a race (hook, permissions, protection)."""


class PushRaceLost(GitError):
    """Other commits kept landing first; the bounded number of re-applied pushes ran out."""


class _PushRaced(Exception):
    """Internal: one push was rejected because the remote branch moved; retried by tenacity."""


class FileChange(Protocol):
    """The result of editing a file's text: the new text and whether it differs."""

    @property
    def text(self) -> str: ...

    @property
    def changed(self) -> bool: ...


ChangeT = TypeVar("ChangeT", bound=FileChange)


class PublishState(Enum):
    """What happened to the repository."""

    PUSHED = "pushed"  # a new commit is on the remote branch
    UNCHANGED = "unchanged"  # the file already said this; no commit
    DRY_RUN = "dry-run"  # the change was computed and shown; nothing committed


@dataclass(frozen=True)
class PublishOutcome(Generic[ChangeT]):
    """Outcome of publish_change: the state, the commit pushed (if any) and the file's before/after text."""

    state: PublishState
    change: ChangeT
    old_text: str
    commit: str | None  # the pushed SHA; None when nothing was pushed
    head: str  # the remote branch head this run last saw (the pushed commit when pushed)
    pushed_at: float | None  # Unix time the push finished
    attempts: int  # push attempts made (1 without a race)


def parse_author(text: str) -> tuple[str, str]:
    """Split `Name <email>` into (name, email); raise ValueError naming the expected form."""
    match = _AUTHOR.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a Git author; write it as 'Name <email@example.com>'")
    return match.group("name"), match.group("email")


def display_url(repo: str) -> str:
    """The repository URL as it may be shown: without any user:password part."""
    return Scrubber().scrub(repo)


class GitWorkspace:
    """A private temporary clone of one branch, with the credentials wired into every git call."""

    def __init__(self, repo: str, branch: str, credentials: GitCredentials, *, timeout_s: float = 60.0) -> None:
        self.repo = _absolute_if_local(repo)
        self.branch = branch
        self.credentials = credentials
        self.timeout_s = timeout_s
        self.scrubber = scrubber_for(credentials, *_url_password(repo))
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

    def run(self, *args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run one git command; raise GitError (scrubbed) if it fails or takes longer than the timeout."""
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
            raise GitError(
                f"`git {_subcommand(args)}` did not finish within {self.timeout_s:g} s (repository {self.safe_url})"
            ) from None
        if completed.returncode != 0 and _subcommand(args) != "push":
            detail = self.scrubber.scrub((completed.stderr or completed.stdout).strip())
            raise GitError(f"`git {_subcommand(args)}` failed for {self.safe_url}: {detail}{_hint(detail)}")
        return completed

    @property
    def safe_url(self) -> str:
        """The repository as it may appear in logs."""
        return self.scrubber.scrub(self.repo)

    def clone(self) -> str:
        """Shallow-clone the branch; return its head SHA."""
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

    def write(self, path: str, text: str) -> None:
        """Replace a file's text in the clone (bytes exactly as given; no newline translation)."""
        self._file(path).write_bytes(text.encode("utf-8"))

    def _file(self, path: str) -> Path:
        file = (self.clone_dir / path).resolve()
        if self.clone_dir.resolve() not in file.parents:
            raise FileNotInRepo(f"--path {path} points outside the repository; give a path inside it")
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
        """Push HEAD to the branch. Raises _PushRaced if the branch moved, PushRefused/GitError otherwise."""
        completed = self.run("push", "--porcelain", "origin", f"HEAD:refs/heads/{self.branch}")
        if completed.returncode == 0:
            return
        output = self.scrubber.scrub(f"{completed.stdout}\n{completed.stderr}")
        rejected = [line for line in output.splitlines() if line.startswith("!")]
        summary = " ".join(line.split("\t")[-1] for line in rejected)
        if any(marker in summary for marker in _RACE_MARKERS):
            raise _PushRaced(summary)
        if rejected:
            remote_says = [
                line.removeprefix("remote:").strip()
                for line in output.splitlines()
                if line.startswith("remote:") and line.removeprefix("remote:").strip()
            ]
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


def _url_password(repo: str) -> Sequence[str]:
    match = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^/@\s]+)@", repo)
    if not match or ":" not in match.group("userinfo"):
        return ()
    return (match.group("userinfo").split(":", 1)[1],)


def publish_change(
    *,
    repo: str,
    branch: str,
    path: str,
    make_change: Callable[[str], ChangeT],
    message: Callable[[ChangeT], str],
    author: str,
    credentials: GitCredentials,
    push_retries: int = 5,
    timeout_s: float = 60.0,
    dry_run: bool = False,
    before_push: Callable[[int], None] | None = None,
) -> PublishOutcome[ChangeT]:
    """Clone `branch`, apply `make_change` to `path`, commit with `message(change)` and push.

    If the push is rejected because another commit landed first, fetch the new head, apply
    `make_change` again to the file there (it may now be a no-op) and retry with backoff, at most
    `push_retries` times. Never force-pushes. `before_push(attempt)` runs just before each push
    (an extension point: tests land a competing commit there). Raises GitError subclasses.
    """
    with GitWorkspace(repo, branch, credentials, timeout_s=timeout_s) as workspace:
        head = workspace.clone()
        attempts = 0
        retrying = Retrying(
            stop=stop_after_attempt(push_retries + 1),
            wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
            retry=retry_if_exception_type(_PushRaced),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "push to %s was rejected because another commit landed first (%s); fetching the new head and "
                "re-applying the change (attempt %d of %d)",
                branch,
                state.outcome.exception() if state.outcome else "",
                state.attempt_number + 1,
                push_retries + 1,
            ),
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts > 1:
                        head = workspace.catch_up()
                    old_text = workspace.read(path)
                    change = make_change(old_text)
                    if dry_run or not change.changed:
                        state = PublishState.DRY_RUN if dry_run else PublishState.UNCHANGED
                        return PublishOutcome(state, change, old_text, None, head, None, attempts)
                    workspace.write(path, change.text)
                    commit = workspace.commit(path, message(change), author)
                    if before_push is not None:
                        before_push(attempts)
                    workspace.push()
                    pushed_at = time.time()
                    return PublishOutcome(PublishState.PUSHED, change, old_text, commit, commit, pushed_at, attempts)
        except _PushRaced as exc:
            raise PushRaceLost(
                f"the push to {branch!r} of {workspace.safe_url} was rejected {attempts} times because other commits "
                f"kept landing first (last: {exc}); nothing was pushed, the branch holds the others' commits. "
                "Run the step again"
            ) from None
    raise AssertionError("unreachable: tenacity either returned or raised")  # pragma: no cover


def _subcommand(args: Sequence[str]) -> str:
    """The git sub-command of an argument list, skipping `-c key=value` options (for error messages)."""
    index = 0
    while index < len(args) and args[index].startswith("-"):
        index += 2 if args[index] == "-c" else 1
    return args[index] if index < len(args) else "?"
