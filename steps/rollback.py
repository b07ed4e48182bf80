"""Send all traffic back to stable: canary weight 0, stable 100 in Git, then live patch and ArgoCD sync.

The commit message quotes why: the verdict's reason and evidence (metric, value, threshold) from
--reason-file (the analyze step's verdict.json) and/or --reason. The canary destination stays in the
route with weight 0. Running it again when Git already sends everything to stable does nothing and
exits 0 (with --live-patch it still makes sure the live VirtualService agrees). An unreadable reason
file does not stop a rollback: it is logged and named in the commit message.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from rollguard.steps import trailers
from rollguard.steps.logs import configure
from rollguard.steps.options import add_flag
from rollguard.steps.traffic.weight_edit import SplitEdit
from rollguard.steps.verdict_document import NO_VERDICT_WORD, NoVerdict, UnreadableVerdict, VerdictReading, read_file
from rollguard.steps.weight_change.change import WeightPlan
from rollguard.steps.weight_change.flags import add_change_arguments
from rollguard.steps.weight_change.flow import change_split

log = logging.getLogger("rollguard.steps")

# What an inconclusive verdict does: roll back (fail-safe), promote anyway, or stop (hold the split as it is).
INCONCLUSIVE_POLICIES = ("rollback", "promote", "stop")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard rollback`."""
    add_flag(parser, "--reason-file", help="verdict JSON of `rollguard analyze` to quote in the commit message")
    add_flag(parser, "--reason", help="why, in words (e.g. 'workflow failed mid-release'); added to the message")
    add_change_arguments(parser)


def _utc(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def evidence_lines(reading: VerdictReading) -> list[str]:
    """Lines of the commit message that quote the verdict: reason, failed check, times (or why there is none)."""
    if isinstance(reading, UnreadableVerdict):
        return [f"Verdict: unavailable ({reading.problem})"]
    if isinstance(reading, NoVerdict):
        return [f"Verdict: {NO_VERDICT_WORD}: {reading.reason or 'no reason given'}"]
    lines = [f"Verdict: {reading.verdict.value}: {reading.reason or 'no reason given'}"]
    check = reading.failed_check
    if check is not None:
        lines.append(f"Evidence: metric {check.metric}, value {check.value}, threshold {check.threshold}")
        if check.detail:
            lines.append(f"Detail: {check.detail}")
    started, decided = _utc(reading.started_at), _utc(reading.decided_at)
    if started or decided:
        lines.append(f"Analysis started {started or 'unknown'}, decided {decided or 'unknown'}.")
    return lines


def verdict_evidence(reading: VerdictReading | None, reason: str | None) -> trailers.Evidence:
    """The verdict behind a rollback, for its trailers (`Rollguard-Verdict`, `-Reason`, `-Metric`...)."""
    if isinstance(reading, UnreadableVerdict):
        return trailers.Evidence(verdict="unavailable", reason=reason or reading.problem)
    if isinstance(reading, NoVerdict):
        return trailers.Evidence(verdict=NO_VERDICT_WORD, reason=reading.reason or reason or "")
    if reading is None:
        return trailers.Evidence(reason=reason or "")
    check = reading.failed_check
    return trailers.Evidence(
        verdict=reading.verdict.value,
        reason=reading.reason,
        metric="" if check is None else check.metric,
        value=None if check is None else check.value,
        threshold=None if check is None else check.threshold,
        samples=None if check is None else check.samples,
        first_breach_at=reading.first_breach_time(),
    )


def rollback_message(args: argparse.Namespace, edit: SplitEdit, verdict_lines: list[str]) -> str:
    """Commit message of a rollback: what changed, the evidence for it, and the trailers `rollguard history` reads."""
    reason_file = getattr(args, "reason_file", None)
    reading = read_file(Path(reason_file)) if reason_file else None
    trailer_block = trailers.ReleaseTrailers(
        action="rollback",
        virtual_service=args.virtual_service,
        weights={args.stable_subset: edit.stable_weight, args.canary_subset: edit.canary_weight},
        previous_weights={args.stable_subset: edit.before_stable_weight, args.canary_subset: edit.before_canary_weight},
        evidence=verdict_evidence(reading, args.reason),
        workflow=trailers.workflow_name(),
    ).block()
    body = [*verdict_lines]
    if args.reason:
        body.insert(0, f"Reason: {args.reason}")
    if not body:
        body.append("Reason: not given (no --reason-file or --reason)")
    return (
        f"rollguard: roll back {args.virtual_service} to stable {args.stable_subset} "
        f"(canary {args.canary_subset} 0 %)\n\n"
        + "\n".join(body)
        + f"\n\nWeights: {args.stable_subset} {edit.before_stable_weight} -> 100 %, "
        f"{args.canary_subset} {edit.before_canary_weight} -> 0 % (VirtualService {args.virtual_service}, "
        f"{args.path}).\n\n" + trailer_block
    )


def run(args: argparse.Namespace) -> int:
    """Put canary at 0 %, stable at 100 %."""
    configure("rollback", verbose=args.verbose)
    return roll_back(args)


def roll_back(args: argparse.Namespace) -> int:
    """The rollback itself, with rollback's flags in `args`, logging as the step that calls it: `rollguard
    rollback`, the exit handler (finish) and analyze --rollback-on-fail run this one function. The exit code."""
    verdict_lines: list[str] = []
    if args.reason_file:
        reading = read_file(Path(args.reason_file))
        verdict_lines = evidence_lines(reading)
        if isinstance(reading, UnreadableVerdict):
            log.warning("%s; rolling back anyway", reading.problem)
        else:
            log.info("rolling back because: %s", verdict_lines[0])
    return change_split(
        args,
        "rollback",
        lambda _stable, _canary: WeightPlan(0, "already rolled back"),
        lambda edit: rollback_message(args, edit, verdict_lines),
        always_applies=True,
    )
