"""The Prometheus runner starts a real server that scrapes Istio-style series, and fails clearly."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest

from rollguard.sandbox import prometheus_server
from rollguard.sandbox.istio_metrics import CONTENT_TYPE, IstioMetrics
from rollguard.sandbox.ports import free_port
from rollguard.sandbox.prometheus_server import PrometheusError, PrometheusServer, ScrapeJob


@pytest.fixture
def exporter() -> Iterator[tuple[IstioMetrics, int]]:
    metrics = IstioMetrics("demo", "podinfo")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield metrics, port
    server.shutdown()


def _query(url: str, promql: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=5) as r:
        return json.load(r)["data"]["result"]


def test_scrapes_istio_series(exporter: tuple[IstioMetrics, int]) -> None:
    metrics, port = exporter
    metrics.record("v2", "podinfo-canary", 500, 12.0, count=7)
    with PrometheusServer([ScrapeJob("istio", [f"127.0.0.1:{port}"])]) as server:
        deadline = time.monotonic() + 30
        result: list[dict] = []
        while time.monotonic() < deadline and not result:
            result = _query(server.url, 'istio_requests_total{destination_version="v2",response_code="500"}')
            time.sleep(0.2)
        assert result, "no sample scraped within 30 s"
        assert result[0]["metric"]["reporter"] == "destination"
        assert result[0]["metric"]["destination_service_name"] == "podinfo"
        assert float(result[0]["value"][1]) == 7.0
        process = server.process
    assert process is not None and process.poll() is not None, "stop() left the process running"


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_BIN", "/nonexistent/prometheus")
    with pytest.raises(PrometheusError, match="PROMETHEUS_BIN=/nonexistent/prometheus"):
        prometheus_server.find_binary()


def test_port_in_use_is_a_clear_error() -> None:
    with PrometheusServer([]) as first:
        with pytest.raises(PrometheusError, match="already in use"):
            PrometheusServer([], port=first.port, start_timeout_s=15).start()


def test_prometheus_stops_when_its_parent_is_killed(tmp_path) -> None:
    """A SIGKILLed demo (no cleanup code runs) must not leave its Prometheus behind."""
    import os
    import signal
    import subprocess
    import sys

    script = (
        "import sys, time\n"
        "from rollguard.sandbox.prometheus_server import PrometheusServer\n"
        "server = PrometheusServer([]).start()\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        alive = True
        while alive and time.monotonic() < deadline:
            try:
                os.kill(child_pid, 0)
                with open(f"/proc/{child_pid}/stat") as stat:
                    alive = stat.read().split()[2] != "Z"  # a zombie has exited
            except (ProcessLookupError, FileNotFoundError):
                alive = False
            time.sleep(0.1)
        assert not alive, "prometheus outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
