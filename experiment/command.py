"""Measure rollback times: N runs of a faulty (or healthy) canary, automated or manual, then a report.

Writes results.json, results.csv, report.md and timeline.png into --report-dir. The release flags
(--rps, --interval, --scrape-interval, --sync-delay, --pod-start-delay, --rollback-in-analysis, ...) are the
demo's own; see `rollguard demo --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rollguard.experiment.records import RunRecord, save_results
from rollguard.experiment.report_markdown import render_report
from rollguard.experiment.threshold_replay import ThresholdRule
from rollguard.experiment.timeline_plot import plot_timeline
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.options import (
    UsageError,
    add_flag,
    add_switch,
    env_name,
    positive_duration,
    positive_int,
)

if TYPE_CHECKING:  # imported when a run starts, so that `rollguard experiment --help` starts fast
    from rollguard.sandbox.demo_settings import DemoSettings

SCENARIOS = ("faulty", "slow", "down", "healthy", "mixed")
MODES = ("automated", "manual")
JUDGES = ("statistical", "threshold", "both")
TARGETS = ("sandbox", "cluster")
BACKGROUND_ERROR_RATE = 0.005  # the "little background noise" healthy canaries must survive
_DEMO_ONLY = {"--scenario", "--report-dir", "-h", "--notify-url", "--notify-format"}  # no webhook per experiment run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard experiment` (plus the demo's release flags)."""
    add_flag(parser, "--runs", default=5, type=positive_int, help="number of runs")
    add_flag(parser, "--scenario", default="faulty", choices=list(SCENARIOS),
             help="faulty: failed requests (HTTP 500, gRPC UNAVAILABLE); slow: p99 over the limit; down: the canary "
                  "app stops; healthy: must be promoted; mixed: half faulty, half healthy")
    add_flag(parser, "--mode", default="automated", choices=list(MODES),
             help="automated: rollguard rolls back; manual: a person reverts after the alert")
    add_flag(parser, "--judge", default="statistical", choices=list(JUDGES),
             help="rollguard's judge; both: statistical, plus the plain threshold rule replayed on the same data")
    add_flag(parser, "--target", default="sandbox", choices=list(TARGETS),
             help="sandbox: the local sandbox; cluster: watch a real cluster's Prometheus and VirtualService")
    add_flag(parser, "--report-dir", type=Path, required=True, help="where results and the report go")
    add_flag(parser, "--threshold-interval", type=positive_duration,
             help="interval of the plain threshold rule (--judge both; default: the analysis --interval, so both "
                  "judges look equally often)")
    add_flag(parser, "--threshold-failures", default=3, type=positive_int,
             help="failed checks after which the plain threshold rule fails the canary")
    add_switch(parser, "--threshold-consecutive", help="the plain rule counts only failed checks in a row")
    add_flag(parser, "--manual-timeout", default="30m", type=positive_duration,
             help="manual mode: how long to wait for a person's revert")
    from rollguard.experiment import cluster

    cluster.add_cluster_arguments(parser.add_argument_group("cluster target"))
    _add_release_flags(parser.add_argument_group("release (as in rollguard demo)"))


def _add_release_flags(group: argparse._ArgumentGroup) -> None:
    """Copy the demo's release flags (same names, defaults, types, env variables)."""
    from rollguard.sandbox import demo_settings

    template = argparse.ArgumentParser(add_help=False)
    demo_settings.add_arguments(template)
    for action in template._actions:
        if set(action.option_strings) & _DEMO_ONLY or not action.option_strings:
            continue
        default = action.default
        if action.dest == "background_error_rate" and env_name("--background-error-rate") not in os.environ:
            default = BACKGROUND_ERROR_RATE
        options: dict[str, Any] = {"dest": action.dest, "default": default, "choices": action.choices,
                                   "help": action.help}
        if action.type is not None:
            options["type"] = action.type
        group.add_argument(*action.option_strings, **options)


def check_report_dir(path: Path) -> None:
    """Refuse, before anything starts, a report directory that is a file or cannot be written."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--report-dir {path} is a file; give a directory (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--report-dir {path} is not writable ({exc.strerror}); choose another directory") from None


def base_settings(args: argparse.Namespace, runs_dir: Path) -> DemoSettings:
    """The demo settings every run starts from."""
    from rollguard.sandbox import demo_settings

    values = dict(vars(args))
    values.update(scenario="healthy" if args.scenario == "mixed" else args.scenario, report_dir=runs_dir)
    return demo_settings.settings_from(argparse.Namespace(**values))


def describe_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings written into results.json and report.md."""
    settings = {
        "scenario": args.scenario, "mode": args.mode, "judge": args.judge, "target": args.target, "runs": args.runs,
    }
    if args.target == "sandbox":
        settings.update(
            scrape_interval=f"{args.scrape_interval:g}s", analysis_interval=f"{args.interval:g}s",
            analysis_duration=f"{args.analysis_duration:g}s", window=f"{args.window:g}s",
            router_sync_delay=f"{args.sync_delay:g}s", load=f"{args.rps:g} req/s", schedule=args.schedule,
            max_error_rate=args.max_error_rate, max_p99_latency_ms=args.max_p99_latency_ms,
            faulty_canary_error_rate=args.error_rate, slow_canary_added_latency_ms=args.latency_ms,
            background_error_rate=args.background_error_rate, alert_for=f"{args.alert_for:g}s", seed=args.seed,
            pod_start_delay=f"{args.pod_start_delay:g}s",
            rollback_in_analysis=args.rollback_in_analysis or "the template's default",
        )
        if getattr(args, "step_image", None):  # the demo's --step-image: the steps ran inside the built image
            settings["step_image"] = str(args.step_image)
    else:
        from rollguard.steps.metrics.prometheus_url import redacted

        settings.update(prometheus_url=redacted(args.prometheus_url),  # basic auth never reaches the report
                        virtual_service=f"{args.namespace}/{args.virtual_service}")
    if args.judge == "both":
        settings["threshold_rule"] = (
            f"fail after {args.threshold_failures} failed checks{' in a row' if args.threshold_consecutive else ''}, "
            f"every {args.threshold_interval or args.interval:g}s; checks after rollguard's cut are extrapolated "
            "(the fault persists)"
        )
    return settings


def run(args: argparse.Namespace) -> int:
    """`rollguard experiment`: run, record after every run, then write the report and the plot."""
    from rollguard.steps import logs

    logs.configure("experiment")
    logging.getLogger("rollguard.sandbox").setLevel(logging.WARNING)  # the progress bar tells the story
    from rollguard.sandbox.processes import install_signal_handlers

    install_signal_handlers()  # SIGTERM too ends in KeyboardInterrupt: sandboxes stop, finished runs are kept
    check_report_dir(args.report_dir)
    if args.target == "cluster":
        from rollguard.experiment import cluster

        cluster.check_arguments(args)  # a cluster target without a kube config stops here
    elif args.mode == "manual" and args.judge == "both":
        raise UsageError("--judge both compares rollguard's judge with the plain rule; manual mode has no judge")
    runs_dir = args.report_dir / "runs"
    settings = describe_settings(args)
    records: list[RunRecord] = []
    console = Console(highlight=False, soft_wrap=True)
    interrupted = False
    status = ExitCode.OK
    try:
        for record in _runs(args, runs_dir, console):
            records.append(record)
            save_results(records, args.report_dir, settings)
    except KeyboardInterrupt:
        interrupted, status = True, ExitCode.INTERRUPTED
        console.print("[yellow]interrupted: the report keeps the runs that finished[/]")
    except Exception as exc:  # a sandbox fault: keep what finished, say what happened
        from rollguard.sandbox.processes import SandboxError

        if not isinstance(exc, SandboxError | OSError):
            raise
        interrupted, status = True, ExitCode.ERROR
        console.print(f"[bold red]experiment stopped:[/] {exc}")
    write_report(records, settings, args, interrupted=interrupted)
    console.print(f"report: {args.report_dir / 'report.md'}")
    return status


def write_report(records: list[RunRecord], settings: dict[str, Any], args: argparse.Namespace,
                 *, interrupted: bool) -> None:
    """results.json/csv, report.md and timeline.png for the runs in hand."""
    from rollguard.steps.output_files import write_atomically

    save_results(records, args.report_dir, settings)
    write_atomically(args.report_dir / "report.md", render_report(records, settings, interrupted=interrupted))
    if records:
        plot_timeline(records, args.max_error_rate,
                      args.report_dir / "timeline.png")


def _runs(args: argparse.Namespace, runs_dir: Path, console: Console) -> Iterator[RunRecord]:
    """Yield one RunRecord per finished run, showing a progress bar."""
    from rollguard.experiment.automated import scenario_sequence

    sequence = scenario_sequence(args.scenario, args.runs, args.seed if args.target == "sandbox" else 0)
    runner = _runner(args, runs_dir, console)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{args.mode} {args.scenario} runs", total=args.runs)
        for index, scenario in enumerate(sequence, start=1):
            started = time.monotonic()
            record = runner(index, scenario)
            progress.advance(task)
            progress.console.print(_run_line(record, time.monotonic() - started))
            yield record


def _runner(args: argparse.Namespace, runs_dir: Path, console: Console) -> Callable[[int, str], RunRecord]:
    if args.target == "cluster":
        from rollguard.experiment import cluster

        watcher = cluster.ClusterWatcher.from_args(args)
        return lambda index, scenario: watcher.run(index, scenario, args.mode, console)
    base = base_settings(args, runs_dir)
    if args.mode == "manual":
        from rollguard.experiment.manual import run_manual

        return lambda index, scenario: run_manual(index, dataclasses.replace(base, scenario=scenario),
                                                  args.manual_timeout, console)
    from rollguard.experiment.automated import run_one

    rule = None
    if args.judge == "both":
        rule = ThresholdRule(args.threshold_interval or args.interval, args.threshold_failures,
                             args.threshold_consecutive)
    return lambda index, scenario: run_one(index, base, scenario, args.judge, rule, runs_dir)


def _run_line(record: RunRecord, took_s: float) -> str:
    def seconds(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}s"

    text = (f"run {record.run}: {record.scenario} → {record.outcome}; "
            f"verdict→cut {seconds(record.verdict_to_cut_s())}, breach→cut {seconds(record.breach_to_cut_s())}, "
            f"fault→cut {seconds(record.fault_to_cut_s())}, alert→cut {seconds(record.alert_to_cut_s())}, "
            f"{record.failed_requests} failed requests")
    if record.threshold_rule_decided_at is not None:
        text += f"; plain rule would decide at fault+{seconds(record.fault_to_threshold_rule_s())}"
    if record.false_rollback:
        text += " [bold red](FALSE ROLLBACK)[/]"
    return f"{text} ({took_s:.0f}s)"
