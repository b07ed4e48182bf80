"""The named outcomes of a judgment: verdicts, per-metric phases, policies and the run's decision.

Every measurement ends in exactly one phase; nothing is "None, so probably fine".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum


class Verdict(str, Enum):
    """The analysis result, as written to the verdict file and told by the exit code."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class Policy(str, Enum):
    """What to do when there is no data, or when Prometheus cannot be queried."""

    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    CONTINUE = "continue"


class Judge(str, Enum):
    """Which rule judges the built-in metrics."""

    STATISTICAL = "statistical"  # anytime-valid sequential tests (test martingales), fails at the first proof
    BONFERRONI = "bonferroni"  # exact fixed-look tests, the budget split over the planned checks (the old default)
    THRESHOLD = "threshold"  # point values each check, fail after N failed checks (Flagger/Argo style)


class Phase(str, Enum):
    """What one metric said at one check."""

    OK = "ok"  # judged and within its limit
    SUSPECT = "suspect"  # statistical rule: the estimate is over the limit, but not yet with confidence
    BREACH = "breach"  # a point value over its limit; counts towards the failure limit
    FAILED = "failed"  # decisive failure: the verdict is fail now
    SKIPPED = "skipped"  # not applicable this check (e.g. stable served no requests to compare with)
    NO_DATA = "no_data"  # the query returned no series
    NAN = "nan"  # the query returned NaN (e.g. 0/0 when no requests fell in the window)
    MULTIPLE = "multiple"  # several series where one was expected: the query is ambiguous
    ERROR = "error"  # Prometheus could not be queried (after retries) or refused the query

    @property
    def is_missing_data(self) -> bool:
        """True for the phases the --on-no-data policy handles."""
        return self in (Phase.NO_DATA, Phase.NAN)

    @property
    def is_error(self) -> bool:
        """True for the phases the --on-error policy (and its error budget) handles."""
        return self in (Phase.MULTIPLE, Phase.ERROR)


@dataclass(frozen=True)
class MetricOutcome:
    """One metric at one check: its value, its limit, the samples behind it, and its phase."""

    metric: str
    phase: Phase
    value: float = math.nan
    threshold: float = math.nan
    detail: str = ""
    samples: int | None = None  # requests behind the value, when the value is a proportion of requests
    # Over its limit with the run's confidence at this check taken alone (no allowance for repeated
    # looks): not enough to fail, too much to pass when the bake time ends.
    over_limit_at_this_check: bool = False

    def as_json(self) -> dict[str, object]:
        """JSON-ready form for the verdict file (NaN and infinities become null)."""
        return {
            "metric": self.metric,
            "phase": self.phase.value,
            "value": finite_or_none(self.value),
            "threshold": finite_or_none(self.threshold),
            "samples": self.samples,
            "detail": self.detail,
            "over_limit_at_this_check": self.over_limit_at_this_check,
        }


@dataclass(frozen=True)
class CheckOutcome:
    """All metric outcomes of one check."""

    index: int
    elapsed_s: float
    canary_requests: int  # canary requests counted since the analysis started (for --min-requests)
    metrics: tuple[MetricOutcome, ...] = field(default_factory=tuple)

    def with_phase(self, *phases: Phase) -> list[MetricOutcome]:
        """The metric outcomes in any of `phases`."""
        return [outcome for outcome in self.metrics if outcome.phase in phases]

    @property
    def summary(self) -> str:
        """One word for the log: the worst phase of this check."""
        for phase in (Phase.FAILED, Phase.ERROR, Phase.MULTIPLE, Phase.BREACH, Phase.NAN, Phase.NO_DATA,
                      Phase.SUSPECT):
            if self.with_phase(phase):
                return phase.value
        return Phase.OK.value


class Step(str, Enum):
    """What the run does after a check."""

    CONTINUE = "continue"
    DECIDED = "decided"


@dataclass(frozen=True)
class Decision:
    """The run-level decision after a check: keep going, or a verdict with its reason and evidence."""

    step: Step
    verdict: Verdict | None = None  # set exactly when step is DECIDED
    reason: str = ""
    failed_check: MetricOutcome | None = None  # the evidence, for verdict fail on a metric

    @classmethod
    def keep_going(cls) -> Decision:
        """No verdict yet."""
        return cls(Step.CONTINUE)

    @classmethod
    def decide(cls, verdict: Verdict, reason: str, failed_check: MetricOutcome | None = None) -> Decision:
        """A verdict, with a one-sentence reason and (for fail) the metric that failed."""
        return cls(Step.DECIDED, verdict, reason, failed_check)


def finite_or_none(value: float) -> float | None:
    """The value, or None for NaN and infinities (JSON has no NaN)."""
    return value if math.isfinite(value) else None
