"""Move the canary to the next weight of a progressive rollout (e.g. 10 -> 50 -> 100) in Git, then sync.

`--weight 100` completes the rollout. In the two-subset layout (a DestinationRule with subsets
stable `v1` and canary `v2`) "the canary becomes stable" means: the canary subset now receives 100 %
and the stable subset 0 %; both destinations stay in the route. From then on the canary subset IS
the stable version: the next release passes it as --stable-subset (`--stable-subset v2
--canary-subset v3`), or the team rolls the stable Deployment to the new image and runs
`rollguard deploy --weight 0` to hand traffic back to the stable subset. rollguard only moves
weights; it never edits Deployments or renames subsets.

Promote only moves forward: a weight below the current canary weight is refused (use deploy or
rollback), and so is promoting a canary that has 0 % (there is no rollout in progress).
"""

from __future__ import annotations

import argparse

from rollguard.steps import trailers
from rollguard.steps.logs import configure
from rollguard.steps.options import UsageError, add_flag, percent_weight
from rollguard.steps.traffic.weight_edit import SplitEdit
from rollguard.steps.weight_change.change import WeightPlan
from rollguard.steps.weight_change.flags import add_change_arguments
from rollguard.steps.weight_change.flow import change_split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard promote`."""
    add_flag(parser, "--weight", required=True, type=percent_weight, help="next canary weight; 100 completes it")
    add_change_arguments(parser)


def plan_promotion(args: argparse.Namespace, stable: int, canary: int) -> WeightPlan:
    """Check that --weight moves the rollout forward from the split Git holds."""
    if canary == 0 and args.weight > 0:
        raise UsageError(
            f"nothing to promote: canary {args.canary_subset} has 0 % in Git ({args.stable_subset} {stable} %); "
            "start a release with `rollguard deploy --weight N`"
        )
    if args.weight < canary:
        raise UsageError(
            f"--weight {args.weight} would move canary {args.canary_subset} back from {canary} %; promote only "
            "moves forward (use `rollguard rollback` or `rollguard deploy --weight N`)"
        )
    return WeightPlan(args.weight, f"canary already at {args.weight} %")


def promote_message(args: argparse.Namespace, edit: SplitEdit) -> str:
    """Commit message of a promotion, with the trailers `rollguard history` reads (the verdict behind it
    when the workflow passed one in ROLLGUARD_VERDICT_JSON)."""
    evidence = trailers.evidence_from_environment()
    trailer_block = trailers.ReleaseTrailers(
        action="promote",
        virtual_service=args.virtual_service,
        weights={args.stable_subset: edit.stable_weight, args.canary_subset: edit.canary_weight},
        previous_weights={args.stable_subset: edit.before_stable_weight, args.canary_subset: edit.before_canary_weight},
        evidence=evidence,
        workflow=trailers.workflow_name(),
    ).block()
    analysis = "Analysis passed" if evidence.verdict in ("", "pass") else f"Analysis {evidence.verdict}"
    if edit.canary_weight == 100:
        title = f"rollguard: complete rollout of {args.virtual_service}: canary {args.canary_subset} takes 100 %"
        note = (
            f"The canary subset {args.canary_subset} is now the stable version; the next release uses it as "
            "--stable-subset.\n\n"
        )
    else:
        title = f"rollguard: promote canary {args.canary_subset} of {args.virtual_service} to {edit.canary_weight} %"
        note = ""
    return (
        f"{title}\n\n{analysis}; next rollout step: {args.stable_subset} {edit.before_stable_weight} -> "
        f"{edit.stable_weight} %, {args.canary_subset} {edit.before_canary_weight} -> {edit.canary_weight} % "
        f"(VirtualService {args.virtual_service}, {args.path}).\n\n{note}" + trailer_block
    )


def run(args: argparse.Namespace) -> int:
    """Move the canary forward to --weight."""
    configure("promote", verbose=args.verbose)
    return change_split(
        args,
        "promote",
        lambda stable, canary: plan_promotion(args, stable, canary),
        lambda edit: promote_message(args, edit),
    )
