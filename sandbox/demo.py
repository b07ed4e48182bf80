"""Run a whole canary release in the local sandbox: Git remote, apps, router, Prometheus, load, workflow.

The scenario decides the canary: `faulty` answers HTTP 500 at --error-rate, `slow` adds --latency-ms
(p99 above 500 ms), `healthy` behaves. The rendered `canary-release` WorkflowTemplate runs through
the local executor; progress (steps, checks, weight changes) is shown as it happens. Everything
started is stopped at the end, on Ctrl-C and on errors. The run's timeline is appended to
REPORT_DIR/results.json (fault start, first breach, alert firing, verdict, push, traffic cut,
failed user requests).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from rollguard.sandbox.alert_rules import ERROR_ALERT, LATENCY_ALERT, AlertSettings, error_rate_expr, p99_expr
from rollguard.sandbox.demo_app import Behaviour, describe
from rollguard.sandbox.environment import ROUTER_JOB, Sandbox, SandboxSettings, start_sandbox
from rollguard.sandbox.executor.errors import ExecutorAborted, ExecutorError
from rollguard.sandbox.executor.loader import Library
from rollguard.sandbox.executor.runner import Event, EventKind, LocalExecutor, Phase, WorkflowResult
from rollguard.sandbox.loadgen import Response, read_responses
from rollguard.sandbox.processes import ChildDied, SandboxError, Supervisor, install_signal_handlers
from rollguard.sandbox.prometheus_queries import PrometheusQueryError, first_scrape_above, series_range
from rollguard.sandbox.results import Outcome, RunResult, append_result
from rollguard.sandbox.run_local import load_library
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.options import (
    UsageError,
    add_flag,
    format_duration,
    fraction,
    non_negative_float,
    non_negative_int,
    parse_duration,
    positive_duration,
)
from rollguard.steps.schedule import parse_schedule

SCENARIOS = ("faulty", "slow", "healthy")
RELEASE_TEMPLATE = "canary-release"
WORKFLOW_FILE = "canary-release.yaml"


@dataclass(frozen=True)
class DemoSettings:
    """Everything one demo run needs, from the command line."""

    scenario: str
    report_dir: Path
    rps: float
    interval_s: float
    analysis_duration_s: float
    window_s: float
    schedule: str
    min_requests: int
    max_error_rate: float
    max_p99_ms: float
    error_rate: float
    latency_ms: float
    alert_for_s: float
    sync_delay_s: float
    scrape_interval_s: float
    seed: int
    workflow_dir: Path | None = None
    router_port: int | None = None
    background_error_rate: float = 0.0
    judge: str = "statistical"

    def sandbox_settings(self, workdir: Path, seed: int | None = None) -> SandboxSettings:
        """The sandbox these settings run in: scrape, sync delay, router port, and the paging alerts."""
        alert = AlertSettings(window=format_duration(self.window_s), max_error_rate=self.max_error_rate,
                              max_p99_ms=self.max_p99_ms, for_s=self.alert_for_s)
        return SandboxSettings(workdir=workdir, scrape_interval_s=self.scrape_interval_s,
                               sync_delay_s=self.sync_delay_s, alert=alert,
                               seed=self.seed if seed is None else seed, router_port=self.router_port)

    def behaviour(self) -> Behaviour | None:
        """The canary's fault in this scenario (None: healthy, no fault)."""
        if self.scenario == "faulty":
            return Behaviour(error_rate=self.error_rate)
        if self.scenario == "slow":
            return Behaviour(error_rate=self.background_error_rate, latency_ms=self.latency_ms)
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard demo`."""
    add_flag(parser, "--scenario", default="faulty", choices=list(SCENARIOS),
             help="faulty: canary answers HTTP 500s; slow: p99 over 500 ms; healthy: promoted to 100 %%")
    add_flag(parser, "--report-dir", type=Path, help="where results.json and the logs go (default ./reports/demo-TIME)")
    add_flag(parser, "--rps", default=50.0, type=non_negative_float, help="user requests per second")
    add_flag(parser, "--interval", default="1s", type=positive_duration, help="analysis interval")
    add_flag(parser, "--analysis-duration", default="20s", type=positive_duration,
             help="bake time of each analysis step (a failure ends it early)")
    add_flag(parser, "--window", default="10s", type=positive_duration, help="PromQL window of the checks and alerts")
    add_flag(parser, "--schedule", default="10,50,100", help="canary weights of the release")
    add_flag(parser, "--min-requests", default=50, type=non_negative_int, help="canary requests needed before a pass")
    add_flag(parser, "--max-error-rate", default=0.01, type=fraction, help="5xx threshold of analysis and alert")
    add_flag(parser, "--max-p99-latency-ms", default=500.0, type=non_negative_float, help="p99 threshold")
    add_flag(parser, "--error-rate", default=0.5, type=fraction, help="share of HTTP 500s of the faulty canary")
    add_flag(parser, "--latency-ms", default=700.0, type=non_negative_float, help="added latency of the slow canary")
    add_flag(parser, "--alert-for", default="1m", type=non_negative_duration,
             help="`for:` of the paging alert rule (what a team would set; the manual baseline's start)")
    add_flag(parser, "--sync-delay", default="0s", type=non_negative_duration,
             help="router's delay before applying a pushed split (30s or 3m emulate ArgoCD polling)")
    add_flag(parser, "--scrape-interval", default="1s", type=positive_duration, help="Prometheus scrape interval")
    add_flag(parser, "--background-error-rate", default=0.0, type=fraction,
             help="share of HTTP 500s that both versions serve all along (noise a healthy canary must survive)")
    add_flag(parser, "--seed", default=7, type=non_negative_int, help="seed of the apps' and router's randomness")
    add_flag(parser, "--router-port", type=int, help="fixed port of the mesh router (default: a free one)")
    add_flag(parser, "--workflow-dir", type=Path,
             help="directory with the rendered canary-release.yaml (default: the installed workflows)")


def non_negative_duration(text: str) -> float:
    """argparse type: a duration that may be zero (`0s`, `30s`, `1m`)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def settings_from(args: argparse.Namespace) -> DemoSettings:
    """DemoSettings from parsed flags (a report dir is made up when none is given)."""
    if args.scenario not in SCENARIOS:
        raise UsageError(f"--scenario {args.scenario!r} does not exist; choose one of {', '.join(SCENARIOS)}")
    if args.rps <= 0:
        raise UsageError("--rps must be greater than zero")
    parse_schedule(args.schedule)  # UsageError naming --schedule
    report_dir = args.report_dir or Path("reports") / time.strftime("demo-%Y%m%d-%H%M%S")
    return DemoSettings(
        scenario=args.scenario, report_dir=report_dir, rps=args.rps, interval_s=args.interval,
        analysis_duration_s=args.analysis_duration, window_s=args.window, schedule=args.schedule,
        min_requests=args.min_requests, max_error_rate=args.max_error_rate, max_p99_ms=args.max_p99_latency_ms,
        error_rate=args.error_rate, latency_ms=args.latency_ms, alert_for_s=args.alert_for,
        sync_delay_s=args.sync_delay, scrape_interval_s=args.scrape_interval, seed=args.seed,
        workflow_dir=args.workflow_dir, router_port=args.router_port,
        background_error_rate=args.background_error_rate,
    )


def workflow_path(settings: DemoSettings) -> Path:
    """The rendered canary-release YAML; SandboxError naming what is missing."""
    if settings.workflow_dir is not None:
        path = settings.workflow_dir / WORKFLOW_FILE
    else:
        path = Path(str(resources.files("rollguard.workflows").joinpath(WORKFLOW_FILE)))
    if not path.is_file():
        raise SandboxError(f"the rendered workflow {path} is missing; render it with `rollguard render` "
                           "(the WorkflowTemplates of rollguard.workflows) or pass --workflow-dir")
    return path


def workflow_parameters(library: Library, settings: DemoSettings, sandbox: Sandbox, run_dir: Path) -> dict[str, str]:
    """The release's parameters for the sandbox; file paths under /tmp go into the run directory."""
    definition = library.get(RELEASE_TEMPLATE, "demo")
    declared = {str(p["name"]): p for p in (definition.spec.get("arguments") or {}).get("parameters") or []}
    sandbox_settings = sandbox.settings
    wanted = {
        "repo": sandbox.remote.url,
        "branch": sandbox_settings.branch,
        "path": sandbox_settings.manifest_path,
        "virtual-service": sandbox_settings.virtual_service,
        "stable-subset": sandbox_settings.stable_subset,
        "canary-subset": sandbox_settings.canary_subset,
        "prometheus-url": sandbox.prometheus_url,
        "namespace": sandbox_settings.namespace,
        "service": sandbox_settings.service,
        "stable-version": sandbox_settings.stable_subset,
        "canary-version": sandbox_settings.canary_subset,
        "interval": format_duration(settings.interval_s),
        "duration": format_duration(settings.analysis_duration_s),
        "window": format_duration(settings.window_s),
        "schedule": settings.schedule,
        "judge": settings.judge,
        "min-requests": str(settings.min_requests),
        "max-error-rate": repr(settings.max_error_rate),
        "max-p99-latency-ms": f"{settings.max_p99_ms:g}",
        "git-author": "rollguard demo <demo@rollguard.invalid>",
        "argocd-app": "",
        "live-patch": "false",
        "verdict-file": str(run_dir / "verdict.json"),
        "result-file": str(run_dir / "step-result.json"),
        "commit-file": str(run_dir / "step-commit.txt"),
    }
    values: dict[str, str] = {}
    for name, parameter in declared.items():
        if name in wanted:
            values[name] = wanted[name]
            continue
        default = str(parameter.get("value", parameter.get("default", "")) or "")
        if default.startswith("/tmp/"):
            values[name] = str(run_dir / Path(default).name)
    missing = [name for name, parameter in declared.items()
               if name not in values and parameter.get("value") is None and parameter.get("default") is None]
    if missing:
        raise SandboxError(f"{RELEASE_TEMPLATE} needs parameter(s) {', '.join(missing)} that the demo does not "
                           "know how to fill; update rollguard.sandbox.demo.workflow_parameters")
    return values


class Progress:
    """Prints the executor's events and the router's weight changes as they happen."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()

    def event(self, event: Event) -> None:
        """Executor event sink."""
        with self._lock:
            if event.kind is EventKind.STARTED:
                self.console.print(f"[bold cyan]▶ {event.step}[/] [dim]{_short_command(event.text)}[/]")
            elif event.kind is EventKind.LOG:
                line = Text.assemble(("  " + event.step.rsplit(".", 1)[-1] + ": ", "dim"), _strip_stamp(event.text))
                self.console.print(line, soft_wrap=True)
            elif event.kind is EventKind.FINISHED:
                style = "green" if event.node and event.node.phase is Phase.SUCCEEDED else "red"
                self.console.print(Text(f"■ {event.step}: {event.text}", style=style), soft_wrap=True)
            elif event.kind is EventKind.SKIPPED:
                self.console.print(f"[dim]· {event.step} skipped[/]")

    def say(self, text: str) -> None:
        """A line of the demo's own narration."""
        with self._lock:
            self.console.print(text, highlight=False)


def _short_command(text: str) -> str:
    parts = text.split()
    return " ".join(parts[:2]) if parts and parts[0] == "rollguard" else text[:80]


def _strip_stamp(line: str) -> str:
    # "2026-11-26T08:00:00.123Z analyze INFO text" -> "INFO text" (the step name is already shown)
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[0].endswith("Z") and "T" in parts[0]:
        return parts[2]
    return line


class WeightWatcher(threading.Thread):
    """Polls the router's admin endpoint and narrates every applied weight change."""

    def __init__(self, sandbox: Sandbox, progress: Progress) -> None:
        super().__init__(name="weight-watcher", daemon=True)
        self.sandbox = sandbox
        self.progress = progress
        self.stopped = threading.Event()
        self.seen = 0

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                changes = list(self.sandbox.weights()["changes"])  # type: ignore[arg-type]
            except SandboxError:
                continue
            for change in changes[self.seen:]:
                if self.seen:
                    self.progress.say(f"[bold magenta]⇄ router: {change['stable']} % stable / {change['canary']} % "
                                      f"canary[/] (commit {str(change['commit'])[:10]})")
            self.seen = len(changes)


def run_release(
    sandbox: Sandbox, library: Library, parameters: dict[str, str], progress: Progress
) -> WorkflowResult:
    """Run canary-release in a worker thread while watching the sandbox; abort it if a component dies."""
    executor = LocalExecutor(library, on_event=progress.event)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = executor.run(RELEASE_TEMPLATE, parameters)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="workflow", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
            sandbox.supervisor.check()
    except BaseException as exc:
        executor.abort(str(exc) or type(exc).__name__)
        worker.join(15)
        raise
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, ExecutorAborted):
            raise SandboxError(str(error))
        if isinstance(error, ExecutorError):
            raise SandboxError(f"{RELEASE_TEMPLATE} cannot run locally: {error}")
        raise error
    return outcome["result"]


def wait_router_synced(sandbox: Sandbox, deadline_s: float) -> dict[str, Any]:
    """Wait until the router routes by the remote's head commit; return its admin view."""
    head = sandbox.remote.head()
    deadline = time.monotonic() + deadline_s
    view = sandbox.weights()
    while time.monotonic() < deadline and view.get("commit") != head:
        sandbox.supervisor.check()
        time.sleep(0.1)
        view = sandbox.weights()
    return dict(view)


def _read_verdict(path: Path) -> dict[str, Any]:
    from rollguard.steps import verdict_document

    reading = verdict_document.read_file(path)
    return reading.to_json() if isinstance(reading, verdict_document.VerdictDocument) else {}


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
                  "max_p99_latency_ms": settings.max_p99_ms},
    )


def breach_and_alert(settings: DemoSettings, sandbox: Sandbox, start: float, end: float) -> tuple[float | None,
                                                                                                  float | None]:
    """First time the scenario's threshold query exceeded its threshold, and the alert's first firing."""
    alert = sandbox.settings.alert
    if settings.scenario == "slow":
        query, threshold, alert_name = p99_expr(alert), settings.max_p99_ms, LATENCY_ALERT
    else:
        query, threshold, alert_name = error_rate_expr(alert), settings.max_error_rate, ERROR_ALERT
    step = max(settings.scrape_interval_s / 4, 0.1)
    try:
        first_breach = first_scrape_above(sandbox.prometheus_url, ROUTER_JOB, query, threshold, start, end)
        firing = series_range(sandbox.prometheus_url, f'ALERTS{{alertname="{alert_name}",alertstate="firing"}}',
                              start, end + 1, step)
    except PrometheusQueryError as exc:
        raise SandboxError(f"reading the run's timeline from Prometheus failed: {exc}") from None
    return first_breach, (firing[0].at if firing else None)


def _number(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(console: Console, result: RunResult, results_path: Path) -> None:
    """The short summary: outcome, breach -> cut, fault -> cut, failed requests."""
    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    def relative(value: float | None) -> str:
        base = result.fault_start if result.fault_start is not None else result.release_start
        return "—" if value is None else f"+{value - base:.2f} s"

    table = Table(title=f"rollguard demo — scenario {result.scenario}", show_header=False)
    outcome_text = {"rolled_back": "[bold red]rolled back[/]", "promoted": "[bold green]promoted to 100 %[/]",
                    "incomplete": "[bold yellow]incomplete[/]"}[result.outcome.value]
    table.add_row("outcome", outcome_text)
    table.add_row("verdict", f"{result.verdict or '—'}" + (
        f" ({result.failed_check.get('metric')} = {_number(result.failed_check.get('value'))}, threshold "
        f"{_number(result.failed_check.get('threshold'))})" if isinstance(result.failed_check, dict) else ""))
    table.add_row("first threshold breach → traffic cut", seconds(result.breach_to_cut_s()))
    table.add_row("fault start → traffic cut", seconds(result.fault_to_cut_s()))
    table.add_row("failed user requests", str(result.failed_requests))
    for label, value in (("first breach", result.first_breach), ("alert firing", result.alert_firing),
                         ("verdict", result.verdict_at), ("git push", result.git_push),
                         ("traffic cut", result.traffic_cut)):
        table.add_row(f"  {label}", relative(value))
    console.print(table)
    if result.alert_firing is None and result.fault_start is not None:
        console.print(f"[dim]The paging alert (for: {format_duration(result.settings['alert_for_s'])}) had not fired "
                      "by the end of the run: a human would not have been paged yet.[/]")
    console.print(f"results: {results_path}")


def run_demo(
    settings: DemoSettings, console: Console, inspect: Callable[[Sandbox, RunResult], None] | None = None
) -> RunResult:
    """One whole demo run; everything started is stopped before it returns or raises.

    `inspect` (the experiment's hook) is called with the still-running sandbox and the collected result,
    so it can read more from Prometheus before everything stops.
    """
    run_dir = settings.report_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{settings.scenario}"
    run_dir.mkdir(parents=True, exist_ok=True)
    template_file = workflow_path(settings)
    try:
        library, _ = load_library(template_file, [])
    except (ExecutorError, UsageError) as exc:
        raise SandboxError(f"the workflow {template_file} cannot run locally: {exc}") from None
    progress = Progress(console)
    sandbox_settings = settings.sandbox_settings(run_dir / "sandbox")
    with Supervisor(run_dir / "logs") as supervisor:
        progress.say(f"[bold]Starting the sandbox[/] (logs in {run_dir / 'logs'})")
        sandbox = start_sandbox(sandbox_settings, supervisor)
        for name, url in sandbox.urls().items():
            progress.say(f"  {name:13} {url}")
        parameters = workflow_parameters(library, settings, sandbox, run_dir)
        responses_path = run_dir / "responses.csv"
        if settings.background_error_rate > 0:
            sandbox.set_background_errors(settings.background_error_rate)
            progress.say(f"Background noise: both versions answer {settings.background_error_rate:.1%} with HTTP 500")
        sandbox.start_load(settings.rps, responses_path)
        progress.say(f"Load: {settings.rps:g} requests/s through the router; waiting until Prometheus sees both "
                     "versions")
        sandbox.wait_for_traffic()
        behaviour = settings.behaviour()
        fault_start = None
        if behaviour is not None:
            fault_start = sandbox.set_canary(behaviour)
            progress.say(f"[bold red]Fault injected[/] into the canary: {describe(behaviour)}")
        progress.say(f"[bold]Running {RELEASE_TEMPLATE}[/] with the local executor (schedule {settings.schedule})")
        watcher = WeightWatcher(sandbox, progress)
        watcher.start()
        release_start = time.time()
        try:
            workflow = run_release(sandbox, library, parameters, progress)
            release_end = time.time()
            router_view = wait_router_synced(sandbox, settings.sync_delay_s + 5)
            # The last responses land, and Prometheus scrapes twice more: its rate() over the 5xx series
            # may cross the threshold only after rollguard decided on its own counters.
            time.sleep(2 * settings.scrape_interval_s + 0.5)
        finally:
            watcher.stopped.set()
        supervisor.check()
        sandbox.stop_load()
        verdict = _read_verdict(Path(parameters.get("verdict-file", run_dir / "verdict.json")))
        result = collect_result(settings, sandbox, fault_start, release_start, release_end, router_view,
                                read_responses(responses_path), verdict, workflow)
        if inspect is not None:
            inspect(sandbox, result)
    results_path = append_result(settings.report_dir, result)
    print_summary(console, result, results_path)
    if workflow.phase is not Phase.SUCCEEDED:
        console.print(Text(f"workflow ended {workflow.phase.value}: {workflow.message}", style="yellow"))
    return result


def run(args: argparse.Namespace) -> int:
    """`rollguard demo`: 0 when the release ended as the scenario expects, 1 when not, 4 on a fault."""
    settings = settings_from(args)
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    install_signal_handlers()
    try:
        result = run_demo(settings, console)
    except ChildDied as exc:
        errors.print(Text.assemble(("rollguard demo: a sandbox component died: ", "bold red"),
                                   f"{exc}; everything else was stopped"))
        return ExitCode.ERROR
    except SandboxError as exc:
        errors.print(Text.assemble(("rollguard demo: error: ", "bold red"), f"{exc}; everything started was stopped"))
        return ExitCode.ERROR
    expected = Outcome.PROMOTED if settings.scenario == "healthy" else Outcome.ROLLED_BACK
    if result.outcome is not expected:
        errors.print(f"[bold red]rollguard demo: expected the release to end {expected.value}, it ended "
                     f"{result.outcome.value}[/]")
        return ExitCode.FAIL
    return ExitCode.OK
