"""Istio's standard request metrics, exported in Prometheus text format by the sandbox's processes.

Same metric names and labels as Istio's sidecars (reporter="destination"), so rollguard's built-in
PromQL runs unchanged against the sandbox and against a cluster.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

disable_created_metrics()

# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)

LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class IstioMetrics:
    """`istio_requests_total` and `istio_request_duration_milliseconds` for one service's workloads."""

    def __init__(self, namespace: str, service: str, source_workload: str = "loadgen") -> None:
        self.namespace = namespace
        self.service = service
        self.source_workload = source_workload
        self.registry = CollectorRegistry(auto_describe=False)
        self._requests = Counter(
            "istio_requests", "Requests served, as Istio counts them.", LABELS, registry=self.registry
        )
        self._duration = Histogram(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds, as Istio measures it.",
            LABELS,
            buckets=ISTIO_DURATION_BUCKETS_MS,
            registry=self.registry,
        )

    def _label_values(self, version: str, workload: str, response_code: int) -> tuple[str, ...]:
        return (
            "destination",
            self.source_workload,
            self.namespace,
            workload,
            self.namespace,
            version,
            f"{self.service}.{self.namespace}.svc.cluster.local",
            self.service,
            self.namespace,
            "http",
            str(response_code),
            "-",
        )

    def record(self, version: str, workload: str, response_code: int, duration_ms: float, count: int = 1) -> None:
        """Count `count` requests served by `workload` (subset `version`) with this code and duration."""
        values = self._label_values(version, workload, response_code)
        self._requests.labels(*values).inc(count)
        histogram = self._duration.labels(*values)
        for _ in range(count):
            histogram.observe(duration_ms)

    def exposition(self) -> bytes:
        """The current values in Prometheus text exposition format."""
        return generate_latest(self.registry)
