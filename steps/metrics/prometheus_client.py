"""HTTP to Prometheus and nothing else: instant queries, each ended by its timeout (for the whole
answer, not each read), retries with backoff, and every answer classified into an explicit outcome
(value, empty, NaN, several series, error).

How to reach it (headers, a bearer token, TLS, SigV4) is a PrometheusConnection; every message is scrubbed of
the secrets it sends. An answer 401 or 403 is an `error` outcome that names authentication, not "unreachable".

`not_after` ends every query and retry at one moment on the monotonic clock, whatever Prometheus
does: analyze sets it so the analysis ends within its bake time plus a known margin.
tenacity is imported on first use, so `--help` stays fast.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from rollguard.steps.metrics.http_get import DeadlinePassed, HttpFailure, UntrustedCertificate, http_get, request_url
from rollguard.steps.metrics.prometheus_answers import MalformedAnswer, samples_of_answer
from rollguard.steps.metrics.prometheus_connection import connection_for
from rollguard.steps.metrics.prometheus_endpoint import PrometheusEndpoint
from rollguard.steps.metrics.prometheus_url import PrometheusUrl
from rollguard.steps.metrics.query_results import QueryResult, QueryStatus, classify

log = logging.getLogger(__name__)


class TransientQueryError(Exception):
    """Prometheus could not answer now (connection, timeout, HTTP 5xx): worth retrying."""

    def __init__(self, message: str, attempts: int = 1) -> None:
        super().__init__(message)
        self.attempts = attempts


class RefusedQueryError(Exception):
    """Prometheus refused the query (HTTP 4xx, e.g. a PromQL syntax error): retrying will not help."""


class AuthenticationRefused(RefusedQueryError):
    """HTTP 401 or 403: the server (or the proxy in front of it) did not accept rollguard's credentials."""


class CertificateRefused(RefusedQueryError):
    """The server's TLS certificate is not trusted (wrong CA, name mismatch, expired): not retried."""


AUTH_HINT = ("check --prometheus-bearer-token-file, --prometheus-header (X-Scope-OrgID for Mimir/Cortex), the "
             "user:password in --prometheus-url, or --prometheus-sigv4's AWS credentials and region")


class PrometheusQuerier:
    """Instant queries against one Prometheus, each within `timeout_s`, with tenacity retries.

    `attempts` tries per query, waiting `backoff_s`, 2x, 4x ... (at most `max_backoff_s`) between them;
    no query runs or waits past `not_after` (time.monotonic()).
    """

    def __init__(
        self, url: PrometheusEndpoint | PrometheusUrl | str, *, timeout_s: float = 5.0, attempts: int = 3,
        backoff_s: float = 0.2, max_backoff_s: float = 2.0, not_after: float = math.inf,
    ) -> None:
        self.connection = connection_for(url)
        self.url = self.connection.url  # never holds credentials: it is what messages show
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.not_after = not_after

    def _query_once(self, query: str) -> Any:
        own_deadline = time.monotonic() + self.timeout_s
        deadline = min(own_deadline, self.not_after)
        target, params = f"{self.url}/api/v1/query", {"query": query}
        try:
            headers = self.connection.headers("GET", request_url(target, params))
            tls = self.connection.tls() if self.url.startswith("https://") else None
        except Exception as exc:  # a token file mid-rotation, AWS credentials not refreshable: may pass next time
            raise TransientQueryError(f"could not prepare the request: {exc}") from None
        try:
            answer = http_get(target, params, headers=headers, deadline=deadline, tls=tls)
        except DeadlinePassed:
            if deadline < own_deadline:
                raise TransientQueryError("the analysis's time is up (its last planned check plus one query "
                                          "timeout)") from None
            raise TransientQueryError(f"timed out (timeout {self.timeout_s:g}s for the whole answer)") from None
        except UntrustedCertificate as exc:
            raise CertificateRefused(str(exc)) from None
        except HttpFailure as exc:
            raise TransientQueryError(str(exc)) from None
        if answer.status != 200:
            message = f"HTTP {answer.status}: {_error_from_body(answer.body)}"
            if answer.status in (401, 403) or (answer.status == 400 and _names_authentication(message)):
                raise AuthenticationRefused(message)
            if 400 <= answer.status < 500:
                raise RefusedQueryError(message)
            raise TransientQueryError(message)
        try:
            return json.loads(answer.body)
        except ValueError as exc:
            raise TransientQueryError(f"the answer is not JSON: {exc}") from None

    def _query_with_retries(self, query: str) -> tuple[Any, int]:
        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_any,
            wait_exponential,
        )
        from tenacity.stop import stop_base

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning("Prometheus query failed (attempt %d of %d, retrying in %.1fs): %s",
                        state.attempt_number, self.attempts, state.next_action.sleep if state.next_action else 0,
                        self.connection.scrub(str(error)))

        not_after = self.not_after

        class OutOfTime(stop_base):
            """Stop when the wait before the next try would reach `not_after`."""

            def __call__(self, state: RetryCallState) -> bool:
                return time.monotonic() + (state.upcoming_sleep or 0.0) >= not_after

        retrying = Retrying(
            stop=stop_any(stop_after_attempt(self.attempts), OutOfTime()),
            wait=wait_exponential(multiplier=self.backoff_s, min=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception_type(TransientQueryError),
            before_sleep=before_sleep,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    return self._query_once(query), attempts
        except TransientQueryError as exc:
            raise TransientQueryError(str(exc), attempts) from None
        raise AssertionError("unreachable: tenacity either returns or re-raises")  # pragma: no cover

    def vector(self, query: str) -> QueryResult:
        """Run `query` expecting any number of series: VALUE (one or more), EMPTY, or ERROR."""
        return self._run(query, expect_one=False)

    def scalar(self, query: str) -> QueryResult:
        """Run `query` expecting exactly one series: VALUE, EMPTY, NAN, MULTIPLE, or ERROR."""
        return self._run(query, expect_one=True)

    def _run(self, query: str, *, expect_one: bool) -> QueryResult:
        scrub = self.connection.scrub
        try:
            document, attempts = self._query_with_retries(query)
        except TransientQueryError as exc:
            detail = f"Prometheus at {self.url} unreachable after {exc.attempts} attempts: {exc}"
            return QueryResult(query, QueryStatus.ERROR, detail=scrub(detail),
                               attempts=exc.attempts, unreachable=True)
        except CertificateRefused as exc:
            return QueryResult(query, QueryStatus.ERROR,
                               detail=scrub(f"the TLS certificate of Prometheus at {self.url} is not trusted ({exc}); "
                                            "give its CA with --prometheus-ca-file"))
        except AuthenticationRefused as exc:
            return QueryResult(query, QueryStatus.ERROR,
                               detail=scrub(f"Prometheus at {self.url} refused authentication ({exc}); {AUTH_HINT}"))
        except RefusedQueryError as exc:
            return QueryResult(query, QueryStatus.ERROR, detail=scrub(f"Prometheus refused the query: {exc}"))
        try:
            samples = samples_of_answer(document)
        except MalformedAnswer as exc:
            return QueryResult(query, QueryStatus.ERROR, detail=scrub(f"Prometheus answered HTTP 200 but {exc}"),
                               attempts=attempts)
        return classify(query, samples, expect_one=expect_one, attempts=attempts)


# Words of proxies that refuse credentials with another status: vmauth answers an unknown bearer token with
# HTTP 400 "cannot find the provided auth token"; AWS with 400 on a bad signature date. ("token" alone is not
# one: PromQL parse errors speak of unexpected tokens.)
_AUTHENTICATION_WORDS = ("auth", "credential", "unauthorized", "forbidden", "access denied", "signature")


def _names_authentication(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in _AUTHENTICATION_WORDS)


def _error_from_body(body: bytes) -> str:
    """Prometheus's own error message (`{"status": "error", "error": "..."}`), else the start of the body."""
    text = body.decode("utf-8", errors="replace")
    try:
        return str(json.loads(text)["error"])
    except (ValueError, TypeError, KeyError):
        return text[:200] or "empty answer"
