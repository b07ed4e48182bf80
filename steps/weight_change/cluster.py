"""The cluster side of a weight change: ArgoCD sync request, live VirtualService patch, wait for the sync.

The Kubernetes client takes 0.4 s to import and configure, so ClusterSide starts that in the
background while git works; the cluster actions follow the push. The modules that talk to the API
are imported only here, inside the functions, so a Git-only step never loads them.
"""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rollguard.steps.gitops.object_refs import application_ref, virtual_service_ref
from rollguard.steps.traffic.weight_edit import SplitEdit

if TYPE_CHECKING:  # the Kubernetes client takes 0.4 s to import; only cluster actions load it
    from kubernetes.client import ApiClient

    from rollguard.steps.gitops.argocd import SyncRequest
    from rollguard.steps.gitops.kube_api import KubeApi

log = logging.getLogger("rollguard.steps")


@dataclass(frozen=True)
class ClusterSettings:
    """What the cluster side needs from the flags."""

    live_patch: bool
    argocd_app: str | None
    argocd_namespace: str
    argocd_timeout_s: float
    namespace: str | None  # of the live VirtualService; None: the file's metadata.namespace
    path: str  # the file in Git, for messages
    virtual_service: str
    stable_subset: str
    canary_subset: str
    routes: tuple[str, ...]  # --route names; empty: the rule finds the split
    istio_api_version: str
    kubeconfig: str | None
    kube_context: str | None
    kube_timeout_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClusterSettings:
        """The settings of a deploy, promote or rollback command line."""
        return cls(
            live_patch=args.live_patch,
            argocd_app=args.argocd_app,
            argocd_namespace=args.argocd_namespace,
            argocd_timeout_s=args.argocd_timeout,
            namespace=args.namespace,
            path=args.path,
            virtual_service=args.virtual_service,
            stable_subset=args.stable_subset,
            canary_subset=args.canary_subset,
            routes=tuple(args.route or ()),
            istio_api_version=args.istio_api_version,
            kubeconfig=args.kubeconfig,
            kube_context=args.kube_context,
            kube_timeout_s=args.kube_timeout,
        )

    @property
    def wanted(self) -> bool:
        """True if the step acts on the cluster at all."""
        return self.live_patch or bool(self.argocd_app)


@dataclass
class ClusterResult:
    """What the cluster actions did, for the result file, and the problems that make the step exit 4."""

    argocd: dict[str, Any] | None = None
    live_patch: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Connection:
    """A configured Kubernetes API client."""

    api_client: ApiClient
    api: KubeApi
    source: str  # where the configuration came from, for the log


@dataclass(frozen=True)
class GitOutcome:
    """What Git holds after the push, which the cluster is brought to: the revision and its split."""

    revision: str  # the commit pushed, or the head that already had the split
    pushed_now: bool  # this run pushed `revision`
    edit: SplitEdit
    action: str  # deploy, promote, rollback (the reason given to ArgoCD)

    @property
    def state(self) -> str:
        """`pushed 0123456789ab` or `Git already had it at 0123456789ab`: how every problem sentence starts."""
        return f"pushed {self.revision[:12]}" if self.pushed_now else f"Git already had it at {self.revision[:12]}"


class ClusterSide:
    """Connects to the Kubernetes API in the background, then brings ArgoCD and the live object to Git's split."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings
        self._connection: Future[_Connection] | None = None

    def start_connecting(self) -> None:
        """Import and configure the Kubernetes client in a background thread (while git works)."""
        if not self.settings.wanted or self._connection is not None:
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubernetes-client")
        self._connection = pool.submit(_connect, self.settings)
        pool.shutdown(wait=False)

    def configuration_problem(self) -> str | None:
        """Wait for the background set-up; why the Kubernetes configuration is unusable, or None if it is fine."""
        if self._connection is None:
            return None
        from rollguard.steps.gitops.kube_api import KubeConfigError

        try:
            self._connection.result()
        except KubeConfigError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        """Close the API client once it exists (now, or when the background thread finishes)."""
        if self._connection is not None:
            self._connection.add_done_callback(_close)

    def converge(self, target: GitOutcome) -> ClusterResult:
        """ArgoCD sync request, live patch (always converges), then wait for the sync.

        Asked even when this run pushed nothing: a retried step whose first attempt pushed and then
        failed to reach ArgoCD must still get its commit onto the cluster.
        """
        result = ClusterResult()
        if self._connection is None:
            return result
        from rollguard.steps.gitops.kube_api import KubeConfigError

        try:
            connection = self._connection.result()
        except KubeConfigError as exc:
            result.problems.append(f"{target.state}, but {exc}")
            return result
        log.debug("Kubernetes API %s (%s)", connection.api_client.configuration.host, connection.source)
        actions = _ClusterActions(self.settings, connection.api, target, result)
        # Ask ArgoCD for the refresh first: the sooner it knows the new commit, the shorter the window in
        # which its self-heal could still compare the patched live object with the old revision.
        request = actions.request_sync() if self.settings.argocd_app else None
        if self.settings.live_patch:
            actions.patch_live()
        if request is not None:
            actions.wait_for_sync(request)
        return result


def _connect(settings: ClusterSettings) -> _Connection:
    """Load the Kubernetes client configuration; raises KubeConfigError."""
    import rollguard.steps.gitops.argocd
    import rollguard.steps.gitops.live_patch  # noqa: F401 - loaded here so the main thread finds them imported
    from rollguard.steps.gitops.kube_api import KubeApi, load_api_client

    api_client, source = load_api_client(settings.kubeconfig, settings.kube_context)
    return _Connection(api_client, KubeApi(api_client, timeout_s=settings.kube_timeout_s), source)


def _close(connection: Future[_Connection]) -> None:
    if not connection.cancelled() and connection.exception() is None:
        connection.result().api_client.close()


@dataclass
class _ClusterActions:
    """One convergence: the API, the Git outcome to converge to, and the result being filled in."""

    settings: ClusterSettings
    api: KubeApi
    target: GitOutcome
    result: ClusterResult

    def request_sync(self) -> SyncRequest | None:
        """Ask ArgoCD to refresh and sync the revision; None (and a problem) if it could not be asked."""
        from rollguard.steps.gitops.argocd import ArgoCdError, request_sync
        from rollguard.steps.gitops.kube_api import KubeApiError

        ref = application_ref(self.settings.argocd_namespace, str(self.settings.argocd_app))
        try:
            return request_sync(self.api, ref, self.target.revision, reason=f"rollguard {self.target.action}",
                                pushed_now=self.target.pushed_now)
        except (ArgoCdError, KubeApiError) as exc:
            self.result.argocd = {"outcome": "failed", "detail": str(exc)}
            self.result.problems.append(f"{self.target.state}, but ArgoCD could not be asked to sync: {exc}")
            return None

    def patch_live(self) -> None:
        """Set the live VirtualService's weights to the split Git now holds."""
        from rollguard.steps.gitops.kube_api import KubeApiError
        from rollguard.steps.gitops.live_patch import LivePatchError, patch_live_split

        settings, edit = self.settings, self.target.edit
        namespace = settings.namespace or edit.namespace
        if not namespace:
            self.result.live_patch = {"outcome": "failed", "detail": "no namespace"}
            self.result.problems.append(
                f"{self.target.state}, but the live patch needs a namespace: pass --namespace (the VirtualService "
                f"in {settings.path} has no metadata.namespace)"
            )
            return
        ref = virtual_service_ref(namespace, settings.virtual_service, settings.istio_api_version)
        try:
            patched = patch_live_split(
                self.api, ref, settings.stable_subset, settings.canary_subset, edit.canary_weight,
                routes=settings.routes,
            )
        except (LivePatchError, KubeApiError) as exc:
            self.result.live_patch = {"outcome": "failed", "detail": str(exc)}
            self.result.problems.append(f"{self.target.state}, but the live patch failed: {exc}")
            return
        self.result.live_patch = {
            "outcome": patched.state.value,
            "namespace": namespace,
            "resource_version": patched.resource_version,
            "routes_changed": patched.routes_changed,
            "attempts": patched.attempts,
            "patched_at": patched.patched_at,
        }
        if patched.patched_at is None:
            log.info("live VirtualService %s/%s already has these weights; not patched", namespace,
                     settings.virtual_service)
            return
        log.info(
            "live VirtualService %s/%s patched to %s %d %% / %s %d %% (%d route(s); resourceVersion %s)",
            namespace, settings.virtual_service, settings.stable_subset, edit.stable_weight, settings.canary_subset,
            edit.canary_weight, patched.routes_changed, patched.resource_version,
        )  # fmt: skip

    def wait_for_sync(self, request: SyncRequest) -> None:
        """Wait (bounded by --argocd-timeout) until ArgoCD reports the revision synced."""
        from rollguard.steps.gitops.argocd import SyncState, wait_for_sync
        from rollguard.steps.gitops.kube_api import KubeApiError

        ref = application_ref(self.settings.argocd_namespace, str(self.settings.argocd_app))
        try:
            outcome = wait_for_sync(self.api, ref, request, timeout_s=self.settings.argocd_timeout_s)
        except KubeApiError as exc:
            self.result.argocd = {"outcome": "failed", "detail": str(exc)}
            self.result.problems.append(
                f"{self.target.state}, ArgoCD was asked to sync, but its progress could not be read: {exc}"
            )
            return
        self.result.argocd = {"outcome": outcome.state.value, "detail": outcome.detail,
                              "waited_s": round(outcome.waited_s, 3)}
        if outcome.state is SyncState.SYNCED:
            log.info("%s", outcome.detail)
        elif outcome.state is SyncState.SYNC_ALREADY_RUNNING:
            log.warning("%s", outcome.detail)
        else:
            self.result.problems.append(f"{self.target.state}, but {outcome.detail}")
