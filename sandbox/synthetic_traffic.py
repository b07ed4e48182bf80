"""A synthetic Istio-style exporter for tests and benchmarks: simulated stable/canary traffic with
controllable request rate, error rate and latency, changeable while it runs, served over real HTTP.

Also publishes odd series on demand (a gauge set to NaN, duplicate series) for the NaN and
"several series" cases. Randomness comes from one seeded generator, so a run can be replayed.
"""

from __future__ import annotations

import http.server
import random
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest

from rollguard.sandbox.istio_metrics import IstioMetrics, PeerView, send_exposition
from rollguard.sandbox.ports import free_port, wait_listening


@dataclass(frozen=True)
class TrafficProfile:
    """How one version of a service behaves: requests per second, failed share, latency, protocol.

    A failed request is HTTP 500 (`http`), HTTP 200 with `grpc_error_status` (`grpc`), or a TCP connection
    the version's own proxy closed with UF (`tcp`); `mixed` is half HTTP, half gRPC. `down` ("UH" or
    "UF") makes every request fail in the caller's proxy before it reaches the version, as when it has no
    ready endpoint (UH) or refuses connections (UF): only caller-reported series move. Every request that
    reaches the version is reported by both proxies, like Istio does (`callers=False`: the destination only).
    """

    requests_per_s: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 20.0
    slow_rate: float = 0.0  # share of requests that take `slow_latency_ms` instead
    slow_latency_ms: float = 800.0
    protocol: str = "http"  # http, grpc, mixed, tcp
    grpc_error_status: int = 14  # UNAVAILABLE
    down: str = ""  # "", "UH", "UF"
    callers: bool = True


@dataclass
class _Flow:
    metrics: IstioMetrics
    version: str
    profile: TrafficProfile
    carry: float = 0.0
    requests: int = 0
    errors: int = 0


def _record(metrics: IstioMetrics, version: str, workload: str, profile: TrafficProfile, protocol: str,
            failed: bool, duration_ms: float) -> None:
    """One request (or TCP connection) as Istio's proxies would report it."""
    if protocol == "tcp":
        if profile.down:
            peer = PeerView.NONE if profile.down == "UH" else PeerView.ENDPOINT
            metrics.record_connection(version, workload, reporter="source", flags=profile.down, peer=peer)
            return
        metrics.record_connection(version, workload, flags="UF" if failed else "-")
        if profile.callers:
            metrics.record_connection(version, workload, reporter="source")
        return
    grpc = protocol == "grpc"
    if profile.down:
        # The caller's proxy answers itself: 503, or for gRPC HTTP 200 with UNAVAILABLE (Envoy's gRPC local reply).
        peer = PeerView.NONE if profile.down == "UH" else PeerView.ENDPOINT
        metrics.record(version, workload, 200 if grpc else 503, 0.3, reporter="source", protocol=protocol,
                       grpc_status=14, flags=profile.down, peer=peer)
        return
    code = 200 if grpc else (500 if failed else 200)
    status = (profile.grpc_error_status if failed else 0) if grpc else None
    metrics.record(version, workload, code, duration_ms, protocol=protocol, grpc_status=status)
    if profile.callers:
        metrics.record(version, workload, code, duration_ms + 0.5, reporter="source", protocol=protocol,
                       grpc_status=status)


class SyntheticTraffic:
    """An HTTP exporter at `target` (host:port) whose traffic runs in a background thread.

    `set(service, version, ...)` changes a version's behaviour at once; `reset()` stops all traffic
    (counters keep their values, as a real sidecar's would). Use as a context manager.
    """

    def __init__(self, namespace: str = "demo", *, seed: int = 0, tick_s: float = 0.05) -> None:
        self.namespace = namespace
        self.tick_s = tick_s
        self._random = random.Random(seed)
        self._services: dict[str, IstioMetrics] = {}
        self._flows: dict[tuple[str, str], _Flow] = {}
        self._gauge_registry = CollectorRegistry(auto_describe=False)
        self._gauges: dict[str, Gauge] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.port = 0

    @property
    def target(self) -> str:
        """`127.0.0.1:PORT`, for a Prometheus scrape job."""
        return f"127.0.0.1:{self.port}"

    def set(self, service: str, version: str, profile: TrafficProfile) -> None:
        """Make `version` of `service` behave like `profile` from now on."""
        with self._lock:
            if service not in self._services:
                self._services[service] = IstioMetrics(self.namespace, service)
            key = (service, version)
            if key in self._flows:
                self._flows[key].profile = profile
            else:
                self._flows[key] = _Flow(self._services[service], version, profile)

    def reset(self) -> None:
        """Stop all simulated traffic (series and counters stay, like a real sidecar's)."""
        with self._lock:
            for flow in self._flows.values():
                flow.profile = TrafficProfile()
                flow.carry = 0.0

    def forget(self, service: str) -> None:
        """Stop publishing `service` at all (its series go stale in Prometheus), to keep scrapes small."""
        with self._lock:
            self._services.pop(service, None)
            for key in [key for key in self._flows if key[0] == service]:
                del self._flows[key]

    def set_gauge(self, name: str, value: float, **labels: str) -> None:
        """Publish gauge `name` with these labels (NaN allowed; two label sets give two series)."""
        with self._lock:
            gauge = self._gauges.get(name)
            if gauge is None:
                gauge = Gauge(name, f"synthetic gauge {name}", sorted(labels), registry=self._gauge_registry)
                self._gauges[name] = gauge
            gauge.labels(**labels).set(value)

    def exposition(self) -> bytes:
        """Everything this exporter publishes, in Prometheus text format."""
        with self._lock:
            parts = [metrics.exposition() for metrics in self._services.values()]
            parts.append(generate_latest(self._gauge_registry))
        return b"".join(parts)

    def _simulate(self, elapsed_s: float) -> None:
        with self._lock:
            for (service, version), flow in self._flows.items():
                profile = flow.profile
                expected = profile.requests_per_s * elapsed_s + flow.carry
                count = int(expected)
                flow.carry = expected - count
                workload = f"{service}-{version}"
                for _ in range(count):
                    failed = self._random.random() < profile.error_rate
                    slow = self._random.random() < profile.slow_rate
                    duration = profile.slow_latency_ms if slow else profile.latency_ms
                    duration *= 0.8 + 0.4 * self._random.random()
                    protocol = profile.protocol
                    if protocol == "mixed":
                        protocol = "grpc" if self._random.random() < 0.5 else "http"
                    _record(flow.metrics, version, workload, profile, protocol, failed, duration)
                    flow.requests += 1
                    flow.errors += int(failed or bool(profile.down))

    def _traffic_loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick_s):
            now = time.monotonic()
            self._simulate(now - last)
            last = now

    def start(self) -> SyntheticTraffic:
        """Serve /metrics on a free loopback port and start the traffic thread."""
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                send_exposition(self, exporter.exposition())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.port = free_port()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="synthetic-exporter", daemon=True),
            threading.Thread(target=self._traffic_loop, name="synthetic-traffic", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        if not wait_listening(self.port, 5.0):
            self.stop()
            raise RuntimeError(f"the synthetic exporter did not listen on {self.target} within 5 s")
        return self

    def stop(self) -> None:
        """Stop the traffic thread and the HTTP server."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> SyntheticTraffic:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
