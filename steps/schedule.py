"""Split a weight schedule such as 10,50,100 into the next canary weight and the rest.

The `canary-release` WorkflowTemplate calls this between analyses, so the schedule is walked with
plain steps and `when` conditions (no Argo expressions): each round shifts to `weight`, judges, and
hands `rest` to the next round; an empty `rest` ends the release.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from rollguard.steps import logs
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.options import UsageError, add_flag, parse_duration
from rollguard.steps.output_files import write_atomically

DEFAULT_SCHEDULE = "10,50,100"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NextWeight:
    """The weight to shift to now, and the schedule left after it (empty: this is the last one)."""

    weight: int
    rest: tuple[int, ...]

    @property
    def rest_text(self) -> str:
        """The remaining schedule as the comma list the next round takes ('' when done)."""
        return ",".join(str(weight) for weight in self.rest)


def parse_schedule(text: str) -> tuple[int, ...]:
    """Parse `10,50,100`: whole percentages from 1 to 100, strictly increasing, at least one."""
    parts = [part.strip() for part in str(text).split(",")]
    if not text.strip() or any(part == "" for part in parts):
        raise UsageError(f"--schedule {text!r}: write canary weights separated by commas, like 10,50,100")
    weights: list[int] = []
    for part in parts:
        try:
            weight = int(part)
        except ValueError:
            raise UsageError(f"--schedule {text!r}: {part!r} is not a whole number from 1 to 100") from None
        if not 1 <= weight <= 100:
            raise UsageError(f"--schedule {text!r}: {weight} is outside 1..100; each step is a canary percentage")
        if weights and weight <= weights[-1]:
            raise UsageError(f"--schedule {text!r}: {weight} after {weights[-1]}; weights must increase step by step")
        weights.append(weight)
    return tuple(weights)


def next_weight(text: str) -> NextWeight:
    """The first weight of the schedule and the rest of it."""
    weights = parse_schedule(text)
    return NextWeight(weight=weights[0], rest=weights[1:])


def check_guard_duration(text: str) -> float | None:
    """The guard after the promotion to 100 % in seconds (None: no guard), refusing what cannot end a release.

    Checked by the release's first step, so a bad value stops the release before it deploys anything.
    """
    stripped = str(text).strip()
    if not stripped:
        return None
    if stripped.lower() == "forever":
        seconds = 0.0
    else:
        try:
            seconds = parse_duration(stripped)
        except ValueError as exc:
            raise UsageError(f"--guard-duration: {exc} (empty: no guard after the promotion to 100 %)") from None
    if seconds <= 0:
        raise UsageError(
            f"--guard-duration {text!r}: a guard inside canary-release must end, or the workflow's deadline would "
            "end it and the exit handler would roll the promoted release back; give a duration such as 10m, "
            "or guard open-ended in a Workflow of your own with rollguard-steps' analyze (duration 0, "
            "absolute-only; no deadline)")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard next-weight`."""
    add_flag(parser, "--schedule", default=DEFAULT_SCHEDULE, help="canary weights to walk through, in percent")
    add_flag(parser, "--guard-duration", default="",
             help="after the promotion to 100 %%: watch the new version this long against the absolute limits "
             "(no stable is left to compare with) and roll back on a fail; empty: no guard. Checked here so a bad "
             "value stops the release before it deploys")
    add_flag(parser, "--weight-file", help="write the next weight here (a bare integer)")
    add_flag(parser, "--rest-file", help="write the remaining schedule here (empty when this is the last weight)")


def run(args: argparse.Namespace) -> int:
    """Print the next weight and the rest; write them to the files Argo reads as output parameters."""
    logs.configure("next-weight")
    step = next_weight(args.schedule)
    guard_s = check_guard_duration(args.guard_duration)
    if args.weight_file:
        _write(args.weight_file, str(step.weight))
    if args.rest_file:
        _write(args.rest_file, step.rest_text)
    later = f"then {step.rest_text}" if step.rest else "the last step of the schedule"
    if not step.rest and step.weight == 100 and guard_s is not None:
        later += f", then a {guard_s:g}s guard on the absolute limits"
    log.info("next canary weight %d %%, %s", step.weight, later)
    print(step.weight)
    return ExitCode.OK


def _write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(target, text)
