"""Istio's standard metrics, exported in Prometheus text format by the sandbox's processes.

Same metric names and labels as Istio's proxies, so rollguard's built-in PromQL runs unchanged against
the sandbox and against a cluster: `istio_requests_total` and `istio_request_duration_milliseconds` for
HTTP and gRPC (`request_protocol`, `response_code`, `grpc_response_status`), and
`istio_tcp_connections_opened_total` / `_closed_total` for TCP (`request_protocol="tcp"`, no response code).
Both reporters: the destination's proxy (`reporter="destination"`) and the caller's (`reporter="source"`).
What a caller's proxy knows of the destination depends on whether it got an answer (see `PeerView`), as
Istio's stats filter labels it.
"""

from __future__ import annotations

import http.server
from enum import Enum

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
    "destination_canonical_revision",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
)
TCP_LABELS = tuple(label for label in LABELS if label not in ("response_code", "grpc_response_status"))

CONTENT_TYPE = CONTENT_TYPE_LATEST


def send_exposition(handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
    """Answer a scrape with a /metrics page; a scraper that gave up (its timeout) is no error: the next scrape
    gets fresh values."""
    handler.send_response(200)
    handler.send_header("Content-Type", CONTENT_TYPE)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass


class PeerView(str, Enum):
    """What the reporting proxy knows of the destination workload."""

    ANSWERED = "answered"  # the destination (or the reporter itself) is known: every label set
    ENDPOINT = "endpoint"  # a caller that chose an endpoint but got no answer (UF): workload and revision only
    NONE = "none"  # a caller that found no endpoint at all (UH): only the service is known


class IstioMetrics:
    """Istio's request and TCP metrics for one service's workloads, as its proxies would export them."""

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
        self._opened = Counter("istio_tcp_connections_opened", "TCP connections opened, as Istio counts them.",
                               TCP_LABELS, registry=self.registry)
        self._closed = Counter("istio_tcp_connections_closed", "TCP connections closed, as Istio counts them.",
                               TCP_LABELS, registry=self.registry)

    def _destination(self, version: str, workload: str, peer: PeerView) -> dict[str, str]:
        if peer is PeerView.NONE:
            known = {"destination_workload": "unknown", "destination_workload_namespace": "unknown",
                     "destination_version": "unknown", "destination_canonical_revision": "latest"}
        elif peer is PeerView.ENDPOINT:
            known = {"destination_workload": workload, "destination_workload_namespace": self.namespace,
                     "destination_version": "unknown", "destination_canonical_revision": version}
        else:
            known = {"destination_workload": workload, "destination_workload_namespace": self.namespace,
                     "destination_version": version, "destination_canonical_revision": version}
        return {
            "source_workload": self.source_workload,
            "source_workload_namespace": self.namespace,
            **known,
            "destination_service": f"{self.service}.{self.namespace}.svc.cluster.local",
            "destination_service_name": self.service,
            "destination_service_namespace": self.namespace,
        }

    def record(
        self, version: str, workload: str, response_code: int, duration_ms: float, count: int = 1, *,
        reporter: str = "destination", protocol: str = "http", grpc_status: int | None = None, flags: str = "-",
        peer: PeerView = PeerView.ANSWERED,
    ) -> None:
        """Count `count` requests to `workload` (subset `version`) as `reporter`'s proxy saw them.

        `grpc_status` applies to `protocol="grpc"` (Istio labels other requests with an empty status).
        """
        labels = {
            "reporter": reporter, **self._destination(version, workload, peer), "request_protocol": protocol,
            "response_code": str(response_code),
            "grpc_response_status": "" if grpc_status is None or protocol != "grpc" else str(grpc_status),
            "response_flags": flags,
        }
        values = [labels[name] for name in LABELS]
        self._requests.labels(*values).inc(count)
        histogram = self._duration.labels(*values)
        for _ in range(count):
            histogram.observe(duration_ms)

    def record_connection(
        self, version: str, workload: str, count: int = 1, *, reporter: str = "destination", flags: str = "-",
        peer: PeerView = PeerView.ANSWERED,
    ) -> None:
        """Count `count` short TCP connections to `workload`, opened and closed, closed with `flags`."""
        labels = {"reporter": reporter, **self._destination(version, workload, peer), "request_protocol": "tcp",
                  "response_flags": flags}
        values = [labels[name] for name in TCP_LABELS]
        self._opened.labels(*values).inc(count)
        self._closed.labels(*values).inc(count)

    def exposition(self) -> bytes:
        """The current values in Prometheus text exposition format."""
        return generate_latest(self.registry)
