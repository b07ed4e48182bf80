"""The analysis loop: a check every interval (read, judge, log, record) until the run is decided.

Prometheus comes in as a Querier and time as a Clock, so the loop runs against a real server in
production and against scripted answers on a simulated clock in tests.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Protocol

from rollguard.steps.analyze.check_log import log_check
from rollguard.steps.analyze.check_reader import CheckReader, CheckReading
from rollguard.steps.analyze.settings import AnalysisSettings
from rollguard.steps.judgment.anytime import RestartMixture
from rollguard.steps.judgment.anytime_check import judge_check_anytime
from rollguard.steps.judgment.check import STATISTICAL_TESTS_PER_LOOK, judge_check
from rollguard.steps.judgment.outcomes import CheckOutcome, Decision, Judge, MetricOutcome, Phase, Step, Verdict
from rollguard.steps.judgment.run_decision import RunJudge
from rollguard.steps.judgment.statistical import LookPlan
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
    reader = CheckReader(settings, querier, timer=clock.monotonic)
    judge = RunJudge(settings.run_limits)
    every = settings.budget.restart_every_s
    restarts = RestartMixture(every) if every is not None and settings.judge is Judge.STATISTICAL else None
    interval, planned = settings.timing.interval_s, settings.planned_checks
    checks = CheckRecords()
    started_at, started = clock.wall(), clock.monotonic()
    index = 0
    if settings.timing.started_at is not None:
        # Resuming: time, slots and counts run from the first start, so the sequential tests go on as one.
        resumed_after = max(0.0, started_at - settings.timing.started_at)
        started_at, started = settings.timing.started_at, started - resumed_after
        index = math.ceil(resumed_after / interval - 1e-9)
        if planned is not None:
            index = min(planned - 1, index)
    decision = Decision.keep_going()
    try:
        while decision.step is Step.CONTINUE:
            delay = started + index * interval - clock.monotonic()
            if delay > 0:
                clock.sleep(delay)
            # Never earlier than the slot: the last planned look must see the bake time as over.
            elapsed = max(clock.monotonic() - started, index * interval)
            reading = reader.read(elapsed)
            outcome = _judge(settings, index, elapsed, reading, restarts)
            log_check(outcome, planned, reading.readings)
            checks.append({
                "index": index, "at": started_at + elapsed, "elapsed_s": round(elapsed, 3),
                "outcome": outcome.summary, **reading.readings,
                "metrics": [_metric_record(metric) for metric in outcome.metrics],
            })
            decision = judge.observe(outcome)
            # A slow check skips the slots it overran; the last planned look is always final.
            behind = math.floor((clock.monotonic() - started) / interval) + 1
            index = max(index + 1, behind) if planned is None else min(planned - 1, max(index + 1, behind))
    except KeyboardInterrupt:
        if planned is None:
            reason = (f"the open-ended analysis was stopped after {clock.monotonic() - started:.0f}s and "
                      f"{judge.checks_seen} checks without a proven breach (an open-ended analysis never passes)")
        else:
            reason = "the analysis was interrupted before a verdict"
        interrupted = Decision.decide(Verdict.INCONCLUSIVE, reason)
        raise AnalysisInterrupted(_document(settings, interrupted, started_at, clock.wall(), checks.kept())) from None
    return _document(settings, decision, started_at, clock.wall(), checks.kept())


def _judge(settings: AnalysisSettings, index: int, elapsed: float, reading: CheckReading,
           restarts: RestartMixture | None) -> CheckOutcome:
    if settings.judge is Judge.STATISTICAL:
        return judge_check_anytime(index, elapsed, reading.inputs, settings.limits, settings.budget, restarts)
    plan = settings.plan or LookPlan(settings.confidence, 1, STATISTICAL_TESTS_PER_LOOK)  # threshold: unused
    return judge_check(index, elapsed, reading.inputs, settings.limits, settings.judge, plan)


class CheckRecords:
    """The checks a verdict records: all of them, except in an analysis that runs for hours, where the
    first ones and the latest ones are kept (the verdict file stays bounded; the log has every check)."""

    FIRST, LATEST = 20, 1000

    def __init__(self) -> None:
        self._first: list[CheckRecord] = []
        self._latest: deque[CheckRecord] = deque(maxlen=self.LATEST)

    def append(self, record: CheckRecord) -> None:
        """Keep one more check's record."""
        if len(self._first) < self.FIRST:
            self._first.append(record)
        else:
            self._latest.append(record)

    def kept(self) -> list[CheckRecord]:
        """The records kept, in order."""
        return self._first + list(self._latest)


def _document(
    settings: AnalysisSettings, decision: Decision, started_at: float, decided_at: float,
    checks: list[CheckRecord],
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
