"""The live traffic split the sandbox's router routes by (the live VirtualService), and its change log.

ArgoCD's model (rollguard.sandbox.argocd_model) syncs Git's split into it; a live patch (the
router's POST /admin/live) changes it directly, and self-heal may revert that.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field

from rollguard.sandbox.git_remote import GitRemote

log = logging.getLogger("rollguard.sandbox.router")


@dataclass(frozen=True)
class RouteSettings:
    """What the router routes: the VirtualService, its subsets, and where each subset runs."""

    remote: GitRemote
    manifest_path: str
    virtual_service: str
    stable_subset: str
    canary_subset: str
    stable_url: str
    canary_url: str
    namespace: str
    service: str
    readiness_interval_s: float = 0.5
    stable_grpc: str | None = None  # host:port of the apps' gRPC listeners, when gRPC is relayed
    canary_grpc: str | None = None


@dataclass(frozen=True)
class WeightChange:
    """One applied change of the split: commit seen at `detected_at`, traffic moved at `applied_at`.

    `source`: "sync" (ArgoCD applied a Git revision), "live-patch" (changed on the live object), or
    "self-heal" (ArgoCD reverted a live change Git does not hold).
    """

    commit: str
    stable: int
    canary: int
    detected_at: float
    applied_at: float
    source: str = "sync"


@dataclass
class TrafficTable:
    """Current weights and the change log, shared by the request threads and the Git watcher."""

    stable: int
    canary: int
    commit: str
    changes: list[WeightChange] = field(default_factory=list)
    last_error: str | None = None
    _live_patched_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self, change: WeightChange) -> None:
        """Route by `change` from now on and log it."""
        with self._lock:
            moved = (change.stable, change.canary) != (self.stable, self.canary)
            self.stable, self.canary, self.commit = change.stable, change.canary, change.commit
            self.changes.append(change)
        if change.source != "sync":
            log.info("%s: traffic now %d %% stable / %d %% canary", change.source, change.stable, change.canary)
        elif moved:
            log.info("traffic now %d %% stable / %d %% canary (commit %s, %.3f s after it was seen)",
                     change.stable, change.canary, change.commit[:10], change.applied_at - change.detected_at)
        else:
            log.info("commit %s keeps the split at %d/%d", change.commit[:10], change.stable, change.canary)

    def live_patch(self, change: WeightChange) -> None:
        """Change the split on the live object (not through Git); self-heal looks at it later."""
        self.apply(change)
        with self._lock:
            self._live_patched_at = change.applied_at

    def live_patched_at(self) -> float | None:
        """When the live split was last patched and not yet looked at by self-heal."""
        with self._lock:
            return self._live_patched_at

    def clear_live_patch(self) -> None:
        """Self-heal has looked at the live patch."""
        with self._lock:
            self._live_patched_at = None

    def split(self) -> tuple[int, int]:
        """(stable, canary) now."""
        with self._lock:
            return self.stable, self.canary

    def note_error(self, message: str) -> None:
        """Log `message` once (until another one comes) and show it on the admin endpoint."""
        if self.last_error != message:
            log.error("%s", message)
        self.last_error = message

    def canary_share(self) -> int:
        """Canary weight in percent, read consistently."""
        with self._lock:
            return self.canary

    def snapshot(self) -> dict[str, object]:
        """JSON-able view for the admin endpoint."""
        with self._lock:
            return {
                "stable": self.stable,
                "canary": self.canary,
                "commit": self.commit,
                "last_error": self.last_error,
                "changes": [asdict(change) for change in self.changes],
            }


def read_weights(settings: RouteSettings, commit: str) -> tuple[int, int]:
    """(stable, canary) weights of the VirtualService in the manifest at `commit`."""
    from rollguard.steps.traffic.virtualservice import read_split

    text = settings.remote.show(settings.manifest_path, commit)
    return read_split(text, settings.virtual_service, settings.stable_subset, settings.canary_subset)


