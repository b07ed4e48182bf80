"""Run a whole canary release in the local sandbox: Git remote, apps, router, Prometheus, load, workflow.

The scenario decides the canary: `faulty` fails requests at --error-rate (HTTP 500, or UNAVAILABLE with
`--protocol grpc`), `slow` adds --latency-ms (p99 above 500 ms), `down` stops the canary app (the router
then answers its requests 503 UH, as callers' sidecars do), `healthy` behaves. The rendered
`canary-release` WorkflowTemplate runs through the local executor; progress (steps, checks, weight
changes) is shown as it happens. Everything started is stopped at the end, on Ctrl-C and on errors.
The run's timeline is appended to REPORT_DIR/results.json (fault start, first breach, alert firing,
verdict, push, traffic cut, failed user requests).

This module runs the release; its flags and settings are in demo_settings, the terminal output in
demo_console, the timeline in run_timeline.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from rollguard.sandbox.demo_app import describe
from rollguard.sandbox.demo_console import Progress, WeightWatcher, print_summary
from rollguard.sandbox.demo_settings import DemoSettings, settings_from
from rollguard.sandbox.demo_settings import add_arguments as add_arguments  # `rollguard demo`'s flags
from rollguard.sandbox.environment import Sandbox, start_sandbox
from rollguard.sandbox.executor.errors import ExecutorAborted, ExecutorError
from rollguard.sandbox.executor.loader import Library
from rollguard.sandbox.executor.local_cluster import LocalCluster
from rollguard.sandbox.executor.metrics import RemoteMetrics
from rollguard.sandbox.executor.nodes import Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.sandbox.git_http_remote import GitHttpRemote
from rollguard.sandbox.loadgen import read_responses
from rollguard.sandbox.processes import ChildDied, SandboxError, Supervisor, install_signal_handlers
from rollguard.sandbox.results import Outcome, RunResult, append_result
from rollguard.sandbox.run_local import load_library
from rollguard.sandbox.run_timeline import collect_result
from rollguard.sandbox.step_image import StepImage, StepImageError, open_step_image
from rollguard.sandbox.step_image_run import ImageSteps
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.options import UsageError, format_duration

RELEASE_TEMPLATE = "canary-release"
WORKFLOW_FILE = "canary-release.yaml"
ROLLBACK_IN_ANALYSIS = "rollback-in-analysis"  # the workflow parameter of analyze's own, in-process rollback


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


def release_switches(library: Library, settings: DemoSettings) -> dict[str, str]:
    """The workflow parameters the demo's switches ask for: `rollback-in-analysis` when --rollback-in-analysis was
    given and the template declares it. UsageError, before anything starts, for `true` against a template without
    it (it cannot roll back in analyze); `false` there is what that template does anyway, so nothing is passed."""
    if settings.rollback_in_analysis is None:
        return {}
    definition = library.get(RELEASE_TEMPLATE, "demo")
    declared = {str(p["name"]) for p in (definition.spec.get("arguments") or {}).get("parameters") or []}
    if ROLLBACK_IN_ANALYSIS in declared:
        return {ROLLBACK_IN_ANALYSIS: settings.rollback_in_analysis}
    if settings.rollback_in_analysis == "true":
        where = settings.workflow_dir or "the installed workflows"
        raise UsageError(f"--rollback-in-analysis true: the workflow {RELEASE_TEMPLATE} ({where}) declares no "
                         f"parameter {ROLLBACK_IN_ANALYSIS}, so its analyze step cannot roll back itself; render a "
                         "template that has it or pass --rollback-in-analysis false")
    return {}


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
        "notify-url": settings.notify_url,
        "notify-format": settings.notify_format,
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


def run_release(
    sandbox: Sandbox, library: Library, parameters: dict[str, str], progress: Progress, run_dir: Path,
    image: ImageSteps | None = None, pod_start_delay_s: float = 0.0,
) -> WorkflowResult:
    """Run canary-release in a worker thread while watching the sandbox; abort it if a component dies.

    Each container step waits `pod_start_delay_s` before it starts (--pod-start-delay), as a pod start would."""
    # The sandbox is its own cluster: its mutexes are its own (a parallel demo is another cluster)
    # Its template metrics go to the sandbox's stand-in of the controller's /metrics, which Prometheus scrapes.
    metrics = RemoteMetrics(sandbox.workflow_metrics_url) if sandbox.workflow_metrics_url else None
    executor = LocalExecutor(library, on_event=progress.event, work_dir=run_dir / "pods",
                             cluster=LocalCluster(lock_dir=run_dir / "locks"), image=image, metrics=metrics,
                             pod_start_delay_s=pod_start_delay_s)
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


def _image_steps(
    image: StepImage, sandbox: Sandbox, run_dir: Path, parameters: dict[str, str], stack: ExitStack
) -> ImageSteps:
    """Steps in the image push over HTTP (as to a Git server) and write their files into `run_dir`."""
    parameters["repo"] = stack.enter_context(GitHttpRemote(sandbox.remote.path)).url
    uid, gid = (int(part) for part in image.user.split(":", 1))
    os.chown(run_dir, uid, gid)
    return ImageSteps(image, binds=[run_dir])


def _read_verdict(path: Path) -> dict[str, Any]:
    from rollguard.steps import verdict_document

    reading = verdict_document.read_file(path)
    return reading.to_json() if isinstance(reading, verdict_document.VerdictDocument) else {}


def run_demo(
    settings: DemoSettings, console: Console, inspect: Callable[[Sandbox, RunResult], None] | None = None
) -> RunResult:
    """One whole demo run; everything started is stopped before it returns or raises.

    `inspect` (the experiment's hook) is called with the still-running sandbox and the collected result,
    so it can read more from Prometheus before everything stops.
    """
    template_file = workflow_path(settings)
    try:
        library, _ = load_library(template_file, [])
    except (ExecutorError, UsageError) as exc:
        raise SandboxError(f"the workflow {template_file} cannot run locally: {exc}") from None
    switches = release_switches(library, settings)  # UsageError before anything starts
    # Absolute: the steps run in pod directories of their own (and in the image at the same path), so a path
    # relative to this process's working directory would point elsewhere for them.
    run_dir = (settings.report_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{settings.scenario}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:  # --step-image: checked (root, archive, entry point) and unpacked before anything starts
        image = open_step_image(settings.step_image) if settings.step_image else None
    except StepImageError as exc:
        raise SandboxError(str(exc)) from None
    progress = Progress(console)
    sandbox_settings = settings.sandbox_settings(run_dir / "sandbox")
    with Supervisor(run_dir / "logs") as supervisor, ExitStack() as stack:
        progress.say(f"[bold]Starting the sandbox[/] (logs in {run_dir / 'logs'})")
        sandbox = start_sandbox(sandbox_settings, supervisor)
        for name, url in sandbox.urls().items():
            progress.say(f"  {name:13} {url}")
        parameters = {**workflow_parameters(library, settings, sandbox, run_dir), **switches}
        image_steps = None if image is None else _image_steps(image, sandbox, run_dir, parameters, stack)
        if image_steps is not None:
            progress.say(f"Steps run in the step image {settings.step_image} as uid {image_steps.image.user}, "
                         f"Git over {parameters['repo']}")
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
            progress.say(f"[bold red]Fault injected[/] into the canary: {describe(behaviour, settings.protocol)}")
        elif settings.scenario == "down":
            fault_start = sandbox.take_canary_down()
            progress.say("[bold red]The canary app is down[/] (stopped, never comes back): callers' proxies answer "
                         "its share of requests 503 UH, no healthy upstream")
        pod_start = (f", each step's pod starting in {format_duration(settings.pod_start_delay_s)}"
                     if settings.pod_start_delay_s else "")
        progress.say(f"[bold]Running {RELEASE_TEMPLATE}[/] with the local executor (schedule {settings.schedule}"
                     f"{pod_start})")
        watcher = WeightWatcher(sandbox, progress)
        watcher.start()
        release_start = time.time()
        try:
            workflow = run_release(sandbox, library, parameters, progress, run_dir, image_steps,
                                   settings.pod_start_delay_s)
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
        # A rolled-back release ends Failed on purpose (fail-on-rollback): its message says why.
        style = "" if "canary rolled back:" in workflow.message else "yellow"
        console.print(Text(f"workflow ended {workflow.phase.value}: {workflow.message}", style=style))
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
