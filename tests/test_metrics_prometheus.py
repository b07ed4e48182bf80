"""The Prometheus client against a real Prometheus: every answer lands in one explicit outcome, and
failures are retried (transient) or not (refused), within a per-query timeout."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from rollguard.sandbox.ports import free_port
from rollguard.sandbox.prometheus_server import PrometheusServer
from rollguard.steps.metrics.prometheus_client import PrometheusQuerier
from rollguard.steps.metrics.query_results import QueryStatus


@pytest.fixture(scope="module")
def querier() -> Iterator[PrometheusQuerier]:
    with PrometheusServer([]) as server:
        yield PrometheusQuerier(server.url, timeout_s=5.0, attempts=3, backoff_s=0.05)


@pytest.mark.parametrize(
    ("query", "status", "value"),
    [
        ("vector(1)", QueryStatus.VALUE, 1.0),
        ("1 + 1", QueryStatus.VALUE, 2.0),  # a scalar answer, not a vector
        ("vector(0) / 0", QueryStatus.NAN, None),
        ("rollguard_no_such_metric", QueryStatus.EMPTY, None),
        ('label_replace(vector(1), "pod", "a", "", "") or label_replace(vector(2), "pod", "b", "", "")',
         QueryStatus.MULTIPLE, None),
    ],
)
def test_answers_are_classified(
    querier: PrometheusQuerier, query: str, status: QueryStatus, value: float | None
) -> None:
    result = querier.scalar(query)
    assert result.status is status, result.detail
    assert result.attempts == 1
    if value is not None:
        assert result.value == value


def test_vector_accepts_several_series(querier: PrometheusQuerier) -> None:
    two = 'label_replace(vector(1), "pod", "a", "", "") or label_replace(vector(2), "pod", "b", "", "")'
    result = querier.vector(two)
    assert result.status is QueryStatus.VALUE
    assert sorted(dict(sample.labels)["pod"] for sample in result.samples) == ["a", "b"]


def test_refused_query_is_not_retried(querier: PrometheusQuerier) -> None:
    result = querier.scalar("sum(rate(x[1m])")
    assert result.status is QueryStatus.ERROR and not result.unreachable
    assert result.attempts == 1
    assert "refused the query: HTTP 400" in result.detail and "parse error" in result.detail


def test_unreachable_prometheus_is_retried_then_an_error(caplog: pytest.LogCaptureFixture) -> None:
    querier = PrometheusQuerier(f"http://127.0.0.1:{free_port()}", attempts=3, backoff_s=0.05)
    with caplog.at_level("WARNING"):
        result = querier.scalar("vector(1)")
    assert result.status is QueryStatus.ERROR and result.unreachable
    assert result.attempts == 3
    assert "unreachable after 3 attempts" in result.detail and "Connection refused" in result.detail
    assert sum("retrying in" in record.getMessage() for record in caplog.records) == 2


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections but never answers: the per-query timeout must end the wait."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_query_timeout_applies(silent_server: int) -> None:
    querier = PrometheusQuerier(f"http://127.0.0.1:{silent_server}", timeout_s=0.3, attempts=2, backoff_s=0.05)
    result = querier.scalar("vector(1)")
    assert result.status is QueryStatus.ERROR and result.unreachable
    assert "timed out (timeout 0.3s)" in result.detail


def test_factory_fixture_starts_a_real_server(prometheus: Callable[..., PrometheusServer]) -> None:
    server = prometheus([])
    assert PrometheusQuerier(server.url).scalar("vector(3)").value == 3.0
