"""Prometheus's `histogram_quantile` over classic buckets, computed locally: the window's p99 comes from the
bucket increases rollguard already subtracted from its counter snapshots, instead of one more query.

The rules are Prometheus's (`promql/quantile.go`, `bucketQuantile`): buckets with the same upper bound are
added up, decreases between successive buckets are removed (the "envelope"), the quantile is interpolated
linearly within its bucket, the first bucket starts at 0 unless its upper bound is ≤ 0 (then that bound is
the answer), and a quantile in the +Inf bucket is the highest finite bound. NaN when there is no +Inf bucket,
fewer than two buckets or no observation. (Prometheus also evens out relative differences under 1e-12
between successive buckets, float noise that whole counter increases do not have.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["histogram_quantile"]


def histogram_quantile(quantile: float, buckets: Iterable[tuple[float, float]]) -> float:
    """The `quantile` (0..1) of a histogram given as (upper bound `le`, cumulative count) pairs, as PromQL's
    `histogram_quantile(quantile, sum by (le) (...))` computes it. A NaN bound (an `le` that is not a number)
    is skipped, as Prometheus skips an `le` it cannot parse."""
    if math.isnan(quantile):
        return math.nan
    if quantile < 0:
        return -math.inf
    if quantile > 1:
        return math.inf
    merged: dict[float, float] = {}
    for bound, count in buckets:
        if not math.isnan(bound):
            merged[bound] = merged.get(bound, 0.0) + count
    if not merged:
        return math.nan
    bounds = sorted(merged)
    if not (math.isinf(bounds[-1]) and bounds[-1] > 0):
        return math.nan
    counts = [merged[bound] for bound in bounds]
    for index in range(1, len(counts)):  # the envelope: a bucket never holds fewer than the one below it
        counts[index] = max(counts[index], counts[index - 1])
    if len(bounds) < 2:
        return math.nan
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = quantile * observations
    # The first bucket (the +Inf one excluded) whose count reaches the rank.
    found = next((index for index in range(len(bounds) - 1) if counts[index] >= rank), len(bounds) - 1)
    if found == len(bounds) - 1:
        return bounds[-2]
    if found == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[found], counts[found]
    if found > 0:
        start = bounds[found - 1]
        count -= counts[found - 1]
        rank -= counts[found - 1]
    # rank and count are 0 together only at quantile 0 over an empty first bucket: Go's 0 / 0, NaN.
    return start + (end - start) * (rank / count if count else math.nan)
