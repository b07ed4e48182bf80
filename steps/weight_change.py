"""What deploy, promote and rollback share: their flags, and the flow Git push -> live patch -> ArgoCD sync.

A step decides the new canary weight from the split Git holds and writes the commit message; this
module clones, edits (only the weights), commits, pushes (re-applying on races), then optionally
patches the live VirtualService and asks ArgoCD to sync, and reports the outcome as log lines, exit
code, --result-file and --commit-file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.credentials import GitCredentials, load_credentials
from rollguard.steps.gitops.git_repo import (
    DEFAULT_AUTHOR,
    BranchNotFound,
    FileNotInRepo,
    GitError,
    PublishOutcome,
    PublishState,
    display_url,
    parse_author,
    publish_change,
)
from rollguard.steps.options import (
    UsageError,
    add_flag,
    add_switch,
    check_output_files,
    non_negative_int,
    positive_duration,
)
from rollguard.steps.traffic.manifest_errors import ManifestError
from rollguard.steps.traffic.virtualservice import find_split
from rollguard.steps.traffic.weight_edit import SplitEdit, set_split, unified_diff

if TYPE_CHECKING:  # the Kubernetes client takes 0.4 s to import; only cluster actions load it
    from kubernetes.client import ApiClient

    from rollguard.steps.gitops.argocd import SyncRequest
    from rollguard.steps.gitops.kube_api import KubeApi

log = logging.getLogger("rollguard.steps")


def git_author(text: str) -> str:
    """argparse type: a Git author `Name <email>`."""
    try:
        parse_author(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_repository_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that say where the split lives: repository, branch, file, VirtualService, subsets, credentials."""
    where = parser.add_argument_group("where the traffic split lives (Git)")
    add_flag(where, "--repo", required=True, help="Git repository with the manifests: URL or local path")
    add_flag(where, "--branch", default="main", help="branch ArgoCD follows")
    add_flag(where, "--path", required=True, help="file in the repository holding the VirtualService")
    add_flag(where, "--virtual-service", required=True, help="metadata.name of the VirtualService")
    add_flag(where, "--stable-subset", default="v1", help="DestinationRule subset of the stable version")
    add_flag(where, "--canary-subset", default="v2", help="DestinationRule subset of the canary version")
    auth = parser.add_argument_group("Git credentials (a token may also come from ROLLGUARD_GIT_TOKEN)")
    add_flag(auth, "--git-token-file", help="file holding an HTTPS access token (a mounted secret)")
    add_flag(auth, "--git-username", default="x-access-token", help="user name sent with the token over HTTPS")
    add_flag(auth, "--git-ssh-key-file", help="SSH private key file for ssh:// or git@ repositories")
    add_flag(auth, "--git-known-hosts-file", help="known_hosts for SSH (default: accept a new host key once)")
    add_flag(auth, "--git-timeout", default="60s", type=positive_duration, help="time limit of each git command")


def add_change_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the steps that change the split: commit, push, ArgoCD, live patch, outputs."""
    add_repository_arguments(parser)
    git = parser.add_argument_group("commit and push")
    add_flag(git, "--git-author", default=DEFAULT_AUTHOR, type=git_author, help="author of the commit")
    add_flag(git, "--push-retries", default=5, type=non_negative_int, help="re-applied pushes after a push race")
    add_switch(git, "--dry-run", help="print the diff of the file and change nothing")
    cluster = parser.add_argument_group("cluster (optional; Kubernetes API)")
    add_flag(
        cluster,
        "--argocd-app",
        help="ArgoCD Application to refresh and sync right after the push (if a sync is already running, "
        "as when this runs as its PostSync hook, only a refresh is asked for and nothing is awaited)",
    )
    add_flag(cluster, "--argocd-namespace", default="argocd", help="namespace of the ArgoCD Application")
    add_flag(cluster, "--argocd-timeout", default="60s", type=positive_duration, help="how long to wait for the sync")
    add_switch(cluster, "--live-patch", help="after the push, also patch the live VirtualService's weights")
    add_flag(
        cluster, "--namespace", help="namespace of the live VirtualService (default: metadata.namespace in the file)"
    )
    add_flag(cluster, "--istio-api-version", default="v1beta1", help="networking.istio.io version for the live patch")
    add_flag(cluster, "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)")
    add_flag(cluster, "--kube-context", help="kubeconfig context")
    add_flag(cluster, "--kube-timeout", default="10s", type=positive_duration, help="time limit of each API call")
    out = parser.add_argument_group("outputs")
    add_flag(out, "--result-file", help="write the outcome as JSON here")
    add_flag(out, "--commit-file", help="write the pushed commit SHA here (empty if nothing was pushed)")
    add_switch(out, "--verbose", help="log debug lines too")


@dataclass(frozen=True)
class WeightPlan:
    """What a step wants: a canary weight, given the split Git holds now."""

    canary_weight: int
    action: str  # deploy, promote, rollback
    already: str  # log line when Git already says this ("already all on stable")


@dataclass
class StepReport:
    """Everything the step reports, written to --result-file."""

    action: str
    repo: str
    branch: str
    path: str
    virtual_service: str
    changed: bool = False
    dry_run: bool = False
    commit: str | None = None
    head: str | None = None
    pushed_at: float | None = None
    push_attempts: int = 0
    stable_weight: int | None = None
    canary_weight: int | None = None
    previous_stable_weight: int | None = None
    previous_canary_weight: int | None = None
    started_at: float = field(default_factory=time.time)
    argocd: dict[str, Any] | None = None
    live_patch: dict[str, Any] | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def credentials_from(args: argparse.Namespace) -> GitCredentials:
    """GitCredentials from the flags and the environment."""
    return load_credentials(args.git_token_file, args.git_ssh_key_file, args.git_username, args.git_known_hosts_file)


def change_split(
    args: argparse.Namespace,
    action: str,
    plan: Callable[[int, int], WeightPlan],
    message: Callable[[SplitEdit, WeightPlan], str],
) -> int:
    """Run one weight change end to end; return the exit code.

    `plan(stable, canary)` gets the split Git holds (on every push attempt: a race may have moved it)
    and returns the wanted canary weight; it may raise UsageError. `message` writes the commit message.
    """
    report = StepReport(
        action=action,
        repo=display_url(args.repo),
        branch=args.branch,
        path=args.path,
        virtual_service=args.virtual_service,
        dry_run=args.dry_run,
    )
    check_output_files(args, "result_file", "commit_file")  # before the push, not after it
    credentials = credentials_from(args)
    connection: Future[KubeConnection] | None = None
    if (args.live_patch or args.argocd_app) and not args.dry_run:
        # Import and configure the Kubernetes client (0.4 s) while git works: the live patch follows the push.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubernetes-client")
        connection = pool.submit(_connect_kubernetes, args)
        pool.shutdown(wait=False)
    try:
        return _change_split(args, action, plan, message, report, credentials, connection)
    finally:
        if connection is not None:
            connection.add_done_callback(_close_connection)


def _change_split(
    args: argparse.Namespace,
    action: str,
    plan: Callable[[int, int], WeightPlan],
    message: Callable[[SplitEdit, WeightPlan], str],
    report: StepReport,
    credentials: GitCredentials,
    connection: Future[KubeConnection] | None,
) -> int:
    plans: list[WeightPlan] = []

    def make_change(text: str) -> SplitEdit:
        current = find_split(text, args.virtual_service, args.stable_subset, args.canary_subset)
        wanted = plan(current.stable_weight, current.canary_weight)
        plans.append(wanted)
        return set_split(text, args.virtual_service, args.stable_subset, args.canary_subset, wanted.canary_weight)

    log.info(
        "%s: %s of %s (branch %s), VirtualService %s, subsets %s/%s, credentials: %s",
        action,
        args.path,
        report.repo,
        args.branch,
        args.virtual_service,
        args.stable_subset,
        args.canary_subset,
        credentials.kind,
    )
    try:
        outcome = publish_change(
            repo=args.repo,
            branch=args.branch,
            path=args.path,
            make_change=make_change,
            message=lambda edit: message(edit, plans[-1]),
            author=args.git_author,
            credentials=credentials,
            push_retries=args.push_retries,
            timeout_s=args.git_timeout,
            dry_run=args.dry_run,
        )
    except ManifestError as exc:
        where = f"{args.path} (branch {args.branch} of {report.repo})"
        raise _usage(args, report, f"{where}: {exc}. Nothing was changed") from None
    except (BranchNotFound, FileNotInRepo) as exc:
        raise _usage(args, report, str(exc)) from None
    except UsageError as exc:  # the step's plan refused the move (e.g. promote backwards)
        raise _usage(args, report, str(exc)) from None
    except GitError as exc:
        return _fail(args, report, f"{exc}")
    _record_publish(report, outcome)
    for warning in outcome.change.warnings:
        log.warning("%s", warning)
    edit, wanted = outcome.change, plans[-1]
    weights = f"{args.stable_subset} {edit.stable_weight} %, {args.canary_subset} {edit.canary_weight} %"
    if outcome.state is PublishState.DRY_RUN:
        diff = unified_diff(outcome.old_text, edit.text, args.path)
        sys.stdout.write(diff if diff else f"# no change: {args.path} already has {weights}\n")
        log.info("dry run: nothing committed, pushed or patched (would set %s)", weights)
        _write_outputs(args, report)
        return ExitCode.OK
    if outcome.state is PublishState.UNCHANGED:
        log.info("%s: Git already has %s; nothing to commit", wanted.already, weights)
    else:
        log.info(
            "pushed %s to %s: %s (was %s %d %%, %s %d %%)%s",
            (outcome.commit or "")[:12],
            args.branch,
            weights,
            args.stable_subset,
            edit.before_stable_weight,
            args.canary_subset,
            edit.before_canary_weight,
            f" after {outcome.attempts - 1} push race(s)" if outcome.attempts > 1 else "",
        )
    problems = _act_on_cluster(args, report, outcome, connection)
    if problems:
        return _fail(args, report, "; ".join(problems))
    _write_outputs(args, report)
    return ExitCode.OK


@dataclass(frozen=True)
class KubeConnection:
    """A configured Kubernetes API client, made in the background while git works."""

    api_client: ApiClient
    api: KubeApi
    source: str  # where the configuration came from, for the log


def _connect_kubernetes(args: argparse.Namespace) -> KubeConnection:
    """Load the Kubernetes client configuration; raises KubeConfigError."""
    import rollguard.steps.gitops.argocd
    import rollguard.steps.gitops.live_patch  # noqa: F401 - loaded here so the main thread finds them imported
    from rollguard.steps.gitops.kube_api import KubeApi, load_api_client

    api_client, source = load_api_client(args.kubeconfig, args.kube_context)
    return KubeConnection(api_client, KubeApi(api_client, timeout_s=args.kube_timeout), source)


def _close_connection(connection: Future[KubeConnection]) -> None:
    if not connection.cancelled() and connection.exception() is None:
        connection.result().api_client.close()


def _record_publish(report: StepReport, outcome: PublishOutcome[SplitEdit]) -> None:
    edit = outcome.change
    report.changed = outcome.state is PublishState.PUSHED or (outcome.state is PublishState.DRY_RUN and edit.changed)
    report.commit = outcome.commit
    report.head = outcome.head
    report.pushed_at = outcome.pushed_at
    report.push_attempts = outcome.attempts
    report.stable_weight = edit.stable_weight
    report.canary_weight = edit.canary_weight
    report.previous_stable_weight = edit.before_stable_weight
    report.previous_canary_weight = edit.before_canary_weight
    report.warnings = list(edit.warnings)


def _act_on_cluster(
    args: argparse.Namespace,
    report: StepReport,
    outcome: PublishOutcome[SplitEdit],
    connection: Future[KubeConnection] | None,
) -> list[str]:
    """ArgoCD sync request, live patch (always converges), then wait for the sync.

    The sync is asked for even when this run pushed nothing: a retried step whose first attempt pushed
    and then failed to reach ArgoCD must still get its commit onto the cluster.
    """
    problems: list[str] = []
    wants_argocd = bool(args.argocd_app)
    if not (args.live_patch or wants_argocd) or connection is None:
        if args.argocd_app:
            report.argocd = {"outcome": "skipped", "detail": "nothing was pushed, so there is nothing to sync"}
        return problems
    from rollguard.steps.gitops.kube_api import KubeConfigError

    pushed = f"pushed {outcome.commit[:12]}" if outcome.commit else f"Git already had it at {outcome.head[:12]}"
    try:
        connected = connection.result()
    except KubeConfigError as exc:
        return [f"{pushed}, but {exc}"]
    log.debug("Kubernetes API %s (%s)", connected.api_client.configuration.host, connected.source)
    api = connected.api
    # Ask ArgoCD for the refresh first: the sooner it knows the new commit, the shorter the window in
    # which its self-heal could still compare the patched live object with the old revision.
    request: SyncRequest | None = None
    if wants_argocd:
        request, problems = _argocd_request(args, report, outcome, api, pushed)
    if args.live_patch:
        problems += _live_patch(args, report, outcome, api, pushed)
    if request is not None:
        problems += _argocd_wait(args, report, request, api, pushed)
    return problems


def _live_patch(
    args: argparse.Namespace, report: StepReport, outcome: PublishOutcome[SplitEdit], api: KubeApi, pushed: str
) -> list[str]:
    from rollguard.steps.gitops.kube_api import KubeApiError
    from rollguard.steps.gitops.live_patch import LivePatchError, patch_live_split, virtual_service_ref

    namespace = args.namespace or outcome.change.namespace
    if not namespace:
        report.live_patch = {"outcome": "failed", "detail": "no namespace"}
        return [
            f"{pushed}, but the live patch needs a namespace: pass --namespace (the VirtualService in "
            f"{args.path} has no metadata.namespace)"
        ]
    ref = virtual_service_ref(namespace, args.virtual_service, args.istio_api_version)
    try:
        result = patch_live_split(api, ref, args.stable_subset, args.canary_subset, outcome.change.canary_weight)
    except (LivePatchError, KubeApiError) as exc:
        report.live_patch = {"outcome": "failed", "detail": str(exc)}
        return [f"{pushed}, but the live patch failed: {exc}"]
    report.live_patch = {
        "outcome": result.state.value,
        "namespace": namespace,
        "resource_version": result.resource_version,
        "routes_changed": result.routes_changed,
        "attempts": result.attempts,
        "patched_at": result.patched_at,
    }
    if result.patched_at is not None:
        log.info(
            "live VirtualService %s/%s patched to %s %d %% / %s %d %% (%d route(s); resourceVersion %s)",
            namespace,
            args.virtual_service,
            args.stable_subset,
            outcome.change.stable_weight,
            args.canary_subset,
            outcome.change.canary_weight,
            result.routes_changed,
            result.resource_version,
        )
    else:
        log.info("live VirtualService %s/%s already has these weights; not patched", namespace, args.virtual_service)
    return []


def _argocd_request(
    args: argparse.Namespace, report: StepReport, outcome: PublishOutcome[SplitEdit], api: KubeApi, pushed: str
) -> tuple[SyncRequest | None, list[str]]:
    from rollguard.steps.gitops.argocd import ArgoCdError, application_ref, request_sync
    from rollguard.steps.gitops.kube_api import KubeApiError

    ref = application_ref(args.argocd_namespace, args.argocd_app)
    try:
        revision = outcome.commit or outcome.head
        return request_sync(api, ref, revision, reason=f"rollguard {report.action}",
                            pushed_now=outcome.state is PublishState.PUSHED), []
    except (ArgoCdError, KubeApiError) as exc:
        report.argocd = {"outcome": "failed", "detail": str(exc)}
        return None, [f"{pushed}, but ArgoCD could not be asked to sync: {exc}"]


def _argocd_wait(
    args: argparse.Namespace, report: StepReport, request: SyncRequest, api: KubeApi, pushed: str
) -> list[str]:
    from rollguard.steps.gitops.argocd import SyncState, application_ref, wait_for_sync
    from rollguard.steps.gitops.kube_api import KubeApiError

    ref = application_ref(args.argocd_namespace, args.argocd_app)
    try:
        result = wait_for_sync(api, ref, request, timeout_s=args.argocd_timeout)
    except KubeApiError as exc:
        report.argocd = {"outcome": "failed", "detail": str(exc)}
        return [f"{pushed}, ArgoCD was asked to sync, but its progress could not be read: {exc}"]
    report.argocd = {"outcome": result.state.value, "detail": result.detail, "waited_s": round(result.waited_s, 3)}
    if result.state is SyncState.SYNCED:
        log.info("%s", result.detail)
        return []
    if result.state is SyncState.SYNC_ALREADY_RUNNING:
        log.warning("%s", result.detail)
        return []
    return [f"{pushed}, but {result.detail}"]


def _usage(args: argparse.Namespace, report: StepReport, problem: str) -> UsageError:
    """The UsageError to raise, after recording it in the result file (nothing was changed)."""
    report.error = problem
    _write_outputs(args, report)
    return UsageError(problem)


def _fail(args: argparse.Namespace, report: StepReport, problem: str) -> int:
    report.error = problem
    log.error("%s", problem)
    _write_outputs(args, report)
    return ExitCode.ERROR


def _write_outputs(args: argparse.Namespace, report: StepReport) -> None:
    if args.result_file:
        Path(args.result_file).write_text(json.dumps(report.__dict__, indent=2) + "\n", encoding="utf-8")
    if args.commit_file:
        Path(args.commit_file).write_text(report.commit or "", encoding="utf-8")
