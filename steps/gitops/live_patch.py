"""Patch the weights of the live VirtualService directly, for an immediate traffic cut after the push.

Safe because Git already holds the same weights, so ArgoCD's self-heal will not flip them back (with
--argocd-app, rollguard asks ArgoCD to refresh just before patching, so it compares the live object
with the new commit rather than with the revision it had cached). A
JSON merge patch replaces whole lists, so the live object is read, only the weights of its weighted
routes are changed, and each changed route list (`spec.http`, `spec.tcp`, `spec.tls`) is sent back whole
with the resourceVersion that was read: if anything else wrote the object in between, the API answers
409 and the read is repeated.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from rollguard.steps.gitops.kube_api import Conflict, KubeApi
from rollguard.steps.gitops.object_refs import ObjectRef
from rollguard.steps.traffic.live_routes import apply_split_to_spec
from rollguard.steps.traffic.manifest_errors import ManifestError, WeightedRouteNotFound

log = logging.getLogger(__name__)


class LivePatchError(Exception):
    """The live VirtualService could not be patched (missing, no weighted route, or conflicts kept coming)."""


class LivePatchState(Enum):
    """What the live patch did."""

    PATCHED = "patched"  # the live weights were changed
    ALREADY = "already"  # the live object already had these weights; nothing sent


@dataclass(frozen=True)
class LivePatchOutcome:
    """Outcome of patch_live_split."""

    state: LivePatchState
    resource_version: str
    routes_changed: int
    attempts: int
    patched_at: float | None  # Unix time the API accepted the patch


def patch_live_split(
    api: KubeApi,
    ref: ObjectRef,
    stable_subset: str,
    canary_subset: str,
    canary_weight: int,
    *,
    routes: tuple[str, ...] = (),
    conflict_retries: int = 5,
) -> LivePatchOutcome:
    """Set the routes of the live VirtualService's split (the file's rule; `routes`: --route names) to canary
    `canary_weight`, stable the rest."""
    attempts = 0
    retrying = Retrying(
        stop=stop_after_attempt(conflict_retries + 1),
        wait=wait_exponential(multiplier=0.02, max=0.5),
        retry=retry_if_exception_type(Conflict),
        reraise=True,
        before_sleep=lambda _state: log.info("%s changed while being patched (409); reading it again", ref.describe()),
    )
    try:
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                live = api.get(ref)
                try:
                    new_lists, routes_changed = apply_split_to_spec(
                        live.get("spec") or {}, stable_subset, canary_subset, canary_weight, routes
                    )
                except WeightedRouteNotFound:
                    raise LivePatchError(
                        f"live {ref.describe()} has no route with both subset {stable_subset!r} and "
                        f"{canary_subset!r}; it does not match the file in Git (has ArgoCD synced it?)"
                    ) from None
                except ManifestError as exc:
                    raise LivePatchError(f"live {ref.describe()}: {exc}") from None
                resource_version = str((live.get("metadata") or {}).get("resourceVersion", ""))
                if routes_changed == 0:
                    return LivePatchOutcome(LivePatchState.ALREADY, resource_version, 0, attempts, None)
                patch = {"metadata": {"resourceVersion": resource_version}, "spec": new_lists}
                patched = api.merge_patch(ref, patch)
                return LivePatchOutcome(
                    LivePatchState.PATCHED,
                    str((patched.get("metadata") or {}).get("resourceVersion", "")),
                    routes_changed,
                    attempts,
                    time.time(),
                )
    except Conflict as exc:
        raise LivePatchError(
            f"{ref.describe()} kept changing while being patched ({attempts} conflicts): {exc}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover
