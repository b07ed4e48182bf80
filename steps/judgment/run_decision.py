"""The run-level decision: from each check's outcomes and the run's counts to continue / a verdict.

Order of precedence at each check: a decisive failure; the failure limit of breached checks; the
error budget (--on-error); missing data (--on-no-data); then, once the bake time is over, pass only
with enough canary requests and every metric judged (no missing data, no errors in the last check).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rollguard.steps.judgment.outcomes import CheckOutcome, Decision, MetricOutcome, Phase, Policy, Verdict
from rollguard.steps.judgment.threshold import FailureCounter


@dataclass(frozen=True)
class RunLimits:
    """Limits of the whole analysis."""

    duration_s: float
    min_requests: int
    failure_limit: int
    consecutive: bool
    max_consecutive_errors: int
    on_no_data: Policy
    on_error: Policy


@dataclass
class RunJudge:
    """Keeps the run's counts across checks and turns each check into a Decision."""

    limits: RunLimits
    failures: FailureCounter = field(init=False)
    consecutive_errors: int = 0

    def __post_init__(self) -> None:
        self.failures = FailureCounter(self.limits.failure_limit, self.limits.consecutive)

    def observe(self, check: CheckOutcome) -> Decision:
        """Take one check into account and say whether the analysis is decided."""
        failed = check.with_phase(Phase.FAILED)
        if failed:
            first = failed[0]
            return Decision.decide(Verdict.FAIL, f"{first.metric} failed: {first.detail}", first)

        breached = check.with_phase(Phase.BREACH)
        errors = [outcome for outcome in check.metrics if outcome.phase.is_error]
        missing = [outcome for outcome in check.metrics if outcome.phase.is_missing_data]
        if breached:
            self.failures.record_failed()
            if self.failures.reached:
                first = breached[0]
                how = "in a row" if self.limits.consecutive else "in total"
                return Decision.decide(
                    Verdict.FAIL,
                    f"{first.metric} = {first.value:g} breached its limit {first.threshold:g} "
                    f"({self.failures.counted} failed checks {how}, limit {self.limits.failure_limit}): {first.detail}",
                    first,
                )
        elif not errors and not missing:
            self.failures.record_ok()

        if errors:
            self.consecutive_errors += 1
            if self.consecutive_errors > self.limits.max_consecutive_errors:
                decided = _apply_policy(
                    self.limits.on_error,
                    f"{self.consecutive_errors} checks in a row could not be judged "
                    f"(budget {self.limits.max_consecutive_errors}): {_describe(errors[0])}",
                    errors[0],
                )
                if decided is not None:
                    return decided
        else:
            self.consecutive_errors = 0

        if missing:
            decided = _apply_policy(self.limits.on_no_data, f"no data: {_describe(missing[0])}", missing[0])
            if decided is not None:
                return decided

        if check.elapsed_s >= self.limits.duration_s:
            return self._final(check, errors, missing)
        return Decision.keep_going()

    def _final(self, check: CheckOutcome, errors: list[MetricOutcome], missing: list[MetricOutcome]) -> Decision:
        """The bake time is over: pass only on complete data from enough canary requests."""
        if errors:
            reason = f"bake time over, last check not judged: {_describe(errors[0])}"
            return Decision.decide(Verdict.INCONCLUSIVE, reason)
        if missing:
            return Decision.decide(Verdict.INCONCLUSIVE, f"bake time over, still no data: {_describe(missing[0])}")
        if check.canary_requests < self.limits.min_requests:
            return Decision.decide(
                Verdict.INCONCLUSIVE,
                f"too little traffic: {check.canary_requests} canary requests during the analysis, "
                f"need at least {self.limits.min_requests} (--min-requests)",
            )
        suspects = check.with_phase(Phase.SUSPECT)
        convincing = [outcome for outcome in suspects if outcome.over_limit_at_this_check]
        if convincing:
            # Not proof over the whole analysis (that is what fails at once), but over the limit with the
            # run's confidence at this last check alone: never a pass. A canary within its limits ends
            # here with probability at most 1 - confidence per metric.
            first = convincing[0]
            return Decision.decide(
                Verdict.INCONCLUSIVE,
                f"bake time over; {first.metric} is over its limit with the run's confidence at the last check, "
                f"though not proven over the whole analysis: {first.detail}",
                first,
            )
        if suspects:
            # An estimate over the limit without that evidence (a handful of errors) passes, and the reason
            # says so (size --min-requests for the power you need).
            return Decision.decide(
                Verdict.PASS,
                f"bake time over with {check.canary_requests} canary requests and no significant breach; note "
                f"{suspects[0].metric} is over its limit but not with the required confidence: {suspects[0].detail}",
            )
        breached = check.with_phase(Phase.BREACH)
        if breached:
            # Under the failure limit: the plain rule passes, as other tools do, but says so.
            return Decision.decide(
                Verdict.PASS,
                f"bake time over with {self.failures.failed} failed checks (limit {self.limits.failure_limit}); "
                f"{check.canary_requests} canary requests",
            )
        return Decision.decide(
            Verdict.PASS,
            f"every metric within its limits after {check.elapsed_s:.1f}s and {check.canary_requests} canary requests",
        )


def _describe(outcome: MetricOutcome) -> str:
    words = {
        Phase.NO_DATA: "the query returned no series",
        Phase.NAN: "the query returned NaN",
        Phase.MULTIPLE: "the query returned several series where one was expected",
        Phase.ERROR: "Prometheus could not be queried",
    }
    text = f"{outcome.metric}: {words.get(outcome.phase, outcome.phase.value)}"
    return f"{text} ({outcome.detail})" if outcome.detail else text


def _apply_policy(policy: Policy, reason: str, evidence: MetricOutcome) -> Decision | None:
    """The decision a policy takes, or None when it says to continue."""
    if policy is Policy.FAIL:
        return Decision.decide(Verdict.FAIL, reason, evidence)
    if policy is Policy.INCONCLUSIVE:
        return Decision.decide(Verdict.INCONCLUSIVE, reason)
    return None
