"""The analysis loop: a check every interval (read, judge, log, record) until the run is decided.

Prometheus comes in as a Querier and time as a Clock, so the loop runs against a real server in
production and against scripted answers on a simulated clock in tests.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

from rollguard.steps.analyze.check_log import log_check
from rollguard.steps.analyze.check_reader import CheckReader
from rollguard.steps.analyze.settings import AnalysisSettings
from rollguard.steps.judgment.check import judge_check
from rollguard.steps.judgment.outcomes import Decision, MetricOutcome, Phase, Step, Verdict
from rollguard.steps.judgment.run_decision import RunJudge
from rollguard.steps.metrics.querier import Querier
from rollguard.steps.verdict_document import CheckRecord, FailedCheck, VerdictDocument


class Clock(Protocol):
    """Where the loop gets time from: a monotonic clock to pace checks, wall time for the record, a sleep."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wall(self) -> float:
        """Unix time, for the timestamps in the verdict."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    def wall(self) -> float:
        """time.time()."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """time.sleep()."""
        time.sleep(seconds)


class AnalysisInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during the analysis; carries the inconclusive verdict of the checks made so far."""

    def __init__(self, document: VerdictDocument) -> None:
        super().__init__("the analysis was interrupted before a verdict")
        self.document = document


def run_checks(settings: AnalysisSettings, querier: Querier, clock: Clock | None = None) -> VerdictDocument:
    """Check every interval until a decision; return the verdict document (raise AnalysisInterrupted on Ctrl-C)."""
    clock = clock or SystemClock()
    reader = CheckReader(settings, querier)
    judge = RunJudge(settings.run_limits)
    interval, planned = settings.timing.interval_s, settings.plan.planned_looks
    checks: list[CheckRecord] = []
    started_at, started = clock.wall(), clock.monotonic()
    index = 0
    decision = Decision.keep_going()
    try:
        while decision.step is Step.CONTINUE:
            delay = started + index * interval - clock.monotonic()
            if delay > 0:
                clock.sleep(delay)
            # Never earlier than the slot: the last planned look must see the bake time as over.
            elapsed = max(clock.monotonic() - started, index * interval)
            reading = reader.read(elapsed)
            outcome = judge_check(index, elapsed, reading.inputs, settings.limits, settings.judge, settings.plan)
            log_check(outcome, planned, reading.readings)
            checks.append({
                "index": index, "at": started_at + elapsed, "elapsed_s": round(elapsed, 3),
                "outcome": outcome.summary, **reading.readings,
                "metrics": [_metric_record(metric) for metric in outcome.metrics],
            })
            decision = judge.observe(outcome)
            # A slow check skips the slots it overran; the last planned look is always final.
            behind = math.floor((clock.monotonic() - started) / interval) + 1
            index = min(planned - 1, max(index + 1, behind))
    except KeyboardInterrupt:
        interrupted = Decision.decide(Verdict.INCONCLUSIVE, "the analysis was interrupted before a verdict")
        raise AnalysisInterrupted(_document(settings, interrupted, started_at, clock.wall(), checks)) from None
    return _document(settings, decision, started_at, clock.wall(), checks)


def _document(
    settings: AnalysisSettings, decision: Decision, started_at: float, decided_at: float, checks: list[CheckRecord]
) -> VerdictDocument:
    if decision.verdict is None:
        raise ValueError("a verdict document needs a decided run")
    evidence = decision.failed_check
    return VerdictDocument(
        verdict=decision.verdict,
        reason=decision.reason,
        started_at=started_at,
        decided_at=decided_at,
        failed_check=None if evidence is None else FailedCheck.from_outcome(evidence),
        settings=settings.as_json(),
        checks=tuple(checks),
    )


def _metric_record(metric: MetricOutcome) -> dict[str, Any]:
    """A metric's check record; the explanation only where something is not plainly ok."""
    record = metric.as_json()
    if metric.phase is Phase.OK:
        del record["detail"]
    return record
