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


@dataclass(frozen=True)
class WindowCounts:
    """Requests between a baseline and now: all, failed, slower than the latency limit, and what failed how."""

    requests: int  # HTTP and gRPC requests and TCP connections, including those that never reached the version
    errors: int
    slow: int
    slow_known: bool  # the latency limit is one of the histogram's bucket boundaries
    since_s: float  # analysis-clock time of the baseline
    timed: int = 0  # requests with a measured duration (the destination's histogram): the latency test's base
    connections: int = 0  # of `requests`, TCP connections
    failures: tuple[tuple[str, int], ...] = ()  # (how, count), most frequent first: "gRPC UNAVAILABLE (14)", ...


def _increase(now: float, before: float) -> float:
    return now if now < before else now - before


def counts_between(
    baseline: CounterSnapshot, now: CounterSnapshot, latency_limit_ms: float, errors: ErrorDefinition | None = None
) -> WindowCounts:
    """Counts of requests, failed and slow requests that happened between two snapshots."""
    definition = errors or ErrorDefinition()
    requests = connections = timed = within = 0.0
    failures: dict[str, float] = {}
    slow_known = False
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
            if math.isinf(bound) and bound > 0:
                timed += delta
            elif bound == latency_limit_ms:
                within += delta
                slow_known = True
        if failure is not None and delta > 0:
            failures[failure] = failures.get(failure, 0.0) + delta
    total = round(requests)
    timed_total = min(total, round(timed))
    slow = min(timed_total, max(0, round(timed - within))) if slow_known else 0
    kinds = tuple(sorted(((kind, round(count)) for kind, count in failures.items() if round(count) > 0),
                         key=lambda item: (-item[1], item[0])))
    failed = min(total, round(sum(failures.values())))
    return WindowCounts(total, failed, slow, slow_known, baseline.at_s, timed_total, round(connections), kinds)


def _bucket_bound(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


class CounterHistory:
    """Snapshots of one version over the analysis; picks the baseline for a window and forgets the rest."""

    def __init__(self) -> None:
        self._snapshots: list[CounterSnapshot] = []
        self.requests_since_start = 0  # requests between the first snapshot and the latest one

    @property
    def first(self) -> CounterSnapshot | None:
        """The first snapshot taken (the analysis baseline), if any was taken yet."""
        return self._snapshots[0] if self._snapshots else None

    def add(self, snapshot: CounterSnapshot) -> None:
        """Remember a snapshot (in time order)."""
        self._snapshots.append(snapshot)

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
