"""Roll the canary back from the analyze step itself, the moment its verdict calls for it (--rollback-on-fail).

The rollback is `rollguard rollback`'s own code (rollguard.steps.rollback.roll_back) with the verdict file
as its reason: the same commit message and trailers, push races re-applied, idempotence, ArgoCD sync and
live patch. Its flags are checked before the first query. A rollback that fails loses no verdict: it is
logged, recorded (rolled back: false) and the step still exits with the verdict's code, so the workflow's
rollback step (the safety net) tries again.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.git_workspace import display_url
from rollguard.steps.judgment.outcomes import Verdict
from rollguard.steps.options import UsageError, check_output_files
from rollguard.steps.output_files import write_atomically
from rollguard.steps.rollback import roll_back
from rollguard.steps.verdict_document import VerdictDocument
from rollguard.steps.weight_change.flags import LOCATION_FLAGS, credentials_from

log = logging.getLogger("rollguard.analyze")


@dataclass(frozen=True)
class RollbackPlan:
    """What analyze was told to do after its verdict: the rollback's flags (None without --rollback-on-fail),
    the inconclusive policy, and where to say whether it rolled back."""

    rollback_args: argparse.Namespace | None
    on_inconclusive: str
    rolled_back_file: Path | None

    def wanted(self, verdict: Verdict) -> bool:
        """True when this verdict rolls the canary back here: a fail, or an inconclusive under policy rollback."""
        if self.rollback_args is None:
            return False
        return verdict is Verdict.FAIL or (verdict is Verdict.INCONCLUSIVE and self.on_inconclusive == "rollback")

    def log_start(self) -> None:
        """One line at the start, with --rollback-on-fail: what a fail (or inconclusive) verdict will do."""
        args = self.rollback_args
        if args is None:
            return
        inconclusive = " (and inconclusive, policy rollback)" if self.on_inconclusive == "rollback" else ""
        cluster = [*([f"ArgoCD sync of {args.argocd_app}"] if args.argocd_app else []),
                   *(["live patch"] if args.live_patch else [])]
        log.info("a fail verdict%s is rolled back by this step: VirtualService %s in %s (branch %s of %s)%s",
                 inconclusive, args.virtual_service, args.path, args.branch, display_url(args.repo),
                 ", then " + " and ".join(cluster) if cluster else "")


def plan_from_args(args: argparse.Namespace, verdict_file: Path) -> RollbackPlan:
    """Check, before any query, what the rollback will need (UsageError naming the flag and the fix): where
    the split lives, the Git credentials, the output files. Nothing is cloned or changed here."""
    check_output_files(args, "rolled_back_file", "rollback_result_file")
    rolled_back_file = Path(args.rolled_back_file) if args.rolled_back_file else None
    if not args.rollback_on_fail:
        return RollbackPlan(None, args.on_inconclusive, rolled_back_file)
    missing = [flag for flag in LOCATION_FLAGS if not str(getattr(args, flag[2:].replace("-", "_")) or "").strip()]
    if missing:
        raise UsageError(f"--rollback-on-fail needs {', '.join(missing)}: where the traffic split lives in Git, as "
                         "for `rollguard rollback`. Give them, or leave --rollback-on-fail off (then a rollback step "
                         "must act on the verdict)")
    rollback_args = argparse.Namespace(**{
        **vars(args),
        "reason_file": str(verdict_file),  # the verdict, quoted as the commit's evidence
        "reason": None,
        "dry_run": False,
        "verbose": False,
        "result_file": args.rollback_result_file,
        "commit_file": None,
    })
    credentials_from(rollback_args)  # a token file that is missing or empty, a token given twice
    return RollbackPlan(rollback_args, args.on_inconclusive, rolled_back_file)


def act_on_verdict(plan: RollbackPlan, document: VerdictDocument) -> bool:
    """Roll back when the verdict calls for it (after its files are written: the commit quotes them), then
    write --rolled-back-file. True when the canary is rolled back by this step."""
    if not plan.wanted(document.verdict):
        record(plan, rolled_back=False)
        return False
    rolled_back = _roll_back(plan, document)
    record(plan, rolled_back, rollback_ran=True)
    return rolled_back


def record(plan: RollbackPlan, rolled_back: bool, *, rollback_ran: bool = False) -> None:
    """Write `true` or `false` to --rolled-back-file, if given; without a rollback, --rollback-result-file is
    left absent (an earlier run's file at that path is removed). A failure is logged, never raised."""
    result_file = plan.rollback_args.result_file if plan.rollback_args is not None else None
    if result_file and not rollback_ran:
        try:
            Path(result_file).unlink(missing_ok=True)
        except OSError as exc:
            log.error("could not remove an earlier run's %s: %s", result_file, exc.strerror or exc)
    if plan.rolled_back_file is None:
        return
    try:
        write_atomically(plan.rolled_back_file, "true" if rolled_back else "false")
    except OSError as exc:
        log.error("could not write %s: %s; the canary %s rolled back by this step", plan.rolled_back_file,
                  exc.strerror or exc, "was" if rolled_back else "was not")


def _roll_back(plan: RollbackPlan, document: VerdictDocument) -> bool:
    assert plan.rollback_args is not None  # wanted() is False without them
    verdict = document.verdict.value.upper()
    log.info("verdict %s: rolling the canary back in this step (--rollback-on-fail)", verdict)
    safety_net = f"the verdict stays {verdict} (the exit code says so) and the workflow's rollback step tries again"
    try:
        code = roll_back(plan.rollback_args)
    except UsageError as exc:  # Git's file refused the edit (no such VirtualService, weights that do not add up)
        log.error("rollback refused, nothing was changed: %s; %s", exc, safety_net)
        return False
    except Exception as exc:  # a fault of the rollback must never change the verdict's exit code
        log.error("rollback failed: unexpected error: %s: %s; %s", type(exc).__name__, exc, safety_net)
        return False
    if code != ExitCode.OK:
        log.error("rollback failed (exit %d, the line above says why); %s", code, safety_net)
        return False
    log.info("rolled back by this step: Git sends all traffic to stable; the rollback step after it has nothing to do")
    return True
