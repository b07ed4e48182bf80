"""Post one message about a release's outcome to a webhook: generic JSON, Slack or Microsoft Teams.

The message says what happened (rolled back, promoted, passed, inconclusive, aborted, error), to which
service, the verdict and its evidence (metric, value, limit, requests), the rollback or promotion
commit (with a link where the repository URL allows one), the workflow, and the time from the first
breach to the traffic cut when both are known. The URL comes from --notify-url or a file (a mounted
Secret) and is never printed. Failed deliveries are retried with backoff, then logged: a notification
never fails the command (exit 0). --check only validates the settings (exit 2 when they cannot work).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rollguard.steps import trailers
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.logs import configure
from rollguard.steps.notify.delivery import NotifyTarget, deliver
from rollguard.steps.notify.flags import add_delivery_arguments, target_from, workflow_link
from rollguard.steps.notify.formats import payload
from rollguard.steps.notify.notice import OUTCOMES, Outcome, ReleaseNotice, commit_link
from rollguard.steps.options import UsageError, add_flag, add_switch, non_negative_float, percent_weight

log = logging.getLogger("rollguard.steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard notify`."""
    add_delivery_arguments(parser)
    what = parser.add_argument_group("what happened")
    add_flag(what, "--outcome", help="how the release ended: " + ", ".join(OUTCOMES) + " (required unless --check)")
    add_flag(what, "--verdict-file", help="verdict JSON of `rollguard analyze` (full or summary): verdict, reason, "
                                          "evidence, first breach")  # fmt: skip
    add_flag(what, "--service", help="the service the release was about")
    add_flag(what, "--namespace", help="its namespace")
    add_flag(what, "--virtual-service", help="the VirtualService whose split moved")
    add_flag(what, "--canary-weight", type=percent_weight, help="the canary's weight after the release")
    add_flag(what, "--commit", help="the rollback or promotion commit (SHA)")
    add_flag(what, "--repo", help="the GitOps repository URL, for a link to --commit")
    add_flag(what, "--workflow-name", help="the Argo workflow that ran the release")
    add_flag(what, "--cut-at", type=non_negative_float,
             help="when traffic left the canary (Unix seconds), for the breach -> cut time")  # fmt: skip
    add_switch(parser, "--check", help="only check the notification settings (URL, format); send nothing")
    add_switch(parser, "--verbose", help="log debug lines too")


def read_evidence(verdict_file: str | None) -> trailers.Evidence:
    """The evidence in a verdict file; a missing or broken file gives none (logged), never an error."""
    if not verdict_file:
        return trailers.Evidence()
    try:
        return trailers.evidence_from_verdict_json(json.loads(Path(verdict_file).read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        log.warning("verdict file %s cannot be read (%s); the notification goes without its evidence", verdict_file,
                    type(exc).__name__)
        return trailers.Evidence()


def send(target: NotifyTarget | None, notice: ReleaseNotice) -> bool:
    """Post `notice` to `target` (if any), log what happened; True when it was delivered. Never raises."""
    if target is None:
        log.info("no notify URL configured: no notification (%s)", notice.title)
        return False
    try:
        document = payload(notice, target.format)
        result = deliver(target, document)
    except Exception as exc:  # a notification must never break what called it
        log.error("notification to %s not sent: %s: %s", target.host, type(exc).__name__, exc)
        return False
    if result.delivered:
        log.info("notification sent to %s (%s format, %d attempt(s)): %s", target.host, target.format.value,
                 result.attempts, notice.title)
    else:
        log.error("notification to %s (%s format) could not be delivered after %d attempt(s): %s", target.host,
                  target.format.value, result.attempts, result.detail)
    return result.delivered


def run(args: argparse.Namespace) -> int:
    """Check the settings, then build and send the notification."""
    configure("notify", verbose=args.verbose)
    target = target_from(args)  # a bad URL is a usage error, before anything else
    if args.check:
        if target is None:
            log.info("notifications are off (no --notify-url, no --notify-url-file)")
        else:
            log.info("notifications go to %s as %s", target.host, target.format.value)
        return ExitCode.OK
    if args.outcome not in OUTCOMES:
        shown = f"--outcome {args.outcome!r} is not" if args.outcome else "--outcome is required:"
        raise UsageError(f"{shown} one of {', '.join(OUTCOMES)}")
    commit = (args.commit or "").strip()
    notice = ReleaseNotice(
        outcome=Outcome(args.outcome),
        service=args.service or "",
        namespace=args.namespace or "",
        virtual_service=args.virtual_service or "",
        evidence=read_evidence(args.verdict_file),
        canary_weight=args.canary_weight,
        commit=commit,
        commit_url=commit_link(args.repo or "", commit, args.commit_url or ""),
        workflow=args.workflow_name or "",
        workflow_url=workflow_link(args.workflow_url, args.workflow_name or "", args.namespace or ""),
        cut_at=args.cut_at,
    )
    send(target, notice)
    return ExitCode.OK
