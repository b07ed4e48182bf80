"""Helpers for tests that need a real Prometheus scraping synthetic Istio traffic (importable by any test)."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rollguard.sandbox.prometheus_server import PrometheusServer, ScrapeJob
from rollguard.sandbox.synthetic_traffic import SyntheticTraffic

NAMESPACE = "demo"


def query(url: str, promql: str, timeout_s: float = 5.0) -> list[dict]:
    """Run an instant query against Prometheus at `url`; the raw `result` list."""
    address = f"{url}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(address, timeout=timeout_s) as response:
        return json.load(response)["data"]["result"]


def wait_for_result(url: str, promql: str, deadline_s: float = 30.0, minimum: float | None = None) -> list[dict]:
    """Poll until `promql` returns a series (with a value >= `minimum` if given), or fail the test."""
    end = time.monotonic() + deadline_s
    result: list[dict] = []
    while time.monotonic() < end:
        result = query(url, promql)
        if result and (minimum is None or float(result[0]["value"][1]) >= minimum):
            return result
        time.sleep(0.2)
    raise AssertionError(f"no result for {promql} within {deadline_s}s (last: {result})")


@dataclass
class IstioEnvironment:
    """A synthetic exporter and a real Prometheus (1 s scrape) scraping it."""

    traffic: SyntheticTraffic
    prometheus: PrometheusServer

    @property
    def url(self) -> str:
        """The Prometheus base URL."""
        return self.prometheus.url

    def wait_for_requests(self, service: str, version: str, minimum: float = 1.0, deadline_s: float = 30.0) -> None:
        """Wait until Prometheus has scraped at least `minimum` requests (or TCP connections) of one version."""
        selector = (f'{{__name__=~"istio_requests_total|istio_tcp_connections_opened_total",'
                    f'reporter="destination",destination_service_name="{service}",destination_version="{version}"}}')
        wait_for_result(self.url, f"sum({selector})", deadline_s, minimum)


@contextmanager
def istio_environment(seed: int = 0, scrape_interval_s: float = 1.0) -> Iterator[IstioEnvironment]:
    """Start the exporter and Prometheus; stop both on exit, even after a failure."""
    with SyntheticTraffic(NAMESPACE, seed=seed) as traffic:
        server = PrometheusServer([ScrapeJob("istio", [traffic.target])], scrape_interval_s=scrape_interval_s)
        with server:
            yield IstioEnvironment(traffic, server)
