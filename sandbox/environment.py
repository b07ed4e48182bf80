"""The whole sandbox, up and down: GitOps remote, stable and canary apps, router, Prometheus, load.

Every component is a real process on loopback on a free port, started through a Supervisor, so
it is stopped when the `with` block ends, on Ctrl-C/SIGTERM, or at exit.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollguard.sandbox.alert_rules import AlertSettings, write_rules
from rollguard.sandbox.demo_app import Behaviour
from rollguard.sandbox.git_remote import MANIFEST_PATH, GitRemote, GitRemoteError, create_remote
from rollguard.sandbox.ports import free_port, port_is_free
from rollguard.sandbox.processes import Child, SandboxError, Supervisor
from rollguard.sandbox.prometheus_queries import PrometheusQueryError, instant
from rollguard.sandbox.prometheus_server import PrometheusError, PrometheusServer, ScrapeJob
from rollguard.sandbox.router import ADMIN_PATH

log = logging.getLogger(__name__)

ROUTER_JOB = "mesh-router"
CANARY_APP = "app-canary"  # the canary app's name among the supervised processes
WORKFLOW_METRICS_JOB = "argo-workflows"  # the Argo controller's /metrics, where template metrics appear


@dataclass(frozen=True)
class SandboxSettings:
    """Names, subsets and timings of the sandbox; the defaults are the demo's."""

    workdir: Path
    namespace: str = "demo"
    service: str = "podinfo"
    virtual_service: str = "podinfo"
    stable_subset: str = "v1"
    canary_subset: str = "v2"
    branch: str = "main"
    manifest_path: str = MANIFEST_PATH
    scrape_interval_s: float = 1.0
    router_poll_s: float = 0.2
    sync_delay_s: float = 0.0
    self_heal_s: float | None = 5.0  # ArgoCD reverting a live change Git does not hold (None: selfHeal off)
    post_sync_hook: list[str] | None = None  # run after each sync of a new revision; the sync waits for it
    router_port: int | None = None
    prometheus_port: int | None = None
    alert: AlertSettings = field(default_factory=AlertSettings)
    seed: int | None = 7
    start_timeout_s: float = 30.0
    protocol: str = "http"  # what the users speak: http, or grpc (the apps and the router then also serve gRPC)


@dataclass
class Sandbox:
    """A running sandbox; build it with `start_sandbox`."""

    settings: SandboxSettings
    supervisor: Supervisor
    remote: GitRemote
    router_url: str
    stable_url: str
    canary_url: str
    prometheus: PrometheusServer
    workflow_metrics_url: str = ""  # the executor's template metrics (POST /emit, GET /metrics)
    load: Child | None = None
    router_grpc: str | None = None  # host:port of the router's gRPC relay, when the users speak gRPC

    @property
    def prometheus_url(self) -> str:
        """Base URL of the Prometheus server."""
        return self.prometheus.url

    def urls(self) -> dict[str, str]:
        """Every address a person exploring the sandbox needs."""
        urls = {
            "router": self.router_url,
            "router_admin": self.router_url + ADMIN_PATH,
            "prometheus": self.prometheus_url,
            "git_remote": self.remote.url,
            "stable_app": self.stable_url,
            "canary_app": self.canary_url,
            "workflow_metrics": self.workflow_metrics_url,
        }
        if self.router_grpc is not None:
            urls["router_grpc"] = self.router_grpc
        return urls

    def set_canary(self, behaviour: Behaviour) -> float:
        """Switch the canary's behaviour; return the Unix time the canary confirmed it."""
        _post_json(f"{self.canary_url}/control", {"error_rate": behaviour.error_rate,
                                                  "latency_ms": behaviour.latency_ms})
        return time.time()

    def take_canary_down(self) -> float:
        """Stop the canary app, as a crashed pod that does not come back; return the Unix time it was gone.

        Its subset then has no ready endpoint: the router answers requests routed to it 503 UH (gRPC:
        UNAVAILABLE), as callers' sidecars do, and only the callers report them.
        """
        self.supervisor.stop(CANARY_APP, grace_s=2.0)
        return time.time()

    def set_background_errors(self, error_rate: float) -> None:
        """Make both versions answer `error_rate` of requests with HTTP 500 (noise, not a fault)."""
        for url in (self.stable_url, self.canary_url):
            _post_json(f"{url}/control", {"error_rate": error_rate, "latency_ms": 0.0})

    def weights(self) -> dict[str, Any]:
        """The router's applied weights and its change log."""
        return _get_json(self.router_url + ADMIN_PATH)

    def start_load(self, rps: float, out: Path) -> Child:
        """Start the load generator against the router, recording to `out`."""
        grpc = ["--grpc", self.router_grpc] if self.router_grpc else []
        self.load = self.supervisor.start(
            "loadgen",
            [sys.executable, "-m", "rollguard.sandbox.loadgen", "--url", self.router_url + "/", "--rps", f"{rps:g}",
             "--out", str(out), *grpc],
            deadline_s=self.settings.start_timeout_s,
        )
        return self.load

    def stop_load(self) -> None:
        """Stop the load generator gracefully so its last responses are written."""
        if self.load is None:
            return
        self.supervisor.stop(self.load.name, grace_s=10.0)
        self.load = None

    def wait_for_traffic(self, deadline_s: float = 30.0) -> None:
        """Wait until Prometheus holds request counts of both subsets (the demo's baseline)."""
        query = (f'count(istio_requests_total{{reporter="destination",'
                 f'destination_service_name="{self.settings.service}",'
                 f'destination_version=~"{self.settings.stable_subset}|{self.settings.canary_subset}"}}) '
                 f'by (destination_version)')
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            self.supervisor.check()
            try:
                if len(instant(self.prometheus_url, query)) >= 2:
                    return
            except PrometheusQueryError:
                pass
            time.sleep(0.25)
        raise SandboxError(f"Prometheus at {self.prometheus_url} saw no requests of both versions within "
                           f"{deadline_s:.0f} s; is the load generator running? (logs in {self.supervisor.log_dir})")


def _post_json(url: str, payload: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.load(response))
    except (urllib.error.URLError, OSError) as exc:
        raise SandboxError(f"{url} does not answer: {exc}") from None


def _get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.load(response))
    except (urllib.error.URLError, OSError) as exc:
        raise SandboxError(f"{url} does not answer: {exc}") from None


def start_sandbox(settings: SandboxSettings, supervisor: Supervisor) -> Sandbox:
    """Start every component (Prometheus first: its first scrape takes ~5 s) and wait for first data."""
    workdir = settings.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    router_port = settings.router_port or free_port()
    for name, port in (("router", router_port), ("prometheus", settings.prometheus_port)):
        if port is not None and not port_is_free(port):
            raise SandboxError(f"{name}: port {port} on 127.0.0.1 is already in use; stop what listens there or "
                               "leave the port out to get a free one")
    rules = write_rules(workdir / "alert-rules.yml", settings.alert)
    metrics_port = free_port()
    prometheus = PrometheusServer([ScrapeJob(ROUTER_JOB, [f"127.0.0.1:{router_port}"]),
                                   ScrapeJob(WORKFLOW_METRICS_JOB, [f"127.0.0.1:{metrics_port}"])],
                                  scrape_interval_s=settings.scrape_interval_s,
                                  evaluation_interval_s=settings.scrape_interval_s, rule_files=[rules],
                                  port=settings.prometheus_port, workdir=workdir / "prometheus",
                                  start_timeout_s=settings.start_timeout_s,
                                  die_with_parent=supervisor.tie_to_parent)
    try:
        prometheus.start()
    except PrometheusError as exc:
        raise SandboxError(f"Prometheus: {exc}") from None
    supervisor.add_cleanup("prometheus", prometheus.stop,
                           lambda: prometheus.process.poll() if prometheus.process is not None else None)
    try:
        remote = create_remote(workdir / "gitops.git", settings.branch)
    except GitRemoteError as exc:
        raise SandboxError(f"GitOps remote: {exc}") from None
    python = sys.executable
    app_urls: dict[str, str] = {}
    grpc_addresses: dict[str, str] = {}
    for role, subset, seed_offset in (("stable", settings.stable_subset, 0), ("canary", settings.canary_subset, 1)):
        port = free_port()
        seed = [] if settings.seed is None else ["--seed", str(settings.seed + seed_offset)]
        grpc: list[str] = []
        if settings.protocol == "grpc":
            grpc_addresses[role] = f"127.0.0.1:{free_port()}"
            grpc = ["--grpc-port", grpc_addresses[role].rsplit(":", 1)[1]]
        name = CANARY_APP if role == "canary" else f"app-{role}"
        supervisor.start(name, [python, "-m", "rollguard.sandbox.demo_app", "--port", str(port), "--version", subset,
                                *seed, *grpc],
                         port=port, health_url=f"http://127.0.0.1:{port}/healthz",
                         deadline_s=settings.start_timeout_s)
        app_urls[role] = f"http://127.0.0.1:{port}"
    router_url = f"http://127.0.0.1:{router_port}"
    router_grpc = f"127.0.0.1:{free_port()}" if settings.protocol == "grpc" else None
    relay = [] if router_grpc is None else [
        "--grpc-port", router_grpc.rsplit(":", 1)[1], "--stable-grpc", grpc_addresses["stable"],
        "--canary-grpc", grpc_addresses["canary"]]
    seed = [] if settings.seed is None else ["--seed", str(settings.seed + 2)]
    argocd = ["--self-heal", f"{settings.self_heal_s if settings.self_heal_s is not None else -1:g}"]
    if settings.post_sync_hook:
        argocd += ["--post-sync-hook", json.dumps(settings.post_sync_hook)]
    supervisor.start(
        "router",
        [python, "-m", "rollguard.sandbox.router", "--port", str(router_port), "--git-dir", str(remote.path),
         "--branch", settings.branch, "--path", settings.manifest_path, "--virtual-service", settings.virtual_service,
         "--stable-subset", settings.stable_subset, "--canary-subset", settings.canary_subset,
         "--stable-url", app_urls["stable"], "--canary-url", app_urls["canary"], "--namespace", settings.namespace,
         "--service", settings.service, "--poll-interval", f"{settings.router_poll_s:g}",
         "--sync-delay", f"{settings.sync_delay_s:g}", *argocd, *relay, *seed],
        port=router_port, health_url=f"{router_url}/healthz", deadline_s=settings.start_timeout_s,
    )
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    supervisor.start("workflow-metrics", [python, "-m", "rollguard.sandbox.workflow_metrics", "--port",
                                          str(metrics_port)],
                     port=metrics_port, health_url=f"{metrics_url}/healthz", deadline_s=settings.start_timeout_s)
    sandbox = Sandbox(settings, supervisor, remote, router_url, app_urls["stable"], app_urls["canary"], prometheus,
                      metrics_url, router_grpc=router_grpc)
    _wait_first_scrape(sandbox, settings.start_timeout_s)
    return sandbox


def _wait_first_scrape(sandbox: Sandbox, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        sandbox.supervisor.check()
        try:
            if any(value == 1.0 for _, value in instant(sandbox.prometheus_url, f'up{{job="{ROUTER_JOB}"}}')):
                return
        except PrometheusQueryError:
            pass
        time.sleep(0.25)
    raise SandboxError(f"Prometheus did not scrape the router within {deadline_s:.0f} s "
                       f"({sandbox.prometheus.log_tail()})")
