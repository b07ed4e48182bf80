"""A mesh-sized Istio metrics exporter: hundreds of services, for load tests of Prometheus and of analyses.

Where `synthetic_traffic.py` simulates requests one by one for a few services (changeable faults), this
exporter publishes what a whole mesh's proxies export, cheaply: every series' counter grows at its own
steady rate and is computed from the clock when scraped, so 100,000 series cost no traffic thread.

Per service (`svc-000` …), per version (`v1` 90 %, `v2` 10 % of its requests) and per reporter (the
destination's proxy and one caller's, `reporter="source"`): one series per outcome — HTTP 200, 404, 500
(0.1 %), 503 (0.1 %), or for every tenth service gRPC OK, NOT_FOUND, INTERNAL, UNAVAILABLE over HTTP
200 — of `istio_requests_total` and of the full `istio_request_duration_milliseconds` histogram (Istio's
default buckets, `_sum`, `_count`), with every label Istio's standard metrics carry (the sandbox's
`istio_metrics.LABELS` plus the principals, apps, canonical services, clusters and
`connection_security_policy`). `GET /metrics?services=A:B` serves services A to B-1 only (for scrape jobs
at different intervals). Latency is log-normal with a per-service median of 10–60 ms, so every
version is healthy against rollguard's defaults (1 % errors, p99 500 ms).

    python -m rollguard.sandbox.istio_exporter [--services 300] [--port 0]   # prints the series count
"""

from __future__ import annotations

import argparse
import http.server
import math
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

from rollguard.sandbox.istio_metrics import LABELS, send_exposition
from rollguard.sandbox.ports import free_port, wait_listening
from rollguard.steps.metrics.counter_window import ISTIO_DURATION_BUCKETS_MS
from rollguard.steps.metrics.istio_queries import REQUESTS

DURATION = "istio_request_duration_milliseconds"

# The labels of Istio's standard metrics beyond those the sandbox's router exports (istio_metrics.LABELS).
MORE_LABELS = (
    "source_principal", "source_app", "source_version", "source_canonical_service", "source_canonical_revision",
    "source_cluster", "destination_principal", "destination_app", "destination_canonical_service",
    "destination_cluster", "connection_security_policy",
)
ALL_LABELS = (*LABELS, *MORE_LABELS)


@dataclass(frozen=True)
class Outcome:
    """One kind of answer and its share of a version's requests."""

    response_code: int
    share: float
    grpc_status: int | None = None  # for gRPC services: the status (HTTP 200)


HTTP_OUTCOMES = (Outcome(200, 0.978), Outcome(404, 0.02), Outcome(500, 0.001), Outcome(503, 0.001))
GRPC_OUTCOMES = (Outcome(200, 0.978, 0), Outcome(200, 0.02, 5), Outcome(200, 0.001, 13), Outcome(200, 0.001, 14))
VERSIONS = (("v1", 0.9), ("v2", 0.1))
REPORTERS = ("destination", "source")


@dataclass(frozen=True)
class MeshShape:
    """How big the mesh is and how busy: `services` services in `namespace`, `rps` requests/s each (median)."""

    services: int = 300
    namespace: str = "mesh"
    rps: float = 20.0
    grpc_every: int = 10  # every n-th service speaks gRPC
    uptime_s: float = 3600.0  # counters start as if the mesh had run this long

    def service(self, index: int) -> str:
        """The name of service `index`."""
        return f"svc-{index:03d}"


@dataclass(frozen=True)
class _Series:
    prefix: bytes  # `name{labels} `
    per_s: float  # growth per second (a counter) ...
    integral: bool  # ... counted in whole requests, or a sum (milliseconds)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _line_prefix(name: str, labels: dict[str, str]) -> bytes:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return f"{name}{{{inner}}} ".encode()


def _lognormal_cdf(x_ms: float, median_ms: float, sigma: float) -> float:
    return 0.5 * (1.0 + math.erf(math.log(x_ms / median_ms) / (sigma * math.sqrt(2.0))))


def _bucket_label(bound: float) -> str:
    return f"{bound:g}"  # as Envoy writes `le`: 0.5, 1, 5, ..., 600000, 1.8e+06, 3.6e+06


class MeshMetrics:
    """The series of a whole mesh and their values at any time (no state but the start time)."""

    SIGMA = 0.7

    def __init__(self, shape: MeshShape | None = None, *, started: float | None = None) -> None:
        self.shape = shape or MeshShape()
        self.started = time.time() if started is None else started
        # Per service: its requests series and its histogram series (a scrape may ask for some services only).
        self._services: list[tuple[list[_Series], list[_Series]]] = []
        for index in range(self.shape.services):
            requests: list[_Series] = []
            histogram: list[_Series] = []
            for labels, per_s, median_ms in self._label_sets(index):
                requests.append(_Series(_line_prefix(REQUESTS, labels), per_s, True))
                for bound in ISTIO_DURATION_BUCKETS_MS:
                    share = _lognormal_cdf(bound, median_ms, self.SIGMA)
                    histogram.append(_Series(_line_prefix(f"{DURATION}_bucket", {**labels, "le": _bucket_label(bound)}),
                                             per_s * share, True))
                histogram.append(_Series(_line_prefix(f"{DURATION}_bucket", {**labels, "le": "+Inf"}), per_s, True))
                mean_ms = median_ms * math.exp(self.SIGMA ** 2 / 2)
                histogram.append(_Series(_line_prefix(f"{DURATION}_sum", labels), per_s * mean_ms, False))
                histogram.append(_Series(_line_prefix(f"{DURATION}_count", labels), per_s, True))
            self._services.append((requests, histogram))
        self._headers = (
            f"# HELP {REQUESTS} Requests served, as Istio counts them.\n# TYPE {REQUESTS} counter\n".encode(),
            f"# HELP {DURATION} Request duration in milliseconds, as Istio measures it.\n"
            f"# TYPE {DURATION} histogram\n".encode(),
        )

    @property
    def series_count(self) -> int:
        """How many series one scrape returns."""
        return sum(len(requests) + len(histogram) for requests, histogram in self._services)

    def _label_sets(self, index: int) -> Iterator[tuple[dict[str, str], float, float]]:
        """(labels, requests/s, median latency ms) of every requests series of service `index`."""
        shape = self.shape
        namespace, service = shape.namespace, shape.service(index)
        caller = "istio-ingressgateway" if index % 5 == 0 else shape.service((index - 1) % shape.services)
        caller_namespace = "istio-system" if index % 5 == 0 else namespace
        grpc = shape.grpc_every > 0 and index % shape.grpc_every == shape.grpc_every - 1
        outcomes = GRPC_OUTCOMES if grpc else HTTP_OUTCOMES
        # A spread of busy and quiet services (a fixed pattern, so every run has the same mesh).
        service_rps = shape.rps * (0.25 + 1.5 * ((index * 37) % 100) / 100)
        median_ms = 10.0 + (index * 13) % 51
        for version, version_share in VERSIONS:
            workload = f"{service}-{version}"
            for reporter in REPORTERS:
                for outcome in outcomes:
                    labels = {
                        "reporter": reporter,
                        "source_workload": caller,
                        "source_workload_namespace": caller_namespace,
                        "destination_workload": workload,
                        "destination_workload_namespace": namespace,
                        "destination_version": version,
                        "destination_canonical_revision": version,
                        "destination_service": f"{service}.{namespace}.svc.cluster.local",
                        "destination_service_name": service,
                        "destination_service_namespace": namespace,
                        "request_protocol": "grpc" if grpc else "http",
                        "response_code": str(outcome.response_code),
                        "grpc_response_status": "" if outcome.grpc_status is None else str(outcome.grpc_status),
                        "response_flags": "-",
                        "source_principal": f"spiffe://cluster.local/ns/{caller_namespace}/sa/{caller}",
                        "source_app": caller,
                        "source_version": "unknown" if index % 5 == 0 else "v1",
                        "source_canonical_service": caller,
                        "source_canonical_revision": "latest" if index % 5 == 0 else "v1",
                        "source_cluster": "Kubernetes",
                        "destination_principal": f"spiffe://cluster.local/ns/{namespace}/sa/{service}",
                        "destination_app": service,
                        "destination_canonical_service": service,
                        "destination_cluster": "Kubernetes",
                        "connection_security_policy": "mutual_tls" if reporter == "destination" else "unknown",
                    }
                    # The caller's proxy measures a little more: the network between the two proxies.
                    latency = median_ms + (0.5 if reporter == "source" else 0.0)
                    yield labels, service_rps * version_share * outcome.share, latency

    def exposition(self, now: float | None = None, services: range | None = None) -> bytes:
        """The series' values at `now` (default: the clock) in Prometheus text format: of every service, or of
        the services whose indices are in `services`."""
        at = (time.time() if now is None else now) - self.started + self.shape.uptime_s
        chosen = self._services if services is None else [self._services[i] for i in services
                                                           if 0 <= i < len(self._services)]
        parts: list[bytes] = []
        for family, header in enumerate(self._headers):
            parts.append(header)
            for both in chosen:
                for one in both[family]:
                    parts.append(one.prefix)
                    value = one.per_s * at
                    parts.append(b"%d\n" % int(value) if one.integral else b"%.3f\n" % value)
        return b"".join(parts)


def services_parameter(query: str) -> range | None:
    """`services=A:B` in a scrape's query string (Prometheus's `params`): the services A to B-1; else None (all)."""
    values = urllib.parse.parse_qs(query).get("services")
    if not values:
        return None
    first, _, end = values[0].partition(":")
    return range(int(first), int(end))


class IstioExporter:
    """`MeshMetrics` served over HTTP on 127.0.0.1 (`GET /metrics`); a context manager."""

    def __init__(self, shape: MeshShape | None = None, *, port: int = 0) -> None:
        self.metrics = MeshMetrics(shape)
        self.port = port
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        """`127.0.0.1:PORT`, for a Prometheus scrape job."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The URL of the metrics page."""
        return f"http://{self.target}/metrics"

    def start(self) -> IstioExporter:
        """Listen on the port (a free one when 0) and serve in a background thread."""
        metrics = self.metrics

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path != "/metrics":
                    self.send_error(404)
                    return
                try:
                    services = services_parameter(query)
                except ValueError:
                    self.send_error(400, "services=FIRST:END, two whole numbers")
                    return
                send_exposition(self, metrics.exposition(services=services))

            def log_message(self, format: str, *args: object) -> None:
                pass

        if self.port == 0:
            self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="istio-exporter", daemon=True)
        self._thread.start()
        if not wait_listening(self.port, 5.0):
            self.stop()
            raise RuntimeError(f"the Istio exporter did not listen on {self.target} within 5 s")
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> IstioExporter:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Serve the mesh's metrics until interrupted; print the series count and the URL first."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=MeshShape.services)
    parser.add_argument("--namespace", default=MeshShape.namespace)
    parser.add_argument("--rps", type=float, default=MeshShape.rps, help="median requests/s per service")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    options = parser.parse_args(argv)
    exporter = IstioExporter(MeshShape(options.services, options.namespace, options.rps), port=options.port)
    with exporter:
        body = exporter.metrics.exposition()
        print(f"{exporter.metrics.series_count} series ({len(body) / 1e6:.1f} MB a scrape) of "
              f"{options.services} services at {exporter.url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
