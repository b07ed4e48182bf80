"""HTTP to Prometheus and nothing else: instant queries with a timeout, retries with backoff, and
every answer classified into an explicit outcome (value, empty, NaN, several series, error).

prometheus-api-client (and requests under it) is imported on first use, so `--help` stays fast.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from typing import Any

from rollguard.steps.metrics.prometheus_url import PrometheusUrl, parse_prometheus_url
from rollguard.steps.metrics.query_results import QueryResult, QueryStatus, Sample, classify

log = logging.getLogger(__name__)


class TransientQueryError(Exception):
    """Prometheus could not answer now (connection, timeout, HTTP 5xx): worth retrying."""


class RefusedQueryError(Exception):
    """Prometheus refused the query (HTTP 4xx, e.g. a PromQL syntax error): retrying will not help."""


_STATUS_IN_MESSAGE = re.compile(r"HTTP Status Code (\d+)")


class PrometheusQuerier:
    """Instant queries against one Prometheus, with a per-query timeout and tenacity retries.

    `attempts` tries per query, waiting `backoff_s`, 2x, 4x ... (at most `max_backoff_s`) between them.
    """

    def __init__(
        self, url: PrometheusUrl | str, *, timeout_s: float = 5.0, attempts: int = 3, backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
    ) -> None:
        parsed = url if isinstance(url, PrometheusUrl) else parse_prometheus_url(url)
        self.url = parsed.url  # never holds credentials: it is what messages show
        self._auth = None if parsed.auth is None else (parsed.auth.username, parsed.auth.password)
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client: Any = None

    def _connect(self) -> Any:
        if self._client is None:
            from prometheus_api_client import PrometheusConnect
            from urllib3.util.retry import Retry

            # Retries are ours (tenacity, logged); the library's own adapter would hide them.
            self._client = PrometheusConnect(url=self.url, retry=Retry(total=0), timeout=self.timeout_s,
                                             auth=self._auth)
        return self._client

    def _query_once(self, query: str) -> Any:
        import requests
        from prometheus_api_client.exceptions import PrometheusApiClientException

        try:
            return self._connect().custom_query(query)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise TransientQueryError(f"{_short(exc)} (timeout {self.timeout_s:g}s)") from None
        except PrometheusApiClientException as exc:
            text = str(exc)
            status_match = _STATUS_IN_MESSAGE.search(text)
            status = int(status_match.group(1)) if status_match else 0
            message = f"HTTP {status}: {_error_from_body(text)}"
            if 400 <= status < 500:
                raise RefusedQueryError(message) from None
            raise TransientQueryError(message) from None
        except (requests.exceptions.RequestException, ValueError) as exc:
            raise TransientQueryError(_short(exc)) from None

    def _query_with_retries(self, query: str) -> tuple[Any, int]:
        from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("Prometheus query failed (attempt %d of %d, retrying in %.1fs): %s",
                        state.attempt_number, self.attempts, state.next_action.sleep if state.next_action else 0,
                        error)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, min=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception_type(TransientQueryError),
            before_sleep=before_sleep,
            reraise=True,
        )
        attempts = 0
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                return self._query_once(query), attempts
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    def vector(self, query: str) -> QueryResult:
        """Run `query` expecting any number of series: VALUE (one or more), EMPTY, or ERROR."""
        return self._run(query, expect_one=False)

    def scalar(self, query: str) -> QueryResult:
        """Run `query` expecting exactly one series: VALUE, EMPTY, NAN, MULTIPLE, or ERROR."""
        return self._run(query, expect_one=True)

    def _run(self, query: str, *, expect_one: bool) -> QueryResult:
        try:
            data, attempts = self._query_with_retries(query)
        except TransientQueryError as exc:
            return QueryResult(query, QueryStatus.ERROR,
                               detail=f"Prometheus at {self.url} unreachable after {self.attempts} attempts: {exc}",
                               attempts=self.attempts, unreachable=True)
        except RefusedQueryError as exc:
            return QueryResult(query, QueryStatus.ERROR, detail=f"Prometheus refused the query: {exc}")
        try:
            samples = _samples(data)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            return QueryResult(query, QueryStatus.ERROR, detail=f"unexpected answer from Prometheus: {exc}",
                               attempts=attempts)
        return classify(query, samples, expect_one=expect_one, attempts=attempts)


def _samples(data: Any) -> tuple[Sample, ...]:
    """Parse the `result` of /api/v1/query: an instant vector, or a scalar `[time, "value"]`."""
    if isinstance(data, list) and len(data) == 2 and not isinstance(data[0], dict):
        return (Sample((), float(data[1])),)
    samples = []
    for item in data:
        labels = tuple(sorted((str(key), str(value)) for key, value in item["metric"].items()))
        samples.append(Sample(labels, float(item["value"][1])))
    return tuple(samples)


def _error_from_body(text: str) -> str:
    """Prometheus's own error message from the client's "HTTP Status Code 400 (b'{...}')" text."""
    start, end = text.find("("), text.rfind(")")
    try:
        body = ast.literal_eval(text[start + 1:end])
        return str(json.loads(body)["error"])
    except (ValueError, SyntaxError, TypeError, KeyError):
        return text[:200]


def _short(exc: BaseException) -> str:
    text = str(exc)
    # requests' messages nest the whole urllib3 story; the last part says what happened.
    if "Caused by" in text or "Failed to establish" in text:
        for marker in ("Connection refused", "timed out", "Name or service not known", "No route to host"):
            if marker in text:
                return f"{type(exc).__name__}: {marker}"
    return f"{type(exc).__name__}: {text[:200]}"
