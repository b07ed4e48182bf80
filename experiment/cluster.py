"""Cluster target: the same timestamps on a real cluster, from its Prometheus and its live VirtualService.

No sandbox and no workflow: the team runs its release as usual (`argo submit --from
workflowtemplate/canary-release` with a faulty image, or a weight change in Git that ArgoCD syncs).
Per run the watcher waits until the live VirtualService sends traffic to the canary (that moment is
`fault_start`, the faulty canary starts serving users), then until it sends 0 % again (`traffic_cut`,
the rollback landed on the cluster, by rollguard or by hand). Prometheus gives the first breach, the
alert's firing and the failed requests in between.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from rollguard.experiment.records import RunRecord
from rollguard.sandbox.prometheus_queries import PrometheusQueryError, series_range, value_at
from rollguard.steps.gitops.kube_api import KubeApi, KubeApiError, KubeConfigError, load_api_client
from rollguard.steps.gitops.object_refs import DEFAULT_ISTIO_API_VERSION, ObjectRef, virtual_service_ref
from rollguard.steps.metrics import istio_queries
from rollguard.steps.metrics.prometheus_access import access_from_args, add_prometheus_access_arguments
from rollguard.steps.metrics.prometheus_connection import PrometheusConnection
from rollguard.steps.options import UsageError, add_flag, format_duration, positive_duration
from rollguard.steps.traffic.virtualservice import weighted_route_positions

POLL_S = 0.2


def add_cluster_arguments(group: argparse._ArgumentGroup) -> None:
    """Flags used only with --target cluster."""
    add_flag(group, "--prometheus-url", default="http://prometheus.monitoring:9090", help="the cluster's Prometheus")
    add_prometheus_access_arguments(group)  # the same authentication and TLS flags as analyze
    add_flag(group, "--kubeconfig", help="kube config file (default: KUBECONFIG, in-cluster, ~/.kube/config)")
    add_flag(group, "--namespace", help="namespace of the service and its VirtualService")
    add_flag(group, "--service", help="service name (destination_service_name)")
    add_flag(group, "--virtual-service", help="metadata.name of the VirtualService (default: --service)")
    add_flag(group, "--stable-subset", default="v1", help="stable subset (= destination_version)")
    add_flag(group, "--canary-subset", default="v2", help="canary subset (= destination_version)")
    add_flag(group, "--istio-api-version", default=DEFAULT_ISTIO_API_VERSION, help="networking.istio.io version")
    # The flag's name until the GitOps steps and the experiment agreed on one: still accepted, not shown.
    group.add_argument("--virtual-service-api-version", dest="istio_api_version", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    add_flag(group, "--alert-name", default="CanaryHighErrorRate", help="the paging alert's name (the manual baseline)")
    add_flag(group, "--wait-timeout", default="30m", type=positive_duration,
             help="how long to wait for the canary to get traffic, and then for the cut")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse a cluster target that lacks names or a kube config, before anything starts."""
    missing = [flag for flag, value in (("--namespace", args.namespace), ("--service", args.service)) if not value]
    if missing:
        raise UsageError(f"--target cluster needs {' and '.join(missing)}")
    access_from_args(args)  # a bad header, token file, CA file or SigV4 setting: exit 2 before any query
    try:
        load_api_client(args.kubeconfig)
    except KubeConfigError as exc:
        raise UsageError(f"--target cluster: {exc}") from None


def canary_weight(virtual_service: dict[str, Any], stable_subset: str, canary_subset: str) -> int | None:
    """The canary's weight in the live object's weighted route(s) (HTTP, TCP, TLS), or None when there is none."""
    weights = []
    spec = virtual_service.get("spec") or {}
    for route in [route for kind in ("http", "tcp", "tls") for route in spec.get(kind) or []]:
        positions = weighted_route_positions(route, stable_subset, canary_subset)
        if positions is not None:
            destination = route["route"][positions[1]]
            weights.append(int(destination.get("weight", 0) or 0))
    return max(weights) if weights else None


@dataclass
class ClusterWatcher:
    """Watches one service's live VirtualService and Prometheus through N runs."""

    api: KubeApi
    ref: ObjectRef
    prometheus: PrometheusConnection  # the URL and how to authenticate; the breach, alert and failure queries
    namespace: str
    service: str
    stable_subset: str
    canary_subset: str
    window_s: float
    step_s: float
    max_error_rate: float
    alert_name: str
    timeout_s: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ClusterWatcher:
        """Build the watcher from the experiment's flags."""
        api_client, _source = load_api_client(args.kubeconfig)
        ref = virtual_service_ref(args.namespace, args.virtual_service or args.service, args.istio_api_version)
        return cls(KubeApi(api_client), ref, PrometheusConnection(access_from_args(args)), args.namespace, args.service,
                   args.stable_subset, args.canary_subset, args.window, args.scrape_interval, args.max_error_rate,
                   args.alert_name, args.wait_timeout)

    def _weight(self) -> int | None:
        try:
            return canary_weight(self.api.get(self.ref), self.stable_subset, self.canary_subset)
        except KubeApiError:
            return None  # a blip of the API: keep polling until the deadline

    def _wait(self, condition: Any, deadline: float) -> float | None:
        while time.monotonic() < deadline:
            weight = self._weight()
            if weight is not None and condition(weight):
                return time.time()
            time.sleep(POLL_S)
        return None

    def run(self, index: int, scenario: str, mode: str, console: Console) -> RunRecord:
        """One run: wait for canary traffic (fault start), then for 0 % canary (cut); read Prometheus."""
        console.print(f"run {index}: waiting for {self.ref.describe()} to send traffic to {self.canary_subset} — "
                      "start the release now")
        fault_start = self._wait(lambda weight: weight > 0, time.monotonic() + self.timeout_s)
        if fault_start is None:
            return RunRecord(run=index, scenario=scenario, outcome="no_cut", mode=mode, judge="",
                             notes=f"the canary got no traffic within {format_duration(self.timeout_s)}")
        console.print(f"run {index}: the canary gets traffic; waiting for the cut (0 % to {self.canary_subset})")
        cut = self._wait(lambda weight: weight == 0, time.monotonic() + self.timeout_s)
        end = cut if cut is not None else time.time()
        time.sleep(2 * self.step_s)  # the last scrapes before the cut land in Prometheus
        breach, alert, failed, series = self._prometheus_moments(fault_start, end)
        return RunRecord(
            run=index, scenario=scenario, outcome="rolled_back" if cut is not None else "no_cut", mode=mode,
            judge="", fault_start=fault_start, first_breach=breach, alert_firing=alert, traffic_cut=cut,
            failed_requests=failed, notes="" if cut is not None else "no cut before the timeout",
            extra={"series": series, "threshold": self.max_error_rate, "series_unit": "fraction"},
        )

    def _prometheus_moments(
        self, start: float, end: float
    ) -> tuple[float | None, float | None, int, list[list[float]]]:
        error_rate = istio_queries.error_rate_query(self.namespace, self.service, self.canary_subset, self.window_s)
        seconds = max(1, math.ceil(end - start))
        failed_query = istio_queries.failures_increase_query(self.namespace, self.service, self.canary_subset, seconds)
        try:
            samples = series_range(self.prometheus, error_rate, start - 10, end + self.step_s, self.step_s)
            breach = next((s.at for s in samples if s.at >= start and s.value > self.max_error_rate), None)
            firing = series_range(self.prometheus, f'ALERTS{{alertname="{self.alert_name}",alertstate="firing"}}',
                                  start, end + self.step_s, self.step_s)
            failed = value_at(self.prometheus, failed_query, end)
        except PrometheusQueryError:
            return None, None, 0, []
        return breach, (firing[0].at if firing else None), round(failed or 0), [[s.at, s.value] for s in samples]
