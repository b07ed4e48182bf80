"""The Prometheus client against a real Prometheus: every answer lands in one explicit outcome, and
failures are retried (transient) or not (refused), within a per-query timeout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from support_http import trickling_server

from rollguard.sandbox.ports import free_port
from rollguard.sandbox.prometheus_server import PrometheusServer
from rollguard.steps.metrics.custom_templates import render
from rollguard.steps.metrics.prometheus_client import PrometheusQuerier
from rollguard.steps.metrics.query_results import QueryResult, QueryStatus


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
    assert "timed out (timeout 0.3s for the whole answer)" in result.detail


def test_factory_fixture_starts_a_real_server(prometheus: Callable[..., PrometheusServer]) -> None:
    server = prometheus([])
    assert PrometheusQuerier(server.url).scalar("vector(3)").value == 3.0


def test_a_trickling_answer_is_cut_off_at_the_timeout_for_the_whole_request() -> None:
    """A byte every 0.3 s satisfies any per-read timeout; the timeout bounds the whole request."""
    outcome: list[QueryResult] = []
    with trickling_server(byte_every_s=0.3) as url:
        querier = PrometheusQuerier(url, timeout_s=1.0, attempts=2, backoff_s=0.05)
        asking = threading.Thread(target=lambda: outcome.append(querier.scalar("vector(1)")), daemon=True)
        started = time.monotonic()
        asking.start()
        asking.join(timeout=20)
        took = time.monotonic() - started
    assert not asking.is_alive(), "the query was still waiting for the trickle after 20 s"
    assert outcome[0].status is QueryStatus.ERROR and outcome[0].unreachable
    assert outcome[0].attempts == 2
    assert "timed out (timeout 1s for the whole answer)" in outcome[0].detail
    assert took < 2 * 1.0 + 0.05 + 1.5  # two tries of 1 s, one backoff, slack for a busy machine


def test_no_query_or_retry_outlives_not_after() -> None:
    with trickling_server(byte_every_s=0.3) as url:
        querier = PrometheusQuerier(url, timeout_s=5.0, attempts=5, backoff_s=0.05,
                                    not_after=time.monotonic() + 1.0)
        started = time.monotonic()
        result = querier.scalar("vector(1)")
        took = time.monotonic() - started
    assert result.status is QueryStatus.ERROR and result.attempts == 1
    assert "the analysis's time is up" in result.detail
    assert took < 1.0 + 1.0


@pytest.mark.parametrize("quote", ['"', "'"])
def test_an_escaped_value_reaches_prometheus_as_one_string(querier: PrometheusQuerier, quote: str) -> None:
    """Prometheus's own parser reads the rendered string back as exactly the value: nothing broke out."""
    value = "a'} or vector(2) # \"x\"\n\\y"
    query = render(f'label_replace(vector(1), "v", {quote}{{{{ value }}}}{quote}, "", "")', {"value": value}, "here")
    result = querier.vector(query)
    assert result.status is QueryStatus.VALUE, result.detail
    assert [dict(sample.labels).get("v") for sample in result.samples] == [value]
