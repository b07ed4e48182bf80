"""A run's timeline, assembled after the release: router change log, push log, Prometheus, load records.

The moments (fault start, first breach, alert firing, verdict, push, cut) and the failed user
requests between fault and cut make the run's RunResult. Prometheus's own view follows the
scenario's signal (rollguard.sandbox.scenarios): the first scrape at which the threshold query
exceeded its threshold, and the first time the paging alert fired.
"""

from __future__ import annotations

import time
from typing import Any

from rollguard.sandbox.demo_settings import DemoSettings
from rollguard.sandbox.environment import ROUTER_JOB, Sandbox
from rollguard.sandbox.executor.nodes import WorkflowResult
from rollguard.sandbox.loadgen import Response
from rollguard.sandbox.processes import SandboxError
from rollguard.sandbox.prometheus_queries import PrometheusQueryError, first_scrape_above, series_range
from rollguard.sandbox.results import Outcome, RunResult
from rollguard.sandbox.scenarios import scenario_signal


def collect_result(
    settings: DemoSettings, sandbox: Sandbox, fault_start: float | None, release_start: float,
    release_end: float, router_view: dict[str, Any], responses: list[Response], verdict: dict[str, Any],
    workflow: WorkflowResult,
) -> RunResult:
    """Assemble the run's timeline from the router, the remote's push log, Prometheus and the load records."""
    changes = [c for c in router_view.get("changes", []) if c["applied_at"] >= release_start]
    final = (int(router_view.get("stable", -1)), int(router_view.get("canary", -1)))
    if final[1] == 0:
        outcome = Outcome.ROLLED_BACK
    elif final[1] == 100:
        outcome = Outcome.PROMOTED
    else:
        outcome = Outcome.INCOMPLETE
    cut = next((c for c in changes if c["canary"] == 0), None)
    traffic_cut = cut["applied_at"] if cut else None
    git_push = None
    if cut is not None:
        git_push = next((p.at for p in sandbox.remote.pushes() if p.new == cut["commit"]), None)
    elif outcome is Outcome.PROMOTED and changes:
        git_push = next((p.at for p in sandbox.remote.pushes() if p.new == changes[-1]["commit"]), None)
    start = fault_start if fault_start is not None else release_start
    until = traffic_cut if traffic_cut is not None else release_end
    window_responses = [r for r in responses if start <= r.sent_at <= until]
    failed = sum(1 for r in window_responses if r.failed)
    first_breach, alert_firing = breach_and_alert(settings, sandbox, start, time.time())
    return RunResult(
        scenario=settings.scenario, outcome=outcome, fault_start=fault_start, first_breach=first_breach,
        alert_firing=alert_firing, verdict_at=verdict.get("decided_at"), git_push=git_push, traffic_cut=traffic_cut,
        failed_requests=failed, release_start=release_start, release_end=release_end,
        verdict=verdict.get("verdict"), failed_check=verdict.get("failed_check"),
        judge=str((verdict.get("settings") or {}).get("judge", "")),
        total_requests=len([r for r in responses if r.sent_at >= start]),
        canary_requests=sum(1 for r in responses if r.sent_at >= start and r.version == sandbox.settings.canary_subset),
        slow_requests=sum(1 for r in window_responses if r.duration_ms > settings.max_p99_ms),
        final_split=final, workflow_phase=workflow.phase.value,
        settings={"rps": settings.rps, "interval_s": settings.interval_s, "schedule": settings.schedule,
                  "analysis_duration_s": settings.analysis_duration_s, "window_s": settings.window_s,
                  "error_rate": settings.error_rate, "latency_ms": settings.latency_ms,
                  "alert_for_s": settings.alert_for_s, "sync_delay_s": settings.sync_delay_s,
                  "scrape_interval_s": settings.scrape_interval_s, "max_error_rate": settings.max_error_rate,
                  "max_p99_latency_ms": settings.max_p99_ms, "protocol": settings.protocol,
                  "pod_start_delay_s": settings.pod_start_delay_s,
                  "rollback_in_analysis": settings.rollback_in_analysis},
    )


def breach_and_alert(settings: DemoSettings, sandbox: Sandbox, start: float, end: float) -> tuple[float | None,
                                                                                                  float | None]:
    """First time the scenario's threshold query exceeded its threshold, and the alert's first firing."""
    signal = scenario_signal(settings.scenario, sandbox.settings.alert)
    step = max(settings.scrape_interval_s / 4, 0.1)
    try:
        first_breach = first_scrape_above(sandbox.prometheus_url, ROUTER_JOB, signal.query, signal.threshold,
                                          start, end)
        firing = series_range(sandbox.prometheus_url, signal.alert_firing_query(), start, end + 1, step)
    except PrometheusQueryError as exc:
        raise SandboxError(f"reading the run's timeline from Prometheus failed: {exc}") from None
    return first_breach, (firing[0].at if firing else None)
