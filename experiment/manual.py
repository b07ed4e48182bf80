"""Manual mode: the proposal's baseline. The fault starts, the alert fires, a person reverts by hand.

The sandbox runs with the faulty canary at 10 % and no automation. The command shows the alert when
it fires and waits (bounded) until the router sends 0 % to the canary, however the person got there:
`rollguard rollback`, `git revert` + push, or an edit of k8s/istio.yml pushed to the sandbox's remote.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from rollguard.experiment.records import RunRecord
from rollguard.sandbox.demo_settings import DemoSettings
from rollguard.sandbox.environment import Sandbox, start_sandbox
from rollguard.sandbox.loadgen import read_responses
from rollguard.sandbox.processes import SandboxError, Supervisor
from rollguard.sandbox.prometheus_queries import PrometheusQueryError, instant
from rollguard.sandbox.run_timeline import breach_and_alert
from rollguard.sandbox.scenarios import FAULTY_SCENARIOS, ScenarioSignal, scenario_signal
from rollguard.steps.options import format_duration


def revert_instructions(sandbox: Sandbox) -> str:
    """What the person on call can type to put all traffic back on stable."""
    settings = sandbox.settings
    return (
        f"  rollguard rollback --repo {sandbox.remote.url} --path {settings.manifest_path} "
        f"--virtual-service {settings.virtual_service} --stable-subset {settings.stable_subset} "
        f"--canary-subset {settings.canary_subset} --git-author 'you <you@example.com>'\n"
        f"  or: git clone {sandbox.remote.url} work && cd work && git revert --no-edit HEAD && git push"
        f"   (or edit {settings.manifest_path}: {settings.stable_subset} 100, {settings.canary_subset} 0)"
    )


def _alert_firing(sandbox: Sandbox, signal: ScenarioSignal) -> bool:
    try:
        return bool(instant(sandbox.prometheus_url, signal.alert_firing_query()))
    except PrometheusQueryError:
        return False


def _cut_time(sandbox: Sandbox, since: float) -> tuple[float, str] | None:
    view = sandbox.weights()
    for change in view.get("changes", []):
        if change["applied_at"] >= since and int(change["canary"]) == 0:
            return float(change["applied_at"]), str(change["commit"])
    return None


def run_manual(index: int, settings: DemoSettings, timeout_s: float, console: Console) -> RunRecord:
    """One manual run: fault, alert, a person's revert; returns the run's record."""
    if settings.scenario not in FAULTY_SCENARIOS:
        raise SandboxError("manual mode measures a person reverting a broken canary: use --scenario faulty, slow "
                           "or down")
    run_dir = settings.report_dir / f"manual-{index}-{time.strftime('%Y%m%d-%H%M%S')}"
    sandbox_settings = settings.sandbox_settings(run_dir / "sandbox", seed=settings.seed + index)
    signal = scenario_signal(settings.scenario, sandbox_settings.alert)
    with Supervisor(run_dir / "logs") as supervisor:
        sandbox = start_sandbox(sandbox_settings, supervisor)
        if settings.background_error_rate > 0:
            sandbox.set_background_errors(settings.background_error_rate)
        responses_path = run_dir / "responses.csv"
        sandbox.start_load(settings.rps, responses_path)
        sandbox.wait_for_traffic()
        behaviour = settings.behaviour()
        if behaviour is None:  # down: the canary app is stopped
            fault_start = sandbox.take_canary_down()
        else:
            fault_start = sandbox.set_canary(behaviour)
        console.print(f"[bold red]run {index}: the canary is broken now[/] ({behaviour or 'down'}); it gets "
                      f"{sandbox.weights().get('canary')} % of the traffic. Wait for the alert "
                      f"(for: {format_duration(settings.alert_for_s)}), then revert by hand, for example:")
        console.print(revert_instructions(sandbox), markup=False)
        deadline = time.monotonic() + timeout_s
        alert_seen: float | None = None
        cut: tuple[float, str] | None = None
        while cut is None:
            if time.monotonic() > deadline:
                break
            supervisor.check()
            if alert_seen is None and _alert_firing(sandbox, signal):
                alert_seen = time.time()
                console.print(f"[bold magenta]ALERT {signal.alert_name} FIRING[/] "
                              f"({alert_seen - fault_start:.1f} s after the fault): revert now")
            cut = _cut_time(sandbox, fault_start)
            time.sleep(0.25)
        time.sleep(2 * settings.scrape_interval_s + 0.5)  # let Prometheus scrape past the cut
        sandbox.stop_load()
        end = time.time()
        breach, alert_firing = breach_and_alert(settings, sandbox, fault_start, end)
        responses = read_responses(responses_path)
        until = cut[0] if cut else end
        failed = sum(1 for response in responses if fault_start <= response.sent_at <= until and response.failed)
        push = None
        if cut is not None:
            push = next((p.at for p in sandbox.remote.pushes() if p.new == cut[1]), None)
    return RunRecord(
        run=index, scenario=settings.scenario, outcome="rolled_back" if cut else "no_cut", mode="manual", judge="",
        fault_start=fault_start, first_breach=breach, alert_firing=alert_firing, verdict_at=None, git_push=push,
        traffic_cut=cut[0] if cut else None, failed_requests=failed,
        total_requests=sum(1 for response in responses if response.sent_at >= fault_start),
        notes="" if cut else f"no revert within {format_duration(timeout_s)}",
        extra={"run_dir": str(Path(run_dir))},
    )



