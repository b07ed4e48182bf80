"""Make ArgoCD act on a pushed commit now, instead of at its next poll (3 minutes by default).

Through the Kubernetes API: the Application gets the `argocd.argoproj.io/refresh: normal`
annotation (re-read Git) and an `operation` asking for a sync to the pushed revision, exactly what
`kubectl patch app ... --type merge` with an operation does. Then rollguard waits, bounded, until
`status.sync` reports that revision as Synced.

If the Application is already running a sync operation, rollguard only asks for the refresh and
does not wait. That is the normal case when the analysis runs as the Application's PostSync hook:
the running sync waits for the hook, so waiting for a new sync from inside the hook would deadlock.
The change is in Git; the live patch (--live-patch) cuts traffic now, and the next sync (automated
sync, or the next rollguard step) applies it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rollguard.steps.gitops.kube_api import Conflict, KubeApi, ObjectNotFound
from rollguard.steps.gitops.object_refs import ObjectRef

log = logging.getLogger(__name__)

REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
_RUNNING_PHASES = ("Running", "Terminating")
_FAILED_PHASES = ("Failed", "Error")


class ArgoCdError(Exception):
    """The Application could not be asked to sync (missing, not allowed, API unreachable)."""


class SyncState(Enum):
    """How the ArgoCD sync request ended."""

    SYNCED = "synced"  # status.sync reports the pushed revision, Synced
    SYNC_ALREADY_RUNNING = "sync-already-running"  # another operation runs (PostSync hook case); not waited
    FAILED = "failed"  # ArgoCD ran the sync and it failed
    TIMED_OUT = "timed-out"  # not confirmed within the timeout


@dataclass(frozen=True)
class SyncOutcome:
    """How a sync request ended (wait_for_sync), with a sentence for the log and the result file."""

    state: SyncState
    detail: str
    revision_seen: str | None
    waited_s: float


def _running_operation(app: dict[str, Any]) -> str | None:
    """A description of the operation in progress, or None if the Application is idle."""
    state = (app.get("status") or {}).get("operationState") or {}
    phase = state.get("phase")
    if phase in _RUNNING_PHASES:
        started = state.get("startedAt", "an unknown time")
        return f"a sync operation is {phase.lower()} (started {started})"
    if app.get("operation"):
        return "a sync operation is queued (the Application's `operation` field is set)"
    return None


def _running_revision(app: dict[str, Any]) -> str | None:
    """The revision the running (or queued) sync operation goes to, when it names one."""
    state = (app.get("status") or {}).get("operationState") or {}
    for operation in (state.get("operation"), app.get("operation")):
        revision = ((operation or {}).get("sync") or {}).get("revision")
        if revision:
            return str(revision)
    return None


def _synced_revisions(app: dict[str, Any]) -> tuple[str | None, list[str], str | None]:
    sync = (app.get("status") or {}).get("sync") or {}
    return sync.get("revision"), list(sync.get("revisions") or []), sync.get("status")


@dataclass(frozen=True)
class SyncRequest:
    """What request_sync did: asked for a sync (then wait for it), or found one running (do not wait)."""

    revision: str
    requested_at: float  # time.monotonic() when the request was made
    already_running: SyncOutcome | None  # set when an operation was in progress: the final outcome


def request_sync(
    api: KubeApi, ref: ObjectRef, revision: str, *, reason: str = "rollguard", conflict_retries: int = 5,
    pushed_now: bool = True,
) -> SyncRequest:
    """Patch the Application: refresh annotation, plus a sync operation to `revision` unless one is running.

    A running sync to `revision` itself, when this step just pushed it (`pushed_now`), is ArgoCD already
    acting on rollguard's commit (a Git webhook): it is waited for like our own. Any other running sync
    is the PostSync-hook case: waiting for it would deadlock, so only a refresh is asked for.
    """
    started = time.monotonic()
    try:
        for _attempt in range(conflict_retries + 1):
            app = api.get(ref)
            resource_version = str((app.get("metadata") or {}).get("resourceVersion", ""))
            refresh = {"resourceVersion": resource_version, "annotations": {REFRESH_ANNOTATION: "normal"}}
            running = _running_operation(app)
            try:
                if running and pushed_now and _running_revision(app) == revision:
                    api.merge_patch(ref, {"metadata": refresh})
                    log.info("ArgoCD is already syncing Application %s to %s; waiting for it", ref.name,
                             revision[:12])
                    return SyncRequest(revision, started, None)
                if running:
                    api.merge_patch(ref, {"metadata": refresh})
                    detail = (
                        f"Application {ref.namespace}/{ref.name}: {running}, as when rollguard runs as its PostSync "
                        "hook; asked for a refresh only and not waiting (that would deadlock). "
                        f"Git has {revision[:12]}; the live patch or the next sync applies it"
                    )
                    outcome = SyncOutcome(SyncState.SYNC_ALREADY_RUNNING, detail, None, time.monotonic() - started)
                    return SyncRequest(revision, started, outcome)
                operation = {
                    "initiatedBy": {"username": "rollguard"},
                    "info": [{"name": "reason", "value": reason}],
                    "sync": {"revision": revision, "syncStrategy": {"hook": {}}},
                }
                api.merge_patch(ref, {"metadata": refresh, "operation": operation})
                log.info("asked ArgoCD to refresh and sync Application %s to %s", ref.name, revision[:12])
                return SyncRequest(revision, started, None)
            except Conflict:
                log.info("Application %s changed while being patched (409); reading it again", ref.name)
    except ObjectNotFound:
        raise ArgoCdError(
            f"ArgoCD Application {ref.name!r} not found in namespace {ref.namespace!r}; check --argocd-app and "
            "--argocd-namespace"
        ) from None
    raise ArgoCdError(f"Application {ref.namespace}/{ref.name} kept changing; could not request a sync")


def wait_for_sync(
    api: KubeApi, ref: ObjectRef, request: SyncRequest, *, timeout_s: float = 60.0, poll_interval_s: float = 0.25
) -> SyncOutcome:
    """Poll (bounded by `timeout_s` from the request) until status.sync reports the revision Synced."""
    if request.already_running is not None:
        return request.already_running
    revision, started = request.revision, request.requested_at
    deadline = started + timeout_s
    while True:
        app = api.get(ref)
        seen, revisions, status = _synced_revisions(app)
        if (seen == revision or revision in revisions) and status == "Synced":
            waited = time.monotonic() - started
            detail = f"ArgoCD synced Application {ref.name} to {revision[:12]} in {waited:.1f} s"
            return SyncOutcome(SyncState.SYNCED, detail, seen, waited)
        state = (app.get("status") or {}).get("operationState") or {}
        asked = ((state.get("operation") or {}).get("sync") or {}).get("revision")
        if state.get("phase") in _FAILED_PHASES and asked == revision:
            phase = str(state["phase"]).lower()
            detail = f"ArgoCD's sync of {ref.name} to {revision[:12]} {phase}: {state.get('message', '')}"
            return SyncOutcome(SyncState.FAILED, detail.strip(), seen, time.monotonic() - started)
        if time.monotonic() >= deadline:
            detail = (
                f"ArgoCD sync of {ref.name} to {revision[:12]} not confirmed within {timeout_s:g} s "
                f"(status.sync: revision {seen or 'none'}, {status or 'unknown'})"
            )
            return SyncOutcome(SyncState.TIMED_OUT, detail, seen, time.monotonic() - started)
        time.sleep(min(poll_interval_s, max(0.0, deadline - time.monotonic())))

