"""Summary statistics over runs (mean, median, p95, max) and the verdict against the goals."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rollguard.experiment.records import RunRecord

# The proposal's success criterion, and rollguard's own, stricter goals (README, issue 6).
PROPOSAL_LIMIT_S = 60.0
GOAL_BREACH_TO_CUT_P95_S = 3.0
GOAL_FAULT_TO_CUT_P95_S = 8.0
GOAL_VERDICT_TO_CUT_P95_S = 1.0  # issue 13: carrying out the decision, whatever a pod start costs
GOAL_DETECTION_RATIO = 0.3


@dataclass(frozen=True)
class Spread:
    """Count, mean, median, p95 and max of a sample; all None when the sample is empty."""

    count: int
    mean: float | None
    median: float | None
    p95: float | None
    maximum: float | None


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: Sequence[float | None]) -> Spread:
    """Summarise the values that exist (None entries are runs where the moment did not happen)."""
    present = [value for value in values if value is not None]
    if not present:
        return Spread(0, None, None, None, None)
    return Spread(
        count=len(present),
        mean=statistics.fmean(present),
        median=statistics.median(present),
        p95=percentile(present, 0.95),
        maximum=max(present),
    )


METRICS: dict[str, Callable[[RunRecord], float | None]] = {
    "verdict → cut (s)": RunRecord.verdict_to_cut_s,
    "breach → cut (s)": RunRecord.breach_to_cut_s,
    "fault → cut (s)": RunRecord.fault_to_cut_s,
    "alert → cut (s)": RunRecord.alert_to_cut_s,
    "fault → verdict (s)": RunRecord.fault_to_verdict_s,
    "failed requests": lambda record: float(record.failed_requests) if record.faulty else None,
}


def summarise(records: Sequence[RunRecord]) -> dict[str, Spread]:
    """One Spread per metric in METRICS, over the given runs."""
    return {name: spread([measure(record) for record in records]) for name, measure in METRICS.items()}


@dataclass(frozen=True)
class GoalCheck:
    """One goal, the figure measured against it, and whether it was met (None: not measured)."""

    goal: str
    measured: str
    met: bool | None


def check_goals(records: Sequence[RunRecord]) -> list[GoalCheck]:
    """Compare the runs with the proposal's 60 s criterion and rollguard's own goals."""
    faulty = [record for record in records if record.faulty and record.mode == "automated"]
    healthy = [record for record in records if record.scenario == "healthy"]
    checks: list[GoalCheck] = []
    breach = spread([record.breach_to_cut_s() for record in faulty])
    verdict = spread([record.verdict_to_cut_s() for record in faulty])
    fault = spread([record.fault_to_cut_s() for record in faulty])
    uncut = [record for record in faulty if record.traffic_cut is None]
    if faulty:
        worst = fault.maximum
        checks.append(
            GoalCheck(
                f"proposal: every automated rollback within {PROPOSAL_LIMIT_S:.0f} s of the fault",
                f"max fault → cut {_fmt(worst)} s, {len(uncut)} of {len(faulty)} runs never cut",
                None if worst is None else (worst <= PROPOSAL_LIMIT_S and not uncut),
            )
        )
        checks.append(
            GoalCheck(
                f"rollguard: breach → cut p95 ≤ {GOAL_BREACH_TO_CUT_P95_S:.0f} s",
                f"p95 {_fmt(breach.p95)} s over {breach.count} runs{_uncut(uncut)}",
                None if breach.p95 is None else breach.p95 <= GOAL_BREACH_TO_CUT_P95_S and not uncut,
            )
        )
        checks.append(
            GoalCheck(
                f"rollguard: fault → cut p95 ≤ {GOAL_FAULT_TO_CUT_P95_S:.0f} s",
                f"p95 {_fmt(fault.p95)} s over {fault.count} runs{_uncut(uncut)}",
                None if fault.p95 is None else fault.p95 <= GOAL_FAULT_TO_CUT_P95_S and not uncut,
            )
        )
        if verdict.count:
            checks.append(
                GoalCheck(
                    f"rollguard: verdict → cut p95 ≤ {GOAL_VERDICT_TO_CUT_P95_S:.0f} s",
                    f"p95 {_fmt(verdict.p95, 2)} s over {verdict.count} runs{_uncut(uncut)}",
                    verdict.p95 is not None and verdict.p95 <= GOAL_VERDICT_TO_CUT_P95_S and not uncut,
                )
            )
        ratios = spread([record.detection_ratio() for record in faulty])
        if ratios.count:
            checks.append(
                GoalCheck(
                    f"rollguard: detection time ÷ threshold rule's ≤ {GOAL_DETECTION_RATIO}",
                    f"median ratio {_fmt(ratios.median, 2)} over {ratios.count} runs",
                    ratios.median is not None and ratios.median <= GOAL_DETECTION_RATIO,
                )
            )
    if healthy:
        false_rollbacks = sum(1 for record in healthy if record.false_rollback)
        checks.append(
            GoalCheck(
                "rollguard: 0 false rollbacks of healthy canaries",
                f"{false_rollbacks} of {len(healthy)} healthy runs rolled back",
                false_rollbacks == 0,
            )
        )
    return checks


def _uncut(uncut: Sequence[RunRecord]) -> str:
    """A faulty run that was never cut fails every timing goal; say how many there were."""
    return f", {len(uncut)} faulty run(s) never cut" if uncut else ""


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"
