"""The built-in PromQL over Istio's standard metrics (reporter="destination"), as pure functions.

A query is an interface with users (dashboards, alert rules, the sandbox), so the tests assert
every rendered query verbatim: a change here must show up as a diff there.
"""

from __future__ import annotations

from rollguard.steps.metrics.promql import range_window, selector

REQUESTS = "istio_requests_total"
DURATION_BUCKETS = "istio_request_duration_milliseconds_bucket"
SERVER_ERRORS = 'response_code=~"5.."'


def version_selector(namespace: str, service: str, version: str, extra: str = "") -> str:
    """Label matchers for one version (subset) of a service, as Istio's destination reporter labels it."""
    return selector(
        {
            "reporter": "destination",
            "destination_workload_namespace": namespace,
            "destination_service_name": service,
            "destination_version": version,
        },
        extra,
    )


def error_rate_query(namespace: str, service: str, version: str, window: str | float) -> str:
    """Share of requests answered 5xx over `window`: 0 when there were none, NaN without traffic."""
    errors_selector = version_selector(namespace, service, version, SERVER_ERRORS)
    errors = f"sum(rate({REQUESTS}{errors_selector}[{range_window(window)}]))"
    total = f"sum(rate({REQUESTS}{version_selector(namespace, service, version)}[{range_window(window)}]))"
    # `or on() vector(0)`: with no 5xx series at all the error rate is 0, not "no data".
    return f"({errors} or on() vector(0)) / {total}"


def p99_latency_query(namespace: str, service: str, version: str, window: str | float) -> str:
    """99th percentile request duration in milliseconds over `window`, from Istio's histogram."""
    buckets = f"rate({DURATION_BUCKETS}{version_selector(namespace, service, version)}[{range_window(window)}])"
    return f"histogram_quantile(0.99, sum by (le) ({buckets}))"


def request_count_query(namespace: str, service: str, version: str, window: str | float) -> str:
    """Number of requests over `window` (Prometheus's extrapolated increase, so not always whole)."""
    return f"sum(increase({REQUESTS}{version_selector(namespace, service, version)}[{range_window(window)}]))"


def counters_query(namespace: str, service: str, version: str) -> str:
    """The raw request counters and duration buckets of one version, every series, in one snapshot.

    rollguard subtracts two snapshots itself (per series, minding counter resets), so a series that
    appears during the analysis (the first 500) is counted in full, which increase() would not do.
    """
    names = f'__name__=~"{REQUESTS}|{DURATION_BUCKETS}"'
    return version_selector(namespace, service, version, names)
