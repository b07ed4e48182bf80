"""Print the traffic split that Git holds now (stable and canary weights of the VirtualService).

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
from rollguard.steps.traffic.manifest_errors import ManifestError
from rollguard.steps.traffic.virtualservice import agreed_weights, find_split
from rollguard.steps.weight_change.flags import add_repository_arguments, credentials_from

log = logging.getLogger("rollguard.steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard status`."""
    add_repository_arguments(parser)
    add_flag(parser, "--canary-weight-file", help="write the canary weight here as a bare integer")
    add_flag(parser, "--result-file", help="write the split as JSON here")
    add_switch(parser, "--verbose", help="log debug lines too")


def run(args: argparse.Namespace) -> int:
    """Print `stable v1 90 %, canary v2 10 %` for the VirtualService in Git."""
    configure("status", verbose=args.verbose)
    check_output_files(args, "canary_weight_file", "result_file")
    credentials = credentials_from(args)
    try:
        with GitWorkspace(args.repo, args.branch, credentials, timeout_s=args.git_timeout) as workspace:
            head = workspace.clone()
            text = workspace.read(args.path)
    except (BranchNotFound, FileNotInRepo) as exc:
        raise UsageError(str(exc)) from None
    except GitError as exc:
        log.error("%s", exc)
        return ExitCode.ERROR
    try:
        split = find_split(text, args.virtual_service, args.stable_subset, args.canary_subset, tuple(args.route or ()))
        stable, canary = agreed_weights(split, args.virtual_service)
        routes = len(split.routes)
    except ManifestError as exc:
        raise UsageError(f"{args.path} (branch {args.branch} of {display_url(args.repo)}): {exc}") from None
    print(
        f"{args.virtual_service}: stable {args.stable_subset} {stable} %, canary {args.canary_subset} {canary} % "
        f"({args.path} at {head[:12]} on {args.branch}, {routes} weighted route(s))"
    )
    sys.stdout.flush()
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
        }
        write_atomically(Path(args.result_file), json.dumps(result, indent=2) + "\n")
    return ExitCode.OK
