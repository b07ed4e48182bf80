"""The flags of `rollguard demo` (the experiment copies them) and the DemoSettings one run is made of."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from rollguard.sandbox.alert_rules import AlertSettings
from rollguard.sandbox.demo_app import Behaviour
from rollguard.sandbox.environment import SandboxSettings
from rollguard.sandbox.scenarios import SCENARIOS
from rollguard.steps.notify.delivery import NotifyConfigError, check_url
from rollguard.steps.notify.formats import FORMATS
from rollguard.steps.options import (
    UsageError,
    add_flag,
    format_duration,
    fraction,
    non_negative_duration,
    non_negative_float,
    non_negative_int,
    positive_duration,
)
from rollguard.steps.schedule import parse_schedule

PROTOCOLS = ("http", "grpc")
SWITCH_VALUES = ("true", "false")


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
    protocol: str = "http"  # what the users speak: http or grpc
    step_image: Path | None = None  # run the steps inside this step image archive (root only)
    notify_url: str = ""  # the release's notification goes here (the workflow's exit handler sends it)
    notify_format: str = "auto"
    pod_start_delay_s: float = 0.0  # each container step waits this long before it starts, as a pod start would
    rollback_in_analysis: str | None = None  # "true"/"false": the workflow parameter; None: the template's default

    def sandbox_settings(self, workdir: Path, seed: int | None = None) -> SandboxSettings:
        """The sandbox these settings run in: scrape, sync delay, router port, and the paging alerts."""
        alert = AlertSettings(window=format_duration(self.window_s), max_error_rate=self.max_error_rate,
                              max_p99_ms=self.max_p99_ms, for_s=self.alert_for_s)
        return SandboxSettings(workdir=workdir, scrape_interval_s=self.scrape_interval_s,
                               sync_delay_s=self.sync_delay_s, alert=alert,
                               seed=self.seed if seed is None else seed, router_port=self.router_port,
                               protocol=self.protocol)

    def behaviour(self) -> Behaviour | None:
        """The canary's fault in this scenario (None: healthy or down, no fault to switch on in the app)."""
        if self.scenario == "faulty":
            return Behaviour(error_rate=self.error_rate)
        if self.scenario == "slow":
            return Behaviour(error_rate=self.background_error_rate, latency_ms=self.latency_ms)
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rollguard demo`."""
    add_flag(parser, "--scenario", default="faulty", choices=list(SCENARIOS),
             help="faulty: canary fails requests (HTTP 500 / gRPC UNAVAILABLE); slow: p99 over 500 ms; down: the "
             "canary app stops (callers get 503 UH); healthy: promoted to 100 %%")
    add_flag(parser, "--protocol", default="http", choices=list(PROTOCOLS),
             help="what the users speak: http, or grpc (grpcio apps, a router that relays gRPC status)")
    add_flag(parser, "--report-dir", type=Path, help="where results.json and the logs go (default ./reports/demo-TIME)")
    add_flag(parser, "--rps", default=50.0, type=non_negative_float, help="user requests per second")
    add_flag(parser, "--interval", default="1s", type=positive_duration, help="analysis interval")
    add_flag(parser, "--analysis-duration", default="20s", type=positive_duration,
             help="bake time of each analysis step (a failure ends it early)")
    add_flag(parser, "--window", default="10s", type=positive_duration, help="PromQL window of the checks and alerts")
    add_flag(parser, "--schedule", default="10,50,100", help="canary weights of the release")
    add_flag(parser, "--min-requests", default=50, type=non_negative_int, help="canary requests needed before a pass")
    add_flag(parser, "--max-error-rate", default=0.01, type=fraction,
             help="failed-request share threshold of analysis and alert")
    add_flag(parser, "--max-p99-latency-ms", default=500.0, type=non_negative_float, help="p99 threshold")
    add_flag(parser, "--error-rate", default=0.5, type=fraction,
             help="share of failed requests of the faulty canary (HTTP 500, gRPC UNAVAILABLE)")
    add_flag(parser, "--latency-ms", default=700.0, type=non_negative_float, help="added latency of the slow canary")
    add_flag(parser, "--alert-for", default="1m", type=non_negative_duration,
             help="`for:` of the paging alert rule (what a team would set; the manual baseline's start)")
    add_flag(parser, "--sync-delay", default="0s", type=non_negative_duration,
             help="router's delay before applying a pushed split (30s or 3m emulate ArgoCD polling)")
    add_flag(parser, "--pod-start-delay", default="0s", type=non_negative_duration,
             help="wait this long before each workflow step's container starts, as a pod start costs on a cluster")
    add_flag(parser, "--rollback-in-analysis", choices=list(SWITCH_VALUES),
             help="true: analyze rolls back itself the moment it decides; false: the rollback step after it does "
                  "(the workflow parameter rollback-in-analysis; default: the template's)")
    add_flag(parser, "--scrape-interval", default="1s", type=positive_duration, help="Prometheus scrape interval")
    add_flag(parser, "--background-error-rate", default=0.0, type=fraction,
             help="share of HTTP 500s that both versions serve all along (noise a healthy canary must survive)")
    add_flag(parser, "--seed", default=7, type=non_negative_int, help="seed of the apps' and router's randomness")
    add_flag(parser, "--router-port", type=int, help="fixed port of the mesh router (default: a free one)")
    add_flag(parser, "--step-image", type=Path,
             help="run every workflow step inside this step image archive (./run.sh image; needs root)")
    add_flag(parser, "--workflow-dir", type=Path,
             help="directory with the rendered canary-release.yaml (default: the installed workflows)")
    add_flag(parser, "--notify-url",
             help="webhook the release's notification goes to (the workflow's exit handler posts it), http(s)")
    add_flag(parser, "--notify-format", default="auto", choices=list(FORMATS),
             help="json, slack, teams; auto: from the URL's host")


def settings_from(args: argparse.Namespace) -> DemoSettings:
    """DemoSettings from parsed flags (a report dir is made up when none is given)."""
    if args.scenario not in SCENARIOS:
        raise UsageError(f"--scenario {args.scenario!r} does not exist; choose one of {', '.join(SCENARIOS)}")
    if args.rps <= 0:
        raise UsageError("--rps must be greater than zero")
    parse_schedule(args.schedule)  # UsageError naming --schedule
    notify_url = getattr(args, "notify_url", None) or ""
    if notify_url:
        try:
            notify_url = check_url(notify_url, "--notify-url")  # before anything starts; the URL is never printed
        except NotifyConfigError as exc:
            raise UsageError(str(exc)) from None
    report_dir = args.report_dir or Path("reports") / time.strftime("demo-%Y%m%d-%H%M%S")
    return DemoSettings(
        scenario=args.scenario, report_dir=report_dir, rps=args.rps, interval_s=args.interval,
        analysis_duration_s=args.analysis_duration, window_s=args.window, schedule=args.schedule,
        min_requests=args.min_requests, max_error_rate=args.max_error_rate, max_p99_ms=args.max_p99_latency_ms,
        error_rate=args.error_rate, latency_ms=args.latency_ms, alert_for_s=args.alert_for,
        sync_delay_s=args.sync_delay, scrape_interval_s=args.scrape_interval, seed=args.seed,
        workflow_dir=args.workflow_dir, router_port=args.router_port,
        background_error_rate=args.background_error_rate, protocol=args.protocol, step_image=args.step_image,
        notify_url=notify_url, notify_format=getattr(args, "notify_format", None) or "auto",
        pod_start_delay_s=args.pod_start_delay, rollback_in_analysis=args.rollback_in_analysis,
    )
