"""Change one file the GitOps way: clone, edit, commit, push; on a lost push race fetch, re-apply and retry.

A rejected push is never forced: rollguard fetches the new head, applies its edit again to the file
there (the edit decides anew from what it finds, and may now be a no-op), and pushes again, a bounded
number of times with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from rollguard.steps.gitops.credentials import GitCredentials
from rollguard.steps.gitops.git_workspace import GitError, GitWorkspace, PushRaced, PushRefused, RefLocked

log = logging.getLogger(__name__)
ReadFile = Callable[[str], str | None]  # another file of the same head, by repository path


class PushRaceLost(GitError):
    """Other commits kept landing first; the bounded number of re-applied pushes ran out."""


class RemoteRefLocked(PushRefused):
    """The remote's ref stayed locked through every retry (a stale lock file on the server?)."""


class FileChange(Protocol):
    """The result of editing a file's text: the new text, whether it differs, and the commit message."""

    @property
    def text(self) -> str: ...

    @property
    def changed(self) -> bool: ...

    @property
    def message(self) -> str: ...


ChangeT = TypeVar("ChangeT", bound=FileChange)


class PublishState(Enum):
    """What happened to the repository."""

    PUSHED = "pushed"  # a new commit is on the remote branch
    UNCHANGED = "unchanged"  # the file already said this; no commit
    DRY_RUN = "dry-run"  # the change was computed and shown; nothing committed


@dataclass(frozen=True)
class PublishOutcome(Generic[ChangeT]):
    """Outcome of publish_change: the state, the change made on the last head seen, the commit pushed (if any)."""

    state: PublishState
    change: ChangeT
    old_text: str
    commit: str | None  # the pushed SHA; None when nothing was pushed
    head: str  # the remote branch head this run last saw (the pushed commit when pushed)
    pushed_at: float | None  # Unix time the push finished
    attempts: int  # push attempts made (1 without a race)


def _log_retry(branch: str, rejection: BaseException | None, attempt: int, attempts: int) -> None:
    if isinstance(rejection, RefLocked):
        log.warning("the remote's lock on %s is taken (%s); trying again (attempt %d of %d)", branch, rejection,
                    attempt, attempts)  # fmt: skip
        return
    log.warning(
        "push to %s was rejected because another commit landed first (%s); fetching the new head and "
        "re-applying the change (attempt %d of %d)", branch, rejection or "", attempt, attempts,
    )  # fmt: skip


def publish_change(
    *,
    repo: str,
    branch: str,
    path: str,
    make_change: Callable[[str, ChangeT | None, ReadFile], ChangeT],
    author: str,
    credentials: GitCredentials,
    push_retries: int = 5,
    timeout_s: float = 60.0,
    dry_run: bool = False,
    before_commit: Callable[[], None] | None = None,
    check_written: Callable[[Path, ChangeT], None] | None = None,
) -> PublishOutcome[ChangeT]:
    """Clone `branch`, apply `make_change` to `path`, commit with the change's message and push.

    `make_change(text, previous, read)` gets the file's text, after a lost push race the change it made
    on the head before (None the first time), and `read(path)` for the other files of the same head (a
    kustomization and its base; None when missing): it may refuse to go on when the race moved what it
    started from. If the push is rejected because another commit landed first, fetch the new head,
    apply `make_change` again to the file there (it may now be a no-op) and retry with backoff, at most
    `push_retries` times. Never force-pushes. The outcome carries the change made on the last head,
    so the caller reads what was decided there. `before_commit()` runs once the change is known and
    before anything is committed (not in a dry run): a last check that may raise to stop while nothing
    has changed. `check_written(clone_dir, change)` runs with the changed file written into the clone (a
    dry run too) and before the commit: it may raise to stop (the Kustomize render check). Raises GitError
    subclasses.
    """
    with GitWorkspace(repo, branch, credentials, timeout_s=timeout_s) as workspace:
        head = workspace.clone()
        attempts = 0
        previous: ChangeT | None = None
        retrying = Retrying(
            stop=stop_after_attempt(push_retries + 1),
            wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
            retry=retry_if_exception_type(PushRaced),
            reraise=True,
            before_sleep=lambda state: _log_retry(branch, state.outcome.exception() if state.outcome else None,
                                                  state.attempt_number + 1, push_retries + 1),
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts > 1:
                        head = workspace.catch_up()
                    old_text = workspace.read(path)
                    change = make_change(old_text, previous, workspace.read_optional)
                    previous = change
                    if before_commit is not None and not dry_run:
                        before_commit()
                    if check_written is not None and change.changed:
                        workspace.write(path, change.text)  # a race's catch_up resets it
                        check_written(workspace.clone_dir, change)
                    if dry_run or not change.changed:
                        state = PublishState.DRY_RUN if dry_run else PublishState.UNCHANGED
                        return PublishOutcome(state, change, old_text, None, head, None, attempts)
                    workspace.write(path, change.text)
                    commit = workspace.commit(path, change.message, author)
                    workspace.push()
                    pushed_at = time.time()
                    return PublishOutcome(PublishState.PUSHED, change, old_text, commit, commit, pushed_at, attempts)
        except RefLocked as exc:
            raise RemoteRefLocked(
                f"{workspace.safe_url} could not lock branch {branch!r} in {attempts} attempts ({exc}); nothing was "
                "pushed. Another push may have held the lock, or a git process that crashed on the server left the "
                "lock file behind: if it stays, remove that file on the server, then run the step again"
            ) from None
        except PushRaced as exc:
            raise PushRaceLost(
                f"the push to {branch!r} of {workspace.safe_url} was rejected {attempts} times because other commits "
                f"kept landing first (last: {exc}); nothing was pushed, the branch holds the others' commits. "
                "Run the step again"
            ) from None
    raise AssertionError("unreachable: tenacity either returned or raised")  # pragma: no cover
