"""One weight change end to end: clone, edit the weights, commit, push (re-applied on races), then the cluster.

A step (deploy, promote, rollback) decides the new canary weight from the split Git holds and writes
the commit message; this module runs the rest and reports the outcome as log lines, exit code,
--result-file and --commit-file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.credentials import GitCredentials
from rollguard.steps.gitops.git_publish import PublishOutcome, PublishState, ReadFile, publish_change
from rollguard.steps.gitops.git_workspace import BranchNotFound, FileNotInRepo, GitError, display_url
from rollguard.steps.gitops.kustomize_render import RenderCheckFailed, check_rendered
from rollguard.steps.options import UsageError, check_output_files
from rollguard.steps.traffic.layouts import LAYOUT_LABELS, locate_split
from rollguard.steps.traffic.manifest_errors import ManifestError
from rollguard.steps.traffic.weight_edit import SplitEdit, unified_diff
from rollguard.steps.weight_change.change import WeightChange, WeightPlan
from rollguard.steps.weight_change.cluster import ClusterSettings, ClusterSide, GitOutcome
from rollguard.steps.weight_change.flags import credentials_from, split_source_from
from rollguard.steps.weight_change.report import StepReport, write_outputs

log = logging.getLogger("rollguard.steps")


def change_split(
    args: argparse.Namespace,
    action: str,
    plan: Callable[[int, int], WeightPlan],
    message: Callable[[SplitEdit], str],
    *,
    always_applies: bool = False,
) -> int:
    """Run one weight change end to end; return the exit code.

    `plan(stable, canary)` gets the split Git holds (on every push attempt: a race may have moved it)
    and returns the wanted canary weight; it may raise UsageError. `message` writes the commit message.
    The split Git holds must add up to 100 and agree across its routes, and a lost push race must
    not have moved it (else exit 4: this step's weights would land on top of, say, a rollback),
    except for a step that `always_applies` (rollback: safety first), which sets its weights over
    whatever the file says.
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
    cluster = ClusterSide(ClusterSettings.from_args(args))
    if not args.dry_run:
        cluster.start_connecting()  # the cluster actions follow the push: load the client while git works
    try:
        try:
            make_change = _change_maker(args, plan, message, always_applies)
            check = _cluster_check(cluster, always_applies)
            outcome = _publish(args, report, credentials, make_change, check,
                               _render_check(args, report, always_applies))
        except GitError as exc:
            return _fail(args, report, f"{exc}")
        return _after_publish(args, report, outcome, cluster)
    finally:
        cluster.close()


def _change_maker(
    args: argparse.Namespace,
    plan: Callable[[int, int], WeightPlan],
    message: Callable[[SplitEdit], str],
    always_applies: bool,
) -> Callable[[str, WeightChange | None, ReadFile], WeightChange]:
    """The edit of the file on whatever head publish_change has: the step decides from the split it finds there."""

    source = split_source_from(args)

    def make_change(text: str, previous: WeightChange | None, read: ReadFile) -> WeightChange:
        current = locate_split(text, read, source)
        if always_applies:
            stable, canary = current.stable_weight, current.canary_weight
        else:
            stable, canary = current.agreed()
            if previous is not None:
                _check_not_moved_by_the_race(args, previous, stable, canary)
        wanted = plan(stable, canary)
        edit = current.edit(wanted.canary_weight)
        return WeightChange(edit, wanted, message(edit), current.layout, current.overlay)

    return make_change


class SplitMovedInRace(GitError):
    """A lost push race moved the split this step started from (a rollback landed first): it stops, exit 4."""


def _check_not_moved_by_the_race(args: argparse.Namespace, previous: WeightChange, stable: int, canary: int) -> None:
    """Refuse to re-apply a step's weights on a head where someone else moved the split, unless it is already there."""
    started = (previous.edit.before_stable_weight, previous.edit.before_canary_weight)
    wanted = (previous.edit.stable_weight, previous.edit.canary_weight)
    if (stable, canary) in (started, wanted):
        return
    raise SplitMovedInRace(
        f"another commit landed on {args.branch} first and changed the split: Git now has {args.stable_subset} "
        f"{stable} %, {args.canary_subset} {canary} % (this step started from {started[0]} % / {started[1]} %). "
        f"Nothing was pushed: setting {args.canary_subset} {wanted[1]} % on top of that change could undo it "
        "(a rollback?). Check why it moved, then run the step again if it is still wanted"
    )


def _render_check(
    args: argparse.Namespace, report: StepReport, always_applies: bool
) -> Callable[[Path, WeightChange], None]:
    """The check with the edit written into the clone: render the Kustomize overlay and compare its weights.

    A mismatch stops a deploy or promote (exit 2, nothing pushed); a rollback says so, pushes anyway, and
    exits 4 after the cluster side (the overlay still renders other weights: someone must look).
    """

    def check(clone_dir: Path, change: WeightChange) -> None:
        edit = change.edit
        try:
            done = check_rendered(
                clone_dir, change.overlay, args.render_check, args.virtual_service,
                (args.stable_subset, args.canary_subset), tuple(args.route or ()),
                (edit.stable_weight, edit.canary_weight),
            )  # fmt: skip
        except RenderCheckFailed as exc:
            report.render_check = {"outcome": "failed", "detail": str(exc)}
            if not always_applies:
                raise
            log.error("%s: the rollback is pushed anyway", exc)
            return
        report.render_check = {"outcome": done.outcome, "detail": done.detail}
        log.info("%s", done.detail)

    return check


def _cluster_check(cluster: ClusterSide, always_applies: bool) -> Callable[[], None]:
    """The check before the commit: an unusable Kubernetes configuration is reported while nothing has changed.

    A deploy or promote then stops (exit 2: --live-patch/--argocd-app could not run after the push); a
    rollback says so and goes on (safety first: Git is what ArgoCD applies), and exits 4 after the push.
    """
    reported: list[str] = []

    def check() -> None:
        problem = cluster.configuration_problem()
        if problem is None or reported:
            return
        if not always_applies:
            raise UsageError(f"{problem}; --live-patch and --argocd-app need it. Nothing was changed")
        reported.append(problem)
        log.error("%s: the rollback is pushed anyway, but the live patch and the ArgoCD sync cannot run", problem)

    return check


def _publish(
    args: argparse.Namespace,
    report: StepReport,
    credentials: GitCredentials,
    make_change: Callable[[str, WeightChange | None, ReadFile], WeightChange],
    before_commit: Callable[[], None],
    check_written: Callable[[Path, WeightChange], None],
) -> PublishOutcome[WeightChange]:
    """Commit and push the change. Raises UsageError for bad input (recorded), GitError for run-time faults."""
    log.info(
        "%s: %s of %s (branch %s), VirtualService %s, subsets %s/%s, credentials: %s",
        report.action, args.path, report.repo, args.branch, args.virtual_service, args.stable_subset,
        args.canary_subset, credentials.kind,
    )  # fmt: skip
    try:
        return publish_change(
            repo=args.repo,
            branch=args.branch,
            path=args.path,
            make_change=make_change,
            author=args.git_author,
            credentials=credentials,
            push_retries=args.push_retries,
            timeout_s=args.git_timeout,
            dry_run=args.dry_run,
            before_commit=before_commit,
            check_written=check_written,
        )
    except ManifestError as exc:
        where = f"{args.path} (branch {args.branch} of {report.repo})"
        raise _refuse(args, report, f"{where}: {exc}. Nothing was changed") from None
    except (BranchNotFound, FileNotInRepo) as exc:
        raise _refuse(args, report, str(exc)) from None
    except UsageError as exc:  # the step's plan refused the move (e.g. promote backwards)
        raise _refuse(args, report, str(exc)) from None


def _after_publish(
    args: argparse.Namespace, report: StepReport, outcome: PublishOutcome[WeightChange], cluster: ClusterSide
) -> int:
    """Log what Git holds now, bring the cluster to it, write the outputs; the exit code."""
    report.record_publish(outcome)
    edit = outcome.change.edit
    if outcome.change.layout != "manifest":
        log.info("%s is a %s: only its weight values change", args.path, LAYOUT_LABELS[outcome.change.layout])
    for warning in edit.warnings:
        log.warning("%s", warning)
    weights = f"{args.stable_subset} {edit.stable_weight} %, {args.canary_subset} {edit.canary_weight} %"
    if outcome.state is PublishState.DRY_RUN:
        diff = unified_diff(outcome.old_text, edit.text, args.path)
        sys.stdout.write(diff if diff else f"# no change: {args.path} already has {weights}\n")
        log.info("dry run: nothing committed, pushed or patched (would set %s)", weights)
        write_outputs(report, args.result_file, args.commit_file)
        return ExitCode.OK
    if outcome.state is PublishState.UNCHANGED:
        log.info("%s: Git already has %s; nothing to commit", outcome.change.plan.already, weights)
    else:
        log.info(
            "pushed %s to %s: %s (was %s %d %%, %s %d %%)%s",
            (outcome.commit or "")[:12], args.branch, weights, args.stable_subset, edit.before_stable_weight,
            args.canary_subset, edit.before_canary_weight,
            f" after {outcome.attempts - 1} push race(s)" if outcome.attempts > 1 else "",
        )  # fmt: skip
    pushed_now = outcome.state is PublishState.PUSHED
    result = cluster.converge(GitOutcome(outcome.commit or outcome.head, pushed_now, edit, report.action))
    report.argocd, report.live_patch = result.argocd, result.live_patch
    problems = list(result.problems)
    if report.render_check is not None and report.render_check["outcome"] == "failed":  # a rollback pushed anyway
        problems.append(f"{'pushed' if pushed_now else 'Git has'} the rollback, but {report.render_check['detail']}")
    if problems:
        return _fail(args, report, "; ".join(problems))
    write_outputs(report, args.result_file, args.commit_file)
    return ExitCode.OK


def _refuse(args: argparse.Namespace, report: StepReport, problem: str) -> UsageError:
    """The UsageError to raise, after recording it in the result file (nothing was changed)."""
    report.error = problem
    write_outputs(report, args.result_file, args.commit_file)
    return UsageError(problem)


def _fail(args: argparse.Namespace, report: StepReport, problem: str) -> int:
    """Log a run-time fault, record it in the result file; exit code 4."""
    report.error = problem
    log.error("%s", problem)
    write_outputs(report, args.result_file, args.commit_file)
    return ExitCode.ERROR
