"""Send all traffic back to stable: canary weight 0, stable 100 in Git, then live patch and ArgoCD sync.

The commit message quotes why: the verdict's reason and evidence (metric, value, threshold) from
--reason-file (the analyze step's verdict.json) and/or --reason. The canary destination stays in the
route with weight 0. Running it again when Git already sends everything to stable does nothing and
exits 0 (with --live-patch it still makes sure the live VirtualService agrees). An unreadable reason
file does not stop a rollback: it is logged and named in the commit message.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from rollguard.steps.logs import configure
from rollguard.steps.options import add_flag
from rollguard.steps.traffic.weight_edit import SplitEdit
from rollguard.steps.weight_change.change import WeightPlan
from rollguard.steps.weight_change.flags import add_change_arguments
from rollguard.steps.weight_change.flow import change_split

log = logging.getLogger("rollguard.steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard rollback`."""
    add_flag(parser, "--reason-file", help="verdict JSON of `rollguard analyze` to quote in the commit message")
    add_flag(parser, "--reason", help="why, in words (e.g. 'workflow failed mid-release'); added to the message")
    add_change_arguments(parser)


def _utc(stamp: Any) -> str | None:
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(stamp)))


def read_verdict(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """(verdict, problem): the parsed verdict file, or why it could not be used."""
    file = Path(path)
    if not file.is_file():
        return None, f"reason file {path} does not exist"
    try:
        verdict = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"reason file {path} is not JSON ({exc})"
    if not isinstance(verdict, dict):
        return None, f"reason file {path} holds {type(verdict).__name__}, not a verdict object"
    return verdict, None


def evidence_lines(verdict: dict[str, Any]) -> list[str]:
    """Lines of the commit message that quote the verdict: reason, failed check, times."""
    lines = [f"Verdict: {verdict.get('verdict', 'unknown')}: {verdict.get('reason') or 'no reason given'}"]
    check = verdict.get("failed_check")
    if isinstance(check, dict):
        lines.append(
            f"Evidence: metric {check.get('metric')}, value {check.get('value')}, threshold {check.get('threshold')}"
        )
        if check.get("detail"):
            lines.append(f"Detail: {check['detail']}")
    started, decided = _utc(verdict.get("started_at")), _utc(verdict.get("decided_at"))
    if started or decided:
        lines.append(f"Analysis started {started or 'unknown'}, decided {decided or 'unknown'}.")
    return lines


def rollback_message(args: argparse.Namespace, edit: SplitEdit, verdict_lines: list[str]) -> str:
    """Commit message of a rollback: what changed and the evidence for it."""
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
        f"{args.path}).\n\nRollguard-Action: rollback\n"
    )


def run(args: argparse.Namespace) -> int:
    """Put canary at 0 %, stable at 100 %."""
    configure("rollback", verbose=args.verbose)
    verdict_lines: list[str] = []
    if args.reason_file:
        verdict, problem = read_verdict(args.reason_file)
        if verdict is None:
            log.warning("%s; rolling back anyway", problem)
            verdict_lines.append(f"Verdict: unavailable ({problem})")
        else:
            verdict_lines = evidence_lines(verdict)
            log.info("rolling back because: %s", verdict_lines[0])
    return change_split(
        args,
        "rollback",
        lambda _stable, _canary: WeightPlan(0, "already rolled back"),
        lambda edit: rollback_message(args, edit, verdict_lines),
        always_applies=True,
    )
