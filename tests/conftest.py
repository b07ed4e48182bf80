"""Shared fixtures: real Prometheus processes, with synthetic Istio traffic to scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from support_prometheus import IstioEnvironment, istio_environment

from rollguard.sandbox.prometheus_server import PrometheusServer, ScrapeJob


@pytest.fixture
def prometheus() -> Iterator[Callable[..., PrometheusServer]]:
    """Factory: `prometheus(["127.0.0.1:PORT"], scrape_interval_s=1.0)` starts a real server; all stop at teardown."""
    started: list[PrometheusServer] = []

    def start(targets: list[str], scrape_interval_s: float = 1.0, job: str = "istio") -> PrometheusServer:
        server = PrometheusServer([ScrapeJob(job, targets)], scrape_interval_s=scrape_interval_s)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_istio_env() -> Iterator[IstioEnvironment]:
    """One synthetic exporter + Prometheus per test module; traffic stops between tests."""
    with istio_environment(seed=7) as environment:
        yield environment


@pytest.fixture
def istio_env(shared_istio_env: IstioEnvironment) -> Iterator[IstioEnvironment]:
    """The module's environment, with all simulated traffic stopped after the test."""
    yield shared_istio_env
    shared_istio_env.traffic.reset()
