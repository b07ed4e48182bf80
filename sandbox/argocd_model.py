"""The sandbox's ArgoCD: syncs the Git head's split into the router, runs the PostSync hook, self-heals.

What it models (argo-cd; gitops-engine/pkg/sync/sync_context.go, controller/appcontroller.go):
- **sync**: a new commit at the branch head is applied to the live split `sync_delay_s` after it
  is seen (ArgoCD's polling; 0 when rollguard asks for the sync).
- **PostSync hook** (`post_sync_hook`, a command): after a sync of a new revision the hook runs,
  and the sync operation stays Running until it ends ("if there are any running hooks, then
  wait"); a newer commit is not synced meanwhile. The hook's exit code decides the operation's
  phase (Succeeded, or Failed: "one or more synchronization tasks completed unsuccessfully").
- **self-heal** (`self_heal_s`, None = off): a live change of the split that the synced Git
  revision does not hold is reverted `self_heal_s` after it was made (ArgoCD ≤ 2.12 waits 5 s;
  2.13+ backs off from 2 s). A live patch that Git already holds stays — which is why rollguard
  commits before it patches. Live changes come from the router's `POST /admin/live`, the
  sandbox's stand-in for `kubectl patch virtualservice` (and for rollback --live-patch).
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field

from rollguard.sandbox.git_remote import GitRemoteError
from rollguard.sandbox.live_split import RouteSettings, TrafficTable, WeightChange, read_weights
from rollguard.sandbox.processes import die_with_parent

log = logging.getLogger("rollguard.sandbox.argocd")

HOOK_FAILED = "one or more synchronization tasks completed unsuccessfully"


@dataclass(frozen=True)
class ArgoCdSettings:
    """How the modelled ArgoCD Application behaves."""

    sync_delay_s: float = 0.0
    self_heal_s: float | None = 5.0
    post_sync_hook: list[str] | None = None
    poll_interval_s: float = 0.2


@dataclass
class SyncOperation:
    """The Application's last sync operation (status.operationState)."""

    revision: str
    phase: str = "Running"
    message: str = ""
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None


@dataclass(frozen=True)
class PendingSync:
    """A commit seen at the head, due to be synced at `due_at`."""

    commit: str
    stable: int
    canary: int
    seen_at: float
    due_at: float


class ArgoCdModel(threading.Thread):
    """Polls the remote's branch head and keeps the router's live split where ArgoCD would keep it."""

    def __init__(self, route: RouteSettings, table: TrafficTable, settings: ArgoCdSettings) -> None:
        super().__init__(name="argocd-model", daemon=True)
        self.route = route
        self.table = table
        self.settings = settings
        self.seen_commit = table.commit
        self.synced = (table.commit, table.stable, table.canary)  # revision and split Git holds, as synced
        self.pending: list[PendingSync] = []
        self.operation: SyncOperation | None = None
        self._hook: subprocess.Popen[bytes] | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        """Poll until stopped."""
        while not self.stopped.wait(self.settings.poll_interval_s):
            self.poll_once()
        if self._hook is not None and self._hook.poll() is None:
            self._hook.terminate()

    def poll_once(self) -> None:
        """Notice a new head, finish a hook that ended, sync what is due (none while a hook runs), self-heal."""
        self._notice_head()
        self._finish_hook()
        now = time.time()
        while self.pending and self.pending[0].due_at <= now and not self._hook_running():
            self._sync(self.pending.pop(0))
        self._self_heal(now)

    def snapshot(self) -> dict[str, object]:
        """The Application's view for the router's admin endpoint: operation and revisions waiting to sync."""
        operation = self.operation
        return {
            "operation": None if operation is None else {"phase": operation.phase, "revision": operation.revision,
                                                         "message": operation.message},
            "waiting_revisions": [pending.commit for pending in self.pending],
            "synced_revision": self.synced[0],
        }

    def _notice_head(self) -> None:
        try:
            head = self.route.remote.head()
        except GitRemoteError as exc:
            self.table.note_error(f"cannot read the branch head: {exc}")
            return
        if head == self.seen_commit:
            return
        seen_at = time.time()
        self.seen_commit = head
        try:
            stable, canary = read_weights(self.route, head)
        except (ValueError, GitRemoteError) as exc:
            self.table.note_error(f"commit {head[:10]} has no usable split, keeping the current one: {exc}")
            return
        self.pending.append(PendingSync(head, stable, canary, seen_at, seen_at + self.settings.sync_delay_s))
        log.info("saw commit %s: %d/%d, syncing in %.1f s", head[:10], stable, canary, self.settings.sync_delay_s)

    def _sync(self, pending: PendingSync) -> None:
        self.table.apply(WeightChange(pending.commit, pending.stable, pending.canary, pending.seen_at, time.time()))
        self.synced = (pending.commit, pending.stable, pending.canary)
        self.operation = SyncOperation(pending.commit)
        if self.settings.post_sync_hook:
            log.info("sync of %s holds open while the PostSync hook runs", pending.commit[:10])
            self._hook = subprocess.Popen(self.settings.post_sync_hook, stdin=subprocess.DEVNULL,
                                          start_new_session=True, preexec_fn=die_with_parent)
        else:
            self._complete("Succeeded", "successfully synced (all tasks run)")

    def _hook_running(self) -> bool:
        return self._hook is not None and self._hook.poll() is None

    def _finish_hook(self) -> None:
        if self._hook is None or self._hook.poll() is None:
            return
        code, self._hook = self._hook.returncode, None
        if code == 0:
            self._complete("Succeeded", "successfully synced (all tasks run)")
        else:
            self._complete("Failed", HOOK_FAILED)

    def _complete(self, phase: str, message: str) -> None:
        if self.operation is not None:
            self.operation.phase, self.operation.message = phase, message
            self.operation.finished_at = time.time()
            log.info("sync of %s %s: %s", self.operation.revision[:10], phase, message)

    def _self_heal(self, now: float) -> None:
        if self.settings.self_heal_s is None:
            return
        patched_at = self.table.live_patched_at()
        commit, stable, canary = self.synced
        if patched_at is None or now < patched_at + self.settings.self_heal_s:
            return
        if self.table.split() != (stable, canary):
            log.info("self-heal: the live split differs from Git's %s, reverting to %d/%d", commit[:10], stable,
                     canary)
            self.table.apply(WeightChange(commit, stable, canary, now, time.time(), source="self-heal"))
        self.table.clear_live_patch()
