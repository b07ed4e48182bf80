"""Send N % of traffic to the canary: set the weights in the Git-tracked VirtualService, push, then sync.

Only the weights of the routes that split between the two subsets change; the commit says why.
With --argocd-app ArgoCD is asked to sync right away; with --live-patch the live VirtualService is
patched too. Exit 0 when done or when Git already has this split, 2 on bad input, 4 on a run-time fault.
"""

from __future__ import annotations

import argparse

from rollguard.steps import trailers
from rollguard.steps.logs import configure
from rollguard.steps.options import add_flag, percent_weight
from rollguard.steps.traffic.weight_edit import SplitEdit
from rollguard.steps.weight_change.change import WeightPlan
from rollguard.steps.weight_change.flags import add_change_arguments
from rollguard.steps.weight_change.flow import change_split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard deploy`."""
    add_flag(
        parser, "--weight", required=True, type=percent_weight, help="canary weight in percent (stable gets the rest)"
    )
    add_change_arguments(parser)


def deploy_message(args: argparse.Namespace, edit: SplitEdit) -> str:
    """Commit message of a deploy: what moved and why, and the trailers `rollguard history` reads."""
    trailer_block = trailers.ReleaseTrailers(
        action="deploy",
        virtual_service=args.virtual_service,
        weights={args.stable_subset: edit.stable_weight, args.canary_subset: edit.canary_weight},
        previous_weights={args.stable_subset: edit.before_stable_weight, args.canary_subset: edit.before_canary_weight},
        workflow=trailers.workflow_name(),
    ).block()
    return (
        f"rollguard: shift {edit.canary_weight} % of {args.virtual_service} traffic to canary {args.canary_subset}\n\n"
        f"Canary release step: {args.stable_subset} {edit.before_stable_weight} -> {edit.stable_weight} %, "
        f"{args.canary_subset} {edit.before_canary_weight} -> {edit.canary_weight} % "
        f"(VirtualService {args.virtual_service}, {args.path}, {edit.routes_changed} weighted route(s)).\n\n"
        + trailer_block
    )


def run(args: argparse.Namespace) -> int:
    """Set canary --weight, stable 100 minus it."""
    configure("deploy", verbose=args.verbose)
    return change_split(
        args,
        "deploy",
        lambda _stable, _canary: WeightPlan(args.weight, f"canary already at {args.weight} %"),
        lambda edit: deploy_message(args, edit),
    )
