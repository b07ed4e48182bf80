"""The demo's scenarios, and the signal a scenario's fault shows in Prometheus: query, threshold, paging alert.

`faulty` fails requests (HTTP 500, or gRPC UNAVAILABLE) and shows in the canary's error rate; `slow`
adds latency and shows in its p99; `down` stops the canary app, whose requests then fail in the callers'
proxies (503 UH) and show in the error rate too; `healthy` has no fault (its runs watch the error rate:
a false rollback would show there). The demo's timeline, the experiment's plot and plain-rule replay,
and the manual baseline's alert all follow the one signal `scenario_signal` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollguard.sandbox.alert_rules import ERROR_ALERT, LATENCY_ALERT, AlertSettings, error_rate_expr, p99_expr

SCENARIOS = ("faulty", "slow", "down", "healthy")
FAULTY_SCENARIOS = ("faulty", "slow", "down")  # a fault is injected on purpose (and persists until the cut)


@dataclass(frozen=True)
class ScenarioSignal:
    """The canary query a scenario's fault drives over its threshold, the value's unit, and the alert on it."""

    query: str
    threshold: float
    unit: str  # "fraction" (share of failed requests) or "ms" (p99 latency)
    alert_name: str

    def alert_firing_query(self) -> str:
        """PromQL that returns a series while the paging alert fires."""
        return f'ALERTS{{alertname="{self.alert_name}",alertstate="firing"}}'


def scenario_signal(scenario: str, alert: AlertSettings) -> ScenarioSignal:
    """The signal of `scenario`: p99 latency for `slow`, the error rate otherwise (thresholds of `alert`)."""
    if scenario == "slow":
        return ScenarioSignal(p99_expr(alert), alert.max_p99_ms, "ms", LATENCY_ALERT)
    return ScenarioSignal(error_rate_expr(alert), alert.max_error_rate, "fraction", ERROR_ALERT)
