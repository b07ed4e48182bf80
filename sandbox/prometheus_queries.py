"""Small read-only queries against the sandbox's Prometheus HTTP API (instant and range).

`base_url` is the sandbox's plain URL, or a PrometheusConnection (the experiment's cluster target): then the
request carries its headers, token, TLS settings or SigV4 signature, and errors are scrubbed of its secrets.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from rollguard.steps.metrics.http_get import HttpFailure, http_get, request_url
from rollguard.steps.metrics.prometheus_connection import PrometheusConnection

PrometheusTarget = str | PrometheusConnection
CONNECTION_TIMEOUT_S = 10.0


class PrometheusQueryError(RuntimeError):
    """Prometheus did not answer, or answered with an error; the message has its words."""


@dataclass(frozen=True)
class Sample:
    """One (time, value) point of a series."""

    at: float
    value: float


def _get_with(connection: PrometheusConnection, path: str, parameters: dict[str, str]) -> Any:
    import time

    target = f"{connection.url}{path}"
    try:
        headers = connection.headers("GET", request_url(target, parameters))
        tls = connection.tls() if target.startswith("https://") else None
        answer = http_get(target, parameters, headers=headers, tls=tls,
                          deadline=time.monotonic() + CONNECTION_TIMEOUT_S)
    except (HttpFailure, Exception) as exc:  # also a token file mid-rotation, AWS credentials that do not refresh
        raise PrometheusQueryError(connection.scrub(f"Prometheus at {connection.url} does not answer: {exc}")) from None
    if answer.status != 200:
        what = "refused authentication" if answer.status in (401, 403) else "answered"
        detail = connection.scrub(answer.body[:300].decode(errors="replace"))
        raise PrometheusQueryError(f"{path} {parameters.get('query')!r}: Prometheus {what}: HTTP {answer.status} "
                                   f"{detail}")
    try:
        return json.loads(answer.body)
    except ValueError:
        raise PrometheusQueryError(f"{path} {parameters.get('query')!r}: the answer is not JSON") from None


def _get(base_url: PrometheusTarget, path: str, parameters: dict[str, str]) -> list[dict[str, Any]]:
    if isinstance(base_url, PrometheusConnection):
        body = _get_with(base_url, path, parameters)
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else body
            raise PrometheusQueryError(f"{parameters.get('query')!r}: {base_url.scrub(str(error))}")
        return list(body["data"]["result"])
    url = f"{base_url}{path}?{urllib.parse.urlencode(parameters)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode(errors="replace")
        raise PrometheusQueryError(f"{path} {parameters.get('query')!r}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusQueryError(f"Prometheus at {base_url} does not answer: {exc}") from None
    if body.get("status") != "success":
        raise PrometheusQueryError(f"{parameters.get('query')!r}: {body.get('error')}")
    return list(body["data"]["result"])


def instant(base_url: PrometheusTarget, query: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every series the query returns now."""
    return [(dict(item["metric"]), float(item["value"][1])) for item in _get(base_url, "/api/v1/query",
                                                                             {"query": query})]


def series_range(base_url: PrometheusTarget, query: str, start: float, end: float, step_s: float) -> list[Sample]:
    """Points of the query's single series from `start` to `end` (the first series when several; NaN dropped)."""
    result = _get(base_url, "/api/v1/query_range",
                  {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"})
    if not result:
        return []
    samples = [Sample(float(at), float(value)) for at, value in result[0]["values"]]
    return [sample for sample in samples if not math.isnan(sample.value)]


def scrape_times(base_url: PrometheusTarget, job: str, start: float, end: float) -> list[float]:
    """Timestamps of the job's scrapes between `start` and `end` (raw samples of its `up` series)."""
    seconds = max(1, int(end - start) + 1)
    result = _get(base_url, "/api/v1/query", {"query": f'up{{job="{job}"}}[{seconds}s]', "time": f"{end:.3f}"})
    if not result:
        return []
    return [float(at) for at, _value in result[0]["values"] if start <= float(at) <= end]


def value_at(base_url: PrometheusTarget, query: str, at: float) -> float | None:
    """The query's single value evaluated at time `at` (None when it returns nothing or NaN)."""
    result = _get(base_url, "/api/v1/query", {"query": query, "time": f"{at:.3f}"})
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def first_scrape_above(
    base_url: PrometheusTarget, job: str, query: str, threshold: float, start: float, end: float
) -> float | None:
    """Time of the first scrape of `job` in [start, end] at which `query` exceeded `threshold`, else None."""
    for at in scrape_times(base_url, job, start, end):
        value = value_at(base_url, query, at)
        if value is not None and value > threshold:
            return at
    return None
