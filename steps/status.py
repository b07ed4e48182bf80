"""Print the traffic split that Git holds now (stable and canary weights of the VirtualService), in any layout.

Where the layout cannot say it alone (a JSON 6902 patch without its base, Helm values), it also says
what it verified and what it could not.

Read-only: clones the branch, reads the file, changes nothing. With --canary-weight-file the canary
weight is written as a bare integer (the `canary-analysis` workflow skips analysis when it is 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.git_workspace import BranchNotFound, FileNotInRepo, GitError, GitWorkspace, display_url
from rollguard.steps.logs import configure
from rollguard.steps.options import UsageError, add_flag, add_switch, check_output_files
from rollguard.steps.output_files import write_atomically
from rollguard.steps.traffic.kustomization import ReadFile
from rollguard.steps.traffic.layouts import MANIFEST, LocatedSplit, locate_split
from rollguard.steps.traffic.manifest_errors import ManifestError
from rollguard.steps.weight_change.flags import add_repository_arguments, credentials_from, split_source_from

log = logging.getLogger("rollguard.steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard status`."""
    add_repository_arguments(parser)
    add_flag(parser, "--canary-weight-file", help="write the canary weight here as a bare integer")
    add_flag(parser, "--result-file", help="write the split as JSON here")
    add_switch(parser, "--verbose", help="log debug lines too")


def _locate(args: argparse.Namespace, text: str, read: ReadFile) -> LocatedSplit:
    """The split in whatever layout the file is; UsageError naming the file when it cannot be read."""
    try:
        return locate_split(text, read, split_source_from(args))
    except ManifestError as exc:
        raise UsageError(f"{args.path} (branch {args.branch} of {display_url(args.repo)}): {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Print `stable v1 90 %, canary v2 10 %` for the VirtualService in Git."""
    configure("status", verbose=args.verbose)
    check_output_files(args, "canary_weight_file", "result_file")
    credentials = credentials_from(args)
    try:
        with GitWorkspace(args.repo, args.branch, credentials, timeout_s=args.git_timeout) as workspace:
            head = workspace.clone()
            text = workspace.read(args.path)
            split = _locate(args, text, workspace.read_optional)
    except (BranchNotFound, FileNotInRepo) as exc:
        raise UsageError(str(exc)) from None
    except GitError as exc:
        log.error("%s", exc)
        return ExitCode.ERROR
    try:
        stable, canary = split.agreed()
    except ManifestError as exc:
        raise UsageError(f"{args.path} (branch {args.branch} of {display_url(args.repo)}): {exc}") from None
    routes = split.routes
    layout = "" if split.layout == MANIFEST else f"{split.layout}, "
    print(
        f"{args.virtual_service}: stable {args.stable_subset} {stable} %, canary {args.canary_subset} {canary} % "
        f"({layout}{args.path} at {head[:12]} on {args.branch}, {routes} weighted route(s))"
    )
    if split.unverified:
        print(f"  verified: {'; '.join(split.verified)}")
        print(f"  not verified: {'; '.join(split.unverified)}")
    sys.stdout.flush()
    for warning in split.warnings:
        log.warning("%s", warning)
    if args.canary_weight_file:
        write_atomically(Path(args.canary_weight_file), str(canary))
    if args.result_file:
        result = {
            "action": "status",
            "repo": display_url(args.repo),
            "branch": args.branch,
            "path": args.path,
            "virtual_service": args.virtual_service,
            "head": head,
            "stable_weight": stable,
            "canary_weight": canary,
            "weighted_routes": routes,
            "layout": split.layout,
            "verified": list(split.verified),
            "not_verified": list(split.unverified),
        }
        write_atomically(Path(args.result_file), json.dumps(result, indent=2) + "\n")
    return ExitCode.OK
