"""The built-in PromQL over Istio's standard metrics, as pure functions.

What a version served is what its own proxies report (`reporter="destination"`): HTTP and gRPC requests
(`istio_requests_total`) and TCP connections (`istio_tcp_connections_opened_total`). Added to it: the
requests and connections to the version that its callers' proxies failed before they reached it
(`reporter="source"`, flags UH/UF/UO), which no destination series shows. Which answers are failures is
`failures.ErrorDefinition`'s one definition; every query here composes its selectors, so an alert rule, the
experiment's breach detection and the analysis count the same errors.

A query is an interface with users (dashboards, alert rules, the sandbox), so the tests assert
every rendered query verbatim: a change here must show up as a diff there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rollguard.steps.metrics.failures import (
    NEVER_REACHED_FLAGS,
    SERVER_ERRORS,
    TCP_FAILURE_FLAGS,
    ErrorDefinition,
    flags_matcher,
)
from rollguard.steps.metrics.promql import escape_label_value, range_window, regex_alternatives, selector
from rollguard.steps.metrics.querier import AnswerShape, QuerySpec

REQUESTS = "istio_requests_total"
DURATION_BUCKETS = "istio_request_duration_milliseconds_bucket"
TCP_OPENED = "istio_tcp_connections_opened_total"
TCP_CLOSED = "istio_tcp_connections_closed_total"

__all__ = [
    "DURATION_BUCKETS", "REQUESTS", "SERVER_ERRORS", "TCP_CLOSED", "TCP_OPENED", "AnalysisQueries", "VersionQueries",
    "VersionSeries", "analysis_queries", "caller_selector", "counters_query", "error_rate_query",
    "failures_increase_query", "p99_latency_query", "version_selector",
]


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


def caller_selector(namespace: str, service: str, version: str, extra: str = "", *,
                    unattributed: bool = False) -> str:
    """Label matchers for what callers' proxies (`reporter="source"`) report about requests to one version.

    A caller's proxy learns the destination's labels from its answer (Istio's peer metadata). Without one,
    Istio's stats filter falls back to the chosen endpoint's metadata (workload, namespace, canonical
    revision; `destination_version` stays "unknown"), and with no endpoint at all (UH) it knows only the
    service (`destination_canonical_revision` "latest"). So a caller's series is the version's when
    `destination_version` is the version or "unknown" and `destination_canonical_revision` is the version
    (the pod's `version` label, unless `service.istio.io/canonical-revision` or `app.kubernetes.io/version`
    says otherwise) — or, with `unattributed` (the canary), "latest": no endpoint of any version was there
    to choose. During a canary analysis that is the canary's subset; a stable without endpoints is an outage
    of its own, which the rollback's evidence names. The service is matched by
    `destination_service_namespace`: the caller knows the service's namespace even when it knows no workload.
    """
    revisions = [version, "latest"] if unattributed else [version]
    matchers = [
        f'destination_version=~"{escape_label_value(regex_alternatives([version, "unknown"]))}"',
        f'destination_canonical_revision=~"{escape_label_value(regex_alternatives(revisions))}"'
        if unattributed else f'destination_canonical_revision="{escape_label_value(version)}"',
    ]
    base = {"reporter": "source", "destination_service_namespace": namespace, "destination_service_name": service}
    return selector(base, _joined(*matchers, extra))


def _joined(*matchers: str) -> str:
    return ",".join(matcher for matcher in matchers if matcher)


@dataclass(frozen=True)
class VersionSeries:
    """Where one version's requests, connections and failures are, as PromQL series selectors."""

    namespace: str
    service: str
    version: str
    errors: ErrorDefinition = field(default_factory=ErrorDefinition)
    unattributed: bool = False  # also own caller-reported failures no endpoint could be chosen for (the canary)

    def _destination(self, metric: str, extra: str = "") -> str:
        return f"{metric}{version_selector(self.namespace, self.service, self.version, extra)}"

    def _callers(self, metric: str, extra: str) -> str:
        matchers = caller_selector(self.namespace, self.service, self.version, extra, unattributed=self.unattributed)
        return f"{metric}{matchers}"

    def requests(self) -> tuple[str, ...]:
        """Series whose increase is requests (HTTP, gRPC) and TCP connections to the version, each counted once."""
        served = version_selector(self.namespace, self.service, self.version, f'__name__=~"{REQUESTS}|{TCP_OPENED}"')
        return (
            served,
            self._callers(REQUESTS, flags_matcher(NEVER_REACHED_FLAGS)),
            self._callers(TCP_OPENED, flags_matcher(TCP_FAILURE_FLAGS)),
        )

    def failures(self) -> tuple[str, ...]:
        """Series whose increase is failed requests and connections (a series matching twice is kept once by `or`)."""
        return (
            *(self._destination(REQUESTS, matcher) for matcher in self.errors.request_error_matchers()),
            self._destination(TCP_CLOSED, flags_matcher(TCP_FAILURE_FLAGS)),
            self._callers(REQUESTS, flags_matcher(NEVER_REACHED_FLAGS)),
            self._callers(TCP_CLOSED, flags_matcher(TCP_FAILURE_FLAGS)),
        )

    def counters(self) -> str:
        """Every raw counter series rollguard subtracts itself (see `counters_query`).

        One selector per part: PromQL's `or` matches series without their metric names, so two metrics
        with equal labels (a connection's opened and closed series) must come from the same selector.
        """
        names = f'__name__=~"{REQUESTS}|{DURATION_BUCKETS}|{TCP_OPENED}|{TCP_CLOSED}"'
        tcp = f'__name__=~"{TCP_OPENED}|{TCP_CLOSED}"'
        return " or ".join((
            version_selector(self.namespace, self.service, self.version, names),
            self._callers(REQUESTS, flags_matcher(NEVER_REACHED_FLAGS)),
            self._callers("", _joined(tcp, flags_matcher(TCP_FAILURE_FLAGS))),
        ))


def _rates(series: tuple[str, ...], window: str | float) -> str:
    """`rate(a[w]) or rate(b[w]) ...`: the union of the series' rates, a series matched twice kept once.

    Safe across metrics: Istio labels every request series `request_protocol` http or grpc and every TCP
    series tcp, and the two reporters differ in `reporter`, so no two distinct series share their labels
    once rate() drops the metric name.
    """
    return " or ".join(f"rate({one}[{range_window(window)}])" for one in series)


def error_rate_query(namespace: str, service: str, version: str, window: str | float,
                     errors: ErrorDefinition | None = None, *, unattributed: bool = True) -> str:
    """Share of failed requests (and TCP connections) over `window`: 0 when none failed, NaN without traffic.

    `unattributed` (the default, for the canary) also counts caller-reported failures for which no
    endpoint could be chosen (see `caller_selectors`); the stable's query leaves them out.
    """
    series = VersionSeries(namespace, service, version, errors or ErrorDefinition(), unattributed)
    # `or on() vector(0)`: with no failure series at all the error rate is 0, not "no data".
    return f"(sum({_rates(series.failures(), window)}) or on() vector(0)) / sum({_rates(series.requests(), window)})"


def failures_increase_query(namespace: str, service: str, version: str, window: str | float,
                            errors: ErrorDefinition | None = None) -> str:
    """How many requests and connections to the canary version failed over `window` (the experiment's count)."""
    series = VersionSeries(namespace, service, version, errors or ErrorDefinition(), unattributed=True)
    return "sum(" + " or ".join(f"increase({one}[{range_window(window)}])" for one in series.failures()) + ")"


def p99_latency_query(namespace: str, service: str, version: str, window: str | float) -> str:
    """99th percentile request duration in milliseconds over `window`, from Istio's histogram.

    The destination's own measurement: requests that never reached the version have no duration there,
    and TCP connections none at all.
    """
    buckets = f"rate({DURATION_BUCKETS}{version_selector(namespace, service, version)}[{range_window(window)}])"
    return f"histogram_quantile(0.99, sum by (le) ({buckets}))"


def counters_query(namespace: str, service: str, version: str, *, unattributed: bool = False) -> str:
    """The raw counters of one version, every series, in one snapshot: the destination's requests, duration
    buckets and TCP connections, and the callers' series of requests and connections that never reached it.

    rollguard subtracts two snapshots itself (per series, minding counter resets), so a series that
    appears during the analysis (the first 500) is counted in full, which increase() would not do.
    """
    return VersionSeries(namespace, service, version, unattributed=unattributed).counters()


@dataclass(frozen=True)
class VersionQueries:
    """The built-in queries of one version: raw counters (all series), error rate and p99 (one value each).

    The error rate and the p99 of the window are also computed from the counters' answer (`counter_window`):
    only a judge of Prometheus's own rates (the threshold rule) sends their queries.
    """

    counters: QuerySpec
    error_rate: QuerySpec
    p99_latency_ms: QuerySpec


@dataclass(frozen=True)
class AnalysisQueries:
    """Every built-in query of an analysis, canary and stable over the same window."""

    canary: VersionQueries
    stable: VersionQueries

    def in_order(self, *, point_values: bool) -> tuple[QuerySpec, ...]:
        """The queries a check sends, in the order they run, are logged and are recorded in the verdict's
        settings: the two counters queries, then, with `point_values`, the error-rate and p99 queries."""
        counters = (self.canary.counters, self.stable.counters)
        if not point_values:
            return counters
        return (*counters, self.canary.error_rate, self.stable.error_rate, self.canary.p99_latency_ms,
                self.stable.p99_latency_ms)


def analysis_queries(namespace: str, service: str, canary_version: str, stable_version: str,
                     window: str, errors: ErrorDefinition | None = None) -> AnalysisQueries:
    """The built-in queries for one canary analysis; each version's names start with canary_ or stable_."""
    definition = errors or ErrorDefinition()

    def of(role: str, version: str) -> VersionQueries:
        canary = role == "canary"
        return VersionQueries(
            counters=QuerySpec(f"{role}_counters",
                               counters_query(namespace, service, version, unattributed=canary), AnswerShape.SERIES),
            error_rate=QuerySpec(f"{role}_error_rate",
                                 error_rate_query(namespace, service, version, window, definition, unattributed=canary),
                                 AnswerShape.ONE_VALUE),
            p99_latency_ms=QuerySpec(f"{role}_p99_latency_ms", p99_latency_query(namespace, service, version, window),
                                     AnswerShape.ONE_VALUE),
        )

    return AnalysisQueries(canary=of("canary", canary_version), stable=of("stable", stable_version))
