"""End a release (the exit handler of canary-release and canary-analysis): roll back an unfinished one, notify,
and end with the outcome, so that the workflow's phase says what happened.

- The workflow did not succeed (a step failed, `argo stop`, the deadline, no approval in time): roll the
  canary back here, with the same code and flags as `rollguard rollback` (and its own retries), then
  notify `aborted` or `error`.
- It succeeded: the release itself already acted. The outcome follows from the last verdict, the
  inconclusive policy and the weight: `rolled_back`, `promoted`, `passed`, `inconclusive` (held), or
  `skipped` (canary-analysis found 0 %: nothing to say). Nothing is rolled back a second time.
- Notify (if a URL is configured); a notification never fails or delays anything.
- Exit 1 when the canary was rolled back or held (unless --fail-on-rollback false): Argo then ends the
  workflow Failed with this container's termination message, `canary rolled back: <reason>`, as its
  message (workflow/controller/operator.go: a succeeded workflow whose exit node failed is marked
  Failed with the exit node's message). Exit 0 otherwise, 4 when the exit handler's own rollback failed.

The rollback itself may have been made by the analyze step (--rollback-on-fail): its result, when there is
one, gives the commit and the moment traffic was cut, and the rollback step after it was a no-op.

The values of the release reach this step as Argo global outputs (`{{workflow.outputs.parameters.*}}`);
one that was never set arrives as its literal `{{...}}` text and counts as unknown.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollguard.steps import rollback, trailers
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.logs import configure
from rollguard.steps.notify.command import send
from rollguard.steps.notify.flags import add_delivery_arguments, target_from, workflow_link
from rollguard.steps.notify.notice import Outcome, ReleaseNotice, commit_link
from rollguard.steps.options import UsageError, add_flag, positive_int
from rollguard.steps.output_files import write_atomically

log = logging.getLogger("rollguard.steps")

KINDS = ("release", "analysis")
POLICIES = rollback.INCONCLUSIVE_POLICIES
BOOLEANS = ("true", "false")
SKIPPED = "skipped"  # canary-analysis at 0 %: an outcome for the metrics, never a notification
TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
MAX_MESSAGE_CHARS = 1000  # Kubernetes keeps 4096 bytes of a termination message; a workflow message stays short
# Argo's node messages when `argo stop` ended a step: "workflow shutdown with strategy:  Stop" (exec_control.go,
# workflowpod.go), and "Stopped with strategy 'Stop'" for a suspended one (operator.go)
SHUTDOWN_MARKS = ("shutdown with strategy", "Stopped with strategy")
DEADLINE_MARK = "exceeded its deadline"  # Argo's node message past activeDeadlineSeconds
APPROVAL_STEPS = ("approve",)  # the suspend step's name in canary-release
PREFLIGHT_STEPS = ("preflight",)  # `rollguard notify --check` beside the first step: before anything changed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard finish`: rollback's (for an unfinished release), notify's, and the release's end state."""
    rollback.add_arguments(parser)
    add_delivery_arguments(parser)
    end = parser.add_argument_group("the release's end (the exit handler fills these from Argo)")
    add_flag(end, "--kind", default="release", choices=list(KINDS),
             help="release: canary-release (promotes); analysis: canary-analysis (judges the current weight)")
    add_flag(end, "--workflow-status", help="{{workflow.status}}: Succeeded, Failed or Error; unknown counts as "
                                            "not succeeded (the canary is rolled back)")  # fmt: skip
    add_flag(end, "--workflow-failures", help="{{workflow.failures}}: the failed nodes, JSON")
    add_flag(end, "--workflow-name", help="{{workflow.name}}")
    add_flag(end, "--verdict-json", help="the last analysis' verdict summary, JSON")
    add_flag(end, "--rollback-result", help="the release's own rollback step's result JSON, when it ran")
    add_flag(end, "--analysis-rollback-result",
             help="the result JSON of the rollback the analyze step made itself (--rollback-on-fail), when it made one")
    add_flag(end, "--release-commit", help="the last deploy or promote commit")
    add_flag(end, "--canary-weight", help="the canary's weight the release last set or found")
    add_flag(end, "--service", help="the service, for the notification")
    add_flag(end, "--on-inconclusive", default="rollback", choices=list(POLICIES),
             help="the release's inconclusive policy (what an inconclusive verdict did)")
    add_flag(end, "--fail-on-rollback", default="true", choices=list(BOOLEANS),
             help="true: a release that rolled the canary back (or held it, inconclusive) ends Failed; "
                  "false: Succeeded, as before")  # fmt: skip
    add_flag(end, "--rollback-attempts", default=3, type=positive_int,
             help="tries of the exit handler's own rollback (2 s, then 4 s apart)")
    out = parser.add_argument_group("outputs (for Argo's template metrics)")
    add_flag(out, "--outcome-file", help="write the outcome word here")
    add_flag(out, "--final-weight-file", help="write the canary's weight at the end here ('' when unknown)")
    add_flag(out, "--breach-to-cut-file", help="write the seconds from first breach to traffic cut here ('' unknown)")
    add_flag(out, "--termination-message-file", default=TERMINATION_LOG,
             help="where the workflow's message goes (the container's terminationMessagePath)")


def known(value: str | None) -> str:
    """A value the exit handler passed, '' when empty or an unresolved Argo `{{...}}` reference."""
    text = (value or "").strip()
    return "" if text.startswith("{{") and text.endswith("}}") else text


def parse_json(value: str | None) -> Any:
    """JSON from an Argo parameter: plain, or (workflow.failures) a JSON string holding JSON; None if neither."""
    text = known(value)
    for _ in range(2):
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, str):
            return data
        text = data
    return None


@dataclass(frozen=True)
class Failure:
    """One failed node of the workflow, as {{workflow.failures}} lists it."""

    step: str
    template: str
    message: str
    finished_at: str

    @property
    def is_leaf(self) -> bool:
        """A step that itself failed, not a group failing because of its child."""
        return not (self.message.startswith("child '") or self.message.startswith("step group "))


def read_failures(value: str | None) -> list[Failure]:
    """The failed nodes, earliest first; [] when none or unreadable."""
    data = parse_json(value)
    if not isinstance(data, list):
        return []
    found = [
        Failure(str(item.get("displayName") or ""), str(item.get("templateName") or ""),
                str(item.get("message") or ""), str(item.get("finishedAt") or ""))
        for item in data if isinstance(item, dict)
    ]  # fmt: skip
    return sorted(found, key=lambda failure: failure.finished_at)


@dataclass(frozen=True)
class Decision:
    """How the release ended, why, and whether this step must still roll it back."""

    outcome: str  # an Outcome value or SKIPPED
    reason: str
    needs_rollback: bool = False


def decide(kind: str, status: str, failures: list[Failure], evidence: trailers.Evidence, policy: str,
           weight: int | None) -> Decision:  # fmt: skip
    """The outcome of a release from what Argo and its steps left (pure)."""
    if status != "Succeeded":
        return _unfinished(status, failures)
    verdict = evidence.verdict
    reason = evidence.reason or f"verdict {verdict}"
    if verdict in ("fail", "error"):
        return Decision(Outcome.ROLLED_BACK.value, reason)
    if verdict == "inconclusive":
        if policy == "rollback":
            return Decision(Outcome.ROLLED_BACK.value, f"verdict inconclusive: {reason}")
        if policy == "promote" and kind == "release" and weight == 100:
            return Decision(Outcome.PROMOTED.value, f"promoted on an inconclusive verdict (policy promote): {reason}")
        return Decision(Outcome.INCONCLUSIVE.value, reason)
    if verdict == "pass":
        if kind == "analysis":
            return Decision(Outcome.PASSED.value, reason)
        return Decision(Outcome.PROMOTED.value, reason)
    if kind == "release" and weight == 100:
        return Decision(Outcome.PROMOTED.value, "the schedule went to 100 % without an analysis step")
    if kind == "analysis":
        return Decision(SKIPPED, "the canary has 0 %: nothing to analyse")
    return Decision(Outcome.ERROR.value, "the release ended without a verdict", needs_rollback=True)


def _unfinished(status: str, failures: list[Failure]) -> Decision:
    leaves = [failure for failure in failures if failure.is_leaf] or failures
    if leaves and all(failure.step in PREFLIGHT_STEPS for failure in leaves):
        # Refused before the release touched anything: nothing to roll back (a split someone set stays).
        return Decision(Outcome.ERROR.value, "the notification settings were refused before the release started "
                                             f"({leaves[0].message}); nothing was changed")
    stopped = next((f for f in leaves if any(mark in f.message for mark in SHUTDOWN_MARKS)), None)
    if stopped is not None:
        return Decision(Outcome.ABORTED.value, f"stopped (argo stop) during {stopped.step or 'the release'}", True)
    late = next((f for f in leaves if DEADLINE_MARK in f.message), None)
    if late is not None and (late.step in APPROVAL_STEPS or late.template in APPROVAL_STEPS):
        return Decision(Outcome.ABORTED.value, "no approval before the workflow's deadline", True)
    if late is not None:
        return Decision(Outcome.ERROR.value, f"the workflow ran past its deadline (in {late.step})", True)
    if leaves:
        first = leaves[0]
        return Decision(Outcome.ERROR.value, f"{first.step or first.template}: {first.message}", True)
    shown = status or "unknown"
    return Decision(Outcome.ERROR.value, f"the workflow ended {shown} before the release finished", True)


def cut_time(result: Any) -> float | None:
    """When traffic left the canary, from a rollback result: the live patch, else the push; None if neither."""
    if not isinstance(result, dict):
        return None
    patch = result.get("live_patch")
    if isinstance(patch, dict) and isinstance(patch.get("patched_at"), (int, float)):
        return float(patch["patched_at"])
    pushed = result.get("pushed_at")
    return float(pushed) if isinstance(pushed, (int, float)) and result.get("commit") else None


def _weight(value: str | None) -> int | None:
    text = known(value)
    return int(text) if text.isdigit() and int(text) <= 100 else None


def roll_back_unfinished(args: argparse.Namespace, reason: str) -> tuple[bool, dict[str, Any] | None]:
    """Run `rollguard rollback` in this process (its flags are ours), retried on run-time faults.
    (succeeded, its result JSON)."""
    result_file = args.result_file or str(Path(os.environ.get("TMPDIR", "/tmp")) / "rollguard-finish-rollback.json")
    rollback_args = argparse.Namespace(**{**vars(args), "reason_file": None, "reason": reason,
                                          "result_file": result_file})  # fmt: skip
    code: int = ExitCode.ERROR
    for attempt in range(1, args.rollback_attempts + 1):
        code = rollback.roll_back(rollback_args)
        if code in (ExitCode.OK, ExitCode.USAGE):
            break
        if attempt < args.rollback_attempts:
            log.warning("rollback attempt %d failed; trying again in %d s", attempt, 2**attempt)
            time.sleep(2**attempt)
    try:
        result = json.loads(Path(result_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        result = None
    return code == ExitCode.OK, result if isinstance(result, dict) else None


def _write(path: str | None, text: str) -> None:
    if path:
        write_atomically(Path(path), text)


def _termination_message(path: str, message: str) -> None:
    """Kubernetes reads the container's termination message from this file; Argo makes it the node's message."""
    if path == TERMINATION_LOG and not Path(path).exists():  # not in a pod (the kubelet creates it): leave /dev alone
        return
    try:
        Path(path).write_text(message, encoding="utf-8")
    except OSError as exc:  # locally, or a read-only root: the log line below still says it
        log.debug("termination message not written to %s: %s", path, exc)


def run(args: argparse.Namespace) -> int:
    """Decide, roll back if unfinished, notify, and exit so that Argo's phase tells the outcome."""
    configure("finish", verbose=args.verbose)
    try:
        target = target_from(args)
    except UsageError as exc:  # a rollback must never wait on the notification's settings
        log.error("no notification: %s", exc)
        target = None
    evidence = trailers.evidence_from_verdict_json(parse_json(args.verdict_json))
    weight = _weight(args.canary_weight)
    status = known(args.workflow_status)
    decision = decide(args.kind, status, read_failures(args.workflow_failures), evidence, args.on_inconclusive,
                      weight)  # fmt: skip
    log.info("the workflow ended %s; outcome %s: %s", status or "(status unknown)", decision.outcome, decision.reason)
    # The rollback the analyze step made itself cut traffic first; the rollback step after it then had nothing to do.
    rollbacks = [parse_json(args.analysis_rollback_result), parse_json(args.rollback_result)]
    commit = next((str(result["commit"]) for result in rollbacks if isinstance(result, dict) and result.get("commit")),
                  "")
    cut_at = min((cut for cut in map(cut_time, rollbacks) if cut is not None), default=None)
    notes: list[str] = []
    code: int = ExitCode.OK
    if decision.needs_rollback:
        rolled, result = roll_back_unfinished(args, f"release {decision.outcome}: {decision.reason}")
        commit = str((result or {}).get("commit") or commit)
        cut_at = cut_time(result) or cut_at
        if rolled:
            weight = 0
            notes.append("The exit handler rolled the canary back to 0 %.")
        else:
            code = ExitCode.ERROR
            notes.append("The exit handler could NOT roll the canary back: see the finish step's log; run "
                         "`rollguard rollback` by hand.")
    elif decision.outcome == Outcome.ROLLED_BACK.value:
        weight = 0
    elif decision.outcome == Outcome.PROMOTED.value:
        weight, commit = 100, known(args.release_commit)
    if decision.outcome != SKIPPED:
        notice = ReleaseNotice(
            outcome=Outcome(decision.outcome),
            service=args.service or "",
            namespace=args.namespace or "",
            virtual_service=args.virtual_service,
            evidence=evidence if decision.outcome not in (Outcome.ABORTED.value, Outcome.ERROR.value)
            else trailers.Evidence(reason=decision.reason),
            canary_weight=weight,
            commit=commit,
            commit_url=commit_link(args.repo, commit, args.commit_url or ""),
            workflow=known(args.workflow_name),
            workflow_url=workflow_link(args.workflow_url, known(args.workflow_name), args.namespace or ""),
            cut_at=cut_at,
            notes=tuple(notes),
        )
        send(target, notice)
        breach_to_cut = notice.breach_to_cut_s
    else:
        breach_to_cut = None
    _write(args.outcome_file, decision.outcome)
    _write(args.final_weight_file, "" if weight is None else str(weight))
    _write(args.breach_to_cut_file, "" if breach_to_cut is None else f"{breach_to_cut:.3f}")
    if code == ExitCode.OK and args.fail_on_rollback == "true":
        message = ""
        if decision.outcome == Outcome.ROLLED_BACK.value:
            message = f"canary rolled back: {decision.reason}"
        elif decision.outcome == Outcome.INCONCLUSIVE.value:
            held = "" if weight is None else f" at {weight} %"
            message = f"canary held{held}: verdict inconclusive: {decision.reason}"
        if message:
            message = trailers.one_line(message, MAX_MESSAGE_CHARS)
            _termination_message(args.termination_message_file, message)
            log.error("%s", message)  # the last line: Kubernetes' FallbackToLogsOnError shows it too
            return ExitCode.FAIL
    return code
