"""Request counts between two snapshots of raw Istio counters, per series, minding counter resets.

Why not `increase()`: it needs two samples of a series, so the first scrape of a brand-new
`response_code="500"` series counts as nothing — exactly the errors a fast verdict needs. Here a
series absent from the baseline counts in full, and a counter that went down (a restarted pod)
counts from zero.

Which series count as what follows `failures` (the definition the PromQL uses): the destination's
requests and TCP connections, its failed ones by the error definition, and the callers' series of
requests and connections that never reached it (each counted once: such a request has no
destination-reported twin). A caller's series of an answered request is that twin and is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollguard.steps.metrics.failures import ErrorDefinition, never_reached_failure, tcp_failure
from rollguard.steps.metrics.histogram_quantile import histogram_quantile
from rollguard.steps.metrics.istio_queries import DURATION_BUCKETS, REQUESTS, TCP_CLOSED, TCP_OPENED
from rollguard.steps.metrics.query_results import Labels, Sample


@dataclass(frozen=True)
class CounterSnapshot:
    """The raw counter values of one version at one moment (seconds on the analysis clock)."""

    at_s: float
    values: dict[Labels, float]

    @classmethod
    def from_samples(cls, at_s: float, samples: tuple[Sample, ...]) -> CounterSnapshot:
        """Snapshot of the series returned by `counters_query`."""
        return cls(at_s, {sample.labels: sample.value for sample in samples})


# Istio's default buckets of istio_request_duration_milliseconds (the boundaries `le` of each bucket).
ISTIO_DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000,
    1800000, 3600000,
)


def latency_bucket_at_or_above(limit_ms: float, bounds_ms: tuple[float, ...] = ISTIO_DURATION_BUCKETS_MS) -> float:
    """The smallest finite bucket boundary at or above the latency limit (+inf when there is none).

    Requests slower than that boundary are all slower than the limit, so "more than 1 % slower than it"
    proves "p99 above the limit" soundly; a boundary below the limit would not.
    """
    return min((bound for bound in bounds_ms if bound >= limit_ms and math.isfinite(bound)), default=math.inf)


def latency_bucket_warning(limit_ms: float, bounds_ms: tuple[float, ...] = ISTIO_DURATION_BUCKETS_MS) -> str | None:
    """What the histogram cannot show about a latency limit off its boundaries, or None for an exact limit."""
    if limit_ms in bounds_ms:
        return None
    above = latency_bucket_at_or_above(limit_ms, bounds_ms)
    below = max((bound for bound in bounds_ms if bound < limit_ms), default=0.0)
    if math.isinf(above):
        return (f"--max-p99-latency-ms {limit_ms:g} is above the histogram's last bucket boundary ({below:g} ms): "
                "no p99 over it can be seen from Istio's histogram, so latency is not judged")
    return (f"--max-p99-latency-ms {limit_ms:g} is not one of the histogram's bucket boundaries: the latency test "
            f"can prove only a p99 above {above:g} ms (the boundary above it); a p99 between {limit_ms:g} and "
            f"{above:g} ms passes unseen. For an exact test use {below:g} or {above:g}")


@dataclass(frozen=True)
class WindowCounts:
    """Requests between a baseline and now: all, failed, slower than the latency bucket at or above the limit,
    and what failed how."""

    requests: int  # HTTP and gRPC requests and TCP connections, including those that never reached the version
    errors: int
    slow: int
    slow_known: bool  # the histogram has a finite boundary at or above the latency limit
    since_s: float  # analysis-clock time of the baseline
    slow_bound_ms: float = math.nan  # the boundary `slow` counts above (== the limit: exact); inf: none
    timed: int = 0  # requests with a measured duration (the destination's histogram): the latency test's base
    connections: int = 0  # of `requests`, TCP connections
    failures: tuple[tuple[str, int], ...] = ()  # (how, count), most frequent first: "gRPC UNAVAILABLE (14)", ...
    # The destination's duration buckets: (upper bound `le` in ms, requests at or below it), summed over series.
    latency_buckets: tuple[tuple[float, float], ...] = ()

    @property
    def error_rate(self) -> float:
        """Failed requests over all requests; NaN without requests (as PromQL's 0 / 0)."""
        return self.errors / self.requests if self.requests else math.nan

    def latency_quantile_ms(self, quantile: float = 0.99) -> float:
        """The duration quantile of the requests counted, as `histogram_quantile` over the buckets' increases.

        NaN without buckets or without requests in them; whether there were bucket series at all is
        `latency_buckets` being non-empty."""
        return histogram_quantile(quantile, self.latency_buckets)


def _increase(now: float, before: float) -> float:
    return now if now < before else now - before


def counts_between(
    baseline: CounterSnapshot, now: CounterSnapshot, latency_limit_ms: float, errors: ErrorDefinition | None = None
) -> WindowCounts:
    """Counts of requests, failed and slow requests that happened between two snapshots.

    Slow means slower than the smallest bucket boundary at or above the limit (the limit itself when it is
    a boundary), so a count over the allowed share is proof of a p99 over the limit.
    """
    return _RawCounts.between(baseline, now, latency_limit_ms, errors).rounded(baseline.at_s)


@dataclass(frozen=True)
class _RawCounts:
    """Counter increases as Prometheus reports them (floats), before rounding to whole requests."""

    requests: float
    timed: float
    slow: float
    connections: float
    failures: tuple[tuple[str, float], ...]
    slow_bound_ms: float
    buckets: tuple[tuple[float, float], ...] = ()  # (le, increase) summed by le, as `sum by (le)` does

    @classmethod
    def between(cls, baseline: CounterSnapshot, now: CounterSnapshot, latency_limit_ms: float,
                errors: ErrorDefinition | None = None) -> _RawCounts:
        definition = errors or ErrorDefinition()
        bounds = tuple(_bucket_bound(dict(labels).get("le", "")) for labels in now.values
                       if dict(labels).get("__name__") == DURATION_BUCKETS)
        slow_bound = latency_bucket_at_or_above(latency_limit_ms, bounds) if bounds else math.nan
        requests = connections = timed = within = 0.0
        failures: dict[str, float] = {}
        buckets: dict[float, float] = {}
        for labels, value in now.values.items():
            names = dict(labels)
            delta = _increase(value, baseline.values.get(labels, 0.0))
            metric = names.get("__name__")
            failure: str | None = None
            if names.get("reporter") == "source":
                # Only what never reached the version; any other caller series is a destination series' twin.
                if metric == REQUESTS:
                    failure = never_reached_failure(names)
                    requests += delta if failure else 0.0
                elif metric == TCP_OPENED and never_reached_failure(names, tcp=True):
                    requests += delta
                    connections += delta
                elif metric == TCP_CLOSED:
                    failure = never_reached_failure(names, tcp=True)
            elif metric == REQUESTS:
                requests += delta
                failure = definition.request_failure(names)
            elif metric == TCP_OPENED:
                requests += delta
                connections += delta
            elif metric == TCP_CLOSED:
                failure = tcp_failure(names)
            elif metric == DURATION_BUCKETS:
                bound = _bucket_bound(names.get("le", ""))
                buckets[bound] = buckets.get(bound, 0.0) + delta
                if math.isinf(bound) and bound > 0:
                    timed += delta
                elif bound == slow_bound:
                    within += delta
            if failure is not None and delta > 0:
                failures[failure] = failures.get(failure, 0.0) + delta
        return cls(requests, timed, timed - within, connections, tuple(failures.items()), slow_bound,
                   tuple(sorted(buckets.items())))

    def plus(self, later: _RawCounts) -> _RawCounts:
        failures = dict(self.failures)
        for kind, count in later.failures:
            failures[kind] = failures.get(kind, 0.0) + count
        buckets = dict(self.buckets)
        for bound, count in later.buckets:
            buckets[bound] = buckets.get(bound, 0.0) + count
        return _RawCounts(self.requests + later.requests, self.timed + later.timed, self.slow + later.slow,
                          self.connections + later.connections, tuple(failures.items()), later.slow_bound_ms,
                          tuple(sorted(buckets.items())))

    def rounded(self, since_s: float) -> WindowCounts:
        total = round(self.requests)
        slow_known = math.isfinite(self.slow_bound_ms)
        timed_total = min(total, round(self.timed))
        slow = min(timed_total, max(0, round(self.slow))) if slow_known else 0
        kinds = tuple(sorted(((kind, round(count)) for kind, count in self.failures if round(count) > 0),
                             key=lambda item: (-item[1], item[0])))
        failed = min(total, round(sum(count for _, count in self.failures)))
        return WindowCounts(total, failed, slow, slow_known, since_s, self.slow_bound_ms, timed_total,
                            round(self.connections), kinds, self.buckets)


def _bucket_bound(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


class CounterHistory:
    """Snapshots of one version over the analysis; picks the baseline for a window and forgets the rest."""

    def __init__(self) -> None:
        self._snapshots: list[CounterSnapshot] = []
        self._latest: CounterSnapshot | None = None
        self._running: _RawCounts | None = None

    @property
    def since_start(self) -> WindowCounts | None:
        """Running totals from the first snapshot to the latest one (None before any snapshot)."""
        if self._running is None or self.first is None:
            return None
        return self._running.rounded(self.first.at_s)

    @property
    def requests_since_start(self) -> int:
        """Requests between the first snapshot and the latest one (0 before two snapshots)."""
        return self.since_start.requests if self.since_start is not None else 0

    @property
    def first(self) -> CounterSnapshot | None:
        """The first snapshot taken (the analysis baseline), if any was taken yet."""
        return self._snapshots[0] if self._snapshots else None

    def add(self, snapshot: CounterSnapshot, latency_limit_ms: float = math.inf,
            errors: ErrorDefinition | None = None) -> None:
        """Remember a snapshot (in time order) and add what happened since the previous one to the running
        totals. Summed step by step, a counter reset between two snapshots loses only what that pod counted
        since the previous snapshot, and the totals never go down: the sequential tests need counts that
        only grow, as a stream of requests does."""
        self._snapshots.append(snapshot)
        previous, self._latest = self._latest, snapshot
        step = _RawCounts.between(previous or snapshot, snapshot, latency_limit_ms, errors)
        self._running = step if self._running is None else self._running.plus(step)

    def baseline(self, now_s: float, window_s: float) -> CounterSnapshot:
        """The newest snapshot at least `window_s` old, else the first one; older ones are dropped.

        The first snapshot is always kept, for the since-start count behind --min-requests.
        """
        if not self._snapshots:
            raise ValueError("no snapshot yet")
        chosen = 0
        for index, snapshot in enumerate(self._snapshots):
            if snapshot.at_s <= now_s - window_s:
                chosen = index
        if chosen > 1:
            del self._snapshots[1:chosen]
            chosen = 1
        return self._snapshots[chosen]
