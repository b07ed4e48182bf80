"""Flags of the GitOps commands: where the split lives (status shares these) and how a weight change is published."""

from __future__ import annotations

import argparse
from typing import Any

from rollguard.steps.gitops.credentials import GitCredentials, load_credentials, with_url_password
from rollguard.steps.gitops.git_workspace import DEFAULT_AUTHOR, parse_author
from rollguard.steps.gitops.kustomize_render import RENDER_CHECK_CHOICES
from rollguard.steps.gitops.object_refs import DEFAULT_ISTIO_API_VERSION
from rollguard.steps.options import add_flag, add_switch, non_negative_int, positive_duration
from rollguard.steps.traffic.layouts import SplitSource


def git_author(text: str) -> str:
    """argparse type: a Git author `Name <email>`."""
    try:
        parse_author(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def route_names(text: str) -> tuple[str, ...]:
    """argparse type: HTTP route names, comma-separated (`testers,primary`)."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty route name; write names like primary,mobile")
    return names


class _CollectRouteNames(argparse._StoreAction):
    """--route may be repeated: each use adds its names; the first use replaces ROLLGUARD_ROUTE's."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        current = getattr(namespace, self.dest, None)
        before = () if current is self.default else tuple(current or ())
        setattr(namespace, self.dest, before + tuple(values))


# The flags that say where the split is; a step that may not change it (analyze) takes them as optional.
LOCATION_FLAGS = ("--repo", "--path", "--virtual-service")


def add_repository_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Flags that say where the split lives: repository, branch, file, VirtualService, subsets, credentials.

    `required=False`: --repo, --path and --virtual-service are optional on the command line, and the step
    checks them itself when it needs them (analyze --rollback-on-fail)."""
    where = parser.add_argument_group("where the traffic split lives (Git)")
    add_flag(where, "--repo", required=required, help="Git repository with the manifests: URL or local path")
    add_flag(where, "--branch", default="main", help="branch ArgoCD follows")
    add_flag(where, "--path", required=required, help="file in the repository holding the VirtualService")
    add_flag(where, "--virtual-service", required=required, help="metadata.name of the VirtualService")
    add_flag(where, "--stable-subset", default="v1", help="DestinationRule subset of the stable version")
    add_flag(where, "--canary-subset", default="v2", help="DestinationRule subset of the canary version")
    add_flag(
        where,
        "--route",
        type=route_names,
        action=_CollectRouteNames,
        help="name of the HTTP route that is the split (repeatable, or comma-separated); without it, for HTTP, TCP "
        "and TLS routes alike: the default route when it holds both subsets, else the routes holding both when "
        "their weights agree",
    )
    layout = parser.add_argument_group(
        "other layouts (a Kustomize JSON 6902 patch is recognised by its content; a strategic-merge patch is a "
        "partial VirtualService)"
    )
    add_flag(layout, "--values-key", help="--path is a Helm values file: dotted key of the canary weight "
             "(reviews.canary.weight)")
    add_flag(layout, "--stable-values-key", help="with --values-key: dotted key of the stable weight, when the "
             "chart wants both")
    add_flag(layout, "--stable-weight-path", help="JSON 6902 patch whose base is not found through a "
             "kustomization beside it: JSON pointer of the stable weight (/spec/http/0/route/0/weight)")
    add_flag(layout, "--canary-weight-path", help="with --stable-weight-path: JSON pointer of the canary weight")
    auth = parser.add_argument_group("Git credentials (a token may also come from ROLLGUARD_GIT_TOKEN)")
    add_flag(auth, "--git-token-file", help="file holding an HTTPS access token (a mounted secret)")
    add_flag(auth, "--git-username", default="x-access-token", help="user name sent with the token over HTTPS")
    add_flag(auth, "--git-ssh-key-file", help="SSH private key file for ssh:// or git@ repositories")
    add_flag(auth, "--git-known-hosts-file", help="known_hosts for SSH (default: accept a new host key once)")
    add_flag(auth, "--git-timeout", default="60s", type=positive_duration, help="time limit of each git command")


def add_change_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the steps that change the split: commit, push, ArgoCD, live patch, outputs."""
    add_repository_arguments(parser)
    add_publish_arguments(parser)
    add_cluster_arguments(parser)
    out = parser.add_argument_group("outputs")
    add_flag(out, "--result-file", help="write the outcome as JSON here")
    add_flag(out, "--commit-file", help="write the pushed commit SHA here (empty if nothing was pushed)")
    add_switch(out, "--verbose", help="log debug lines too")


def add_publish_arguments(parser: argparse.ArgumentParser, *, dry_run: bool = True) -> None:
    """How the change is committed and pushed; `dry_run=False` leaves out --dry-run (analyze's rollback)."""
    git = parser.add_argument_group("commit and push")
    add_flag(git, "--git-author", default=DEFAULT_AUTHOR, type=git_author, help="author of the commit")
    add_flag(git, "--push-retries", default=5, type=non_negative_int, help="re-applied pushes after a push race")
    if dry_run:
        add_switch(git, "--dry-run", help="print the diff of the file and change nothing")
    add_flag(
        git, "--render-check", default="auto", choices=RENDER_CHECK_CHOICES,
        help="render the Kustomize overlay of a patch after the edit (kustomize or kubectl) and refuse to push "
        "other weights than intended; auto: skipped, and said so, when no tool is here",
    )  # fmt: skip


def add_cluster_arguments(parser: argparse.ArgumentParser, *, live_namespace: bool = True) -> None:
    """ArgoCD sync and live patch. `live_namespace=False` leaves out --namespace, for a command whose own
    --namespace (analyze's: the workloads') is also the live VirtualService's."""
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
    if live_namespace:
        add_flag(
            cluster, "--namespace",
            help="namespace of the live VirtualService (default: metadata.namespace in the file)",
        )  # fmt: skip
    add_flag(
        cluster,
        "--istio-api-version",
        default=DEFAULT_ISTIO_API_VERSION,
        help="networking.istio.io version for the live patch",
    )
    add_flag(cluster, "--kubeconfig", help="kubeconfig file (default: KUBECONFIG, in-cluster, ~/.kube/config)")
    add_flag(cluster, "--kube-context", help="kubeconfig context")
    add_flag(cluster, "--kube-timeout", default="10s", type=positive_duration, help="time limit of each API call")


def credentials_from(args: argparse.Namespace) -> GitCredentials:
    """GitCredentials from the flags, the environment and a user:password in --repo (UsageError on a conflict)."""
    credentials = load_credentials(
        args.git_token_file, args.git_ssh_key_file, args.git_username, args.git_known_hosts_file
    )
    return with_url_password(credentials, args.repo)


def split_source_from(args: argparse.Namespace) -> SplitSource:
    """Where the split lives, as the traffic layouts take it."""
    return SplitSource(
        path=args.path,
        virtual_service=args.virtual_service,
        stable_subset=args.stable_subset,
        canary_subset=args.canary_subset,
        routes=tuple(args.route or ()),
        values_key=args.values_key or None,
        stable_values_key=args.stable_values_key or None,
        stable_weight_path=args.stable_weight_path or None,
        canary_weight_path=args.canary_weight_path or None,
    )
