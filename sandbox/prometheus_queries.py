"""Small read-only queries against the sandbox's Prometheus HTTP API (instant and range)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class PrometheusQueryError(RuntimeError):
    """Prometheus did not answer, or answered with an error; the message has its words."""


@dataclass(frozen=True)
class Sample:
    """One (time, value) point of a series."""

    at: float
    value: float


def _get(base_url: str, path: str, parameters: dict[str, str]) -> list[dict[str, Any]]:
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


def instant(base_url: str, query: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every series the query returns now."""
    return [(dict(item["metric"]), float(item["value"][1])) for item in _get(base_url, "/api/v1/query",
                                                                             {"query": query})]


def series_range(base_url: str, query: str, start: float, end: float, step_s: float) -> list[Sample]:
    """Points of the query's single series from `start` to `end` (the first series when several; NaN dropped)."""
    result = _get(base_url, "/api/v1/query_range",
                  {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step_s:g}"})
    if not result:
        return []
    samples = [Sample(float(at), float(value)) for at, value in result[0]["values"]]
    return [sample for sample in samples if not math.isnan(sample.value)]


def scrape_times(base_url: str, job: str, start: float, end: float) -> list[float]:
    """Timestamps of the job's scrapes between `start` and `end` (raw samples of its `up` series)."""
    seconds = max(1, int(end - start) + 1)
    result = _get(base_url, "/api/v1/query", {"query": f'up{{job="{job}"}}[{seconds}s]', "time": f"{end:.3f}"})
    if not result:
        return []
    return [float(at) for at, _value in result[0]["values"] if start <= float(at) <= end]


def value_at(base_url: str, query: str, at: float) -> float | None:
    """The query's single value evaluated at time `at` (None when it returns nothing or NaN)."""
    result = _get(base_url, "/api/v1/query", {"query": query, "time": f"{at:.3f}"})
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def first_scrape_above(base_url: str, job: str, query: str, threshold: float, start: float, end: float) -> float | None:
    """Time of the first scrape of `job` in [start, end] at which `query` exceeded `threshold`, else None."""
    for at in scrape_times(base_url, job, start, end):
        value = value_at(base_url, query, at)
        if value is not None and value > threshold:
            return at
    return None
