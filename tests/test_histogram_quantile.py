"""The local histogram_quantile (the window's p99 without a query): exact values of Prometheus's rules, then
the same buckets through a real Prometheus's own `histogram_quantile`, case by case."""

from __future__ import annotations

import http.server
import math
import threading
from collections.abc import Callable, Iterator

import pytest
from support_prometheus import query, wait_for_result

from rollguard.sandbox.prometheus_server import PrometheusServer
from rollguard.steps.metrics.histogram_quantile import histogram_quantile

INF = math.inf
NAN = math.nan


@pytest.mark.parametrize(("quantile", "buckets", "expected"), [
    # Linear within the bucket the rank falls in: rank 0.99 × 40 = 39.6, between 38 (≤ 250) and 39.8 (≤ 500).
    (0.99, [(100, 30), (250, 38), (500, 39.8), (INF, 40)], 250 + 250 * 1.6 / 1.8),
    (0.5, [(100, 30), (250, 38), (500, 39.8), (INF, 40)], 100 * 20 / 30),  # the first bucket starts at 0
    (1.0, [(100, 5), (500, 10), (INF, 10)], 500.0),
    (0.99, [(100, 0), (250, 0), (INF, 10)], 250.0),  # in the +Inf bucket: the highest finite bound
    (0.25, [(-5, 10), (0, 10), (10, 20), (INF, 20)], -5.0),  # first bound ≤ 0: that bound
    (0.25, [(0, 4), (10, 8), (INF, 8)], 0.0),
    (0.9, [(100, 10), (250, 8), (500, 12), (INF, 12)], 250 + 250 * 0.8 / 2),  # 8 is evened up to 10
    (0.5, [(500, 3), (500, 2), (INF, 10)], 500.0),  # equal bounds are one bucket of 5
    (0.5, [(INF, 10), (500, 5)], 500 * 5 / 5),  # any order
    (0.5, [(500, 0), (INF, 0)], NAN),  # no observation
    (0.5, [(INF, 5)], NAN),  # fewer than two buckets
    (0.5, [(100, 5), (500, 10)], NAN),  # no +Inf bucket
    (0.5, [], NAN),
    (0.0, [(100, 0), (500, 10), (INF, 10)], NAN),  # Go's 0 / 0 in an empty first bucket
    (0.0, [(100, 2), (500, 10), (INF, 10)], 0.0),
    (NAN, [(100, 5), (INF, 5)], NAN),
    (-0.1, [(100, 5), (INF, 5)], -INF),
    (1.1, [(100, 5), (INF, 5)], INF),
])
def test_exact_values(quantile: float, buckets: list[tuple[float, float]], expected: float) -> None:
    value = histogram_quantile(quantile, buckets)
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected)


# Each case: the buckets as a target exposes them (le as text), and the quantiles to ask for.
CASES: list[tuple[list[tuple[str, float]], tuple[float, ...]]] = [
    ([("0.5", 1), ("1", 3), ("5", 10), ("10", 30), ("25", 200), ("50", 380), ("100", 395), ("250", 398),
      ("500", 399), ("+Inf", 400)], (0.5, 0.9, 0.99, 1.0)),
    ([("100", 0), ("250", 0), ("+Inf", 10)], (0.5, 0.99)),
    ([("-5", 10), ("0", 10), ("10", 20), ("+Inf", 20)], (0.25, 0.75)),
    ([("0", 4), ("10", 8), ("+Inf", 8)], (0.25, 0.9)),
    ([("100", 10), ("250", 8), ("500", 12), ("+Inf", 12)], (0.5, 0.9)),
    ([("500", 3), ("500.0", 2), ("+Inf", 10)], (0.5, 0.7)),
    ([("500", 0), ("+Inf", 0)], (0.99,)),
    ([("+Inf", 5)], (0.5,)),
    ([("100", 5), ("500", 10)], (0.5,)),
    ([("100", 0), ("500", 10), ("+Inf", 10)], (0.0, 0.3)),
    ([("100", 2.5), ("250", 7.25), ("500", 9.125), ("+Inf", 9.5)], (0.5, 0.95, 0.99)),
]


@pytest.fixture
def buckets_target() -> Iterator[str]:
    """A scrape target exposing every case's buckets as `rollguard_hq_bucket{case="N",le="..."}`."""
    lines = [f'rollguard_hq_bucket{{case="{index}",le="{le}"}} {count}'
             for index, (buckets, _) in enumerate(CASES) for le, count in buckets]
    body = ("\n".join(lines) + "\n").encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_same_as_prometheus_on_the_same_buckets(
    prometheus: Callable[..., PrometheusServer], buckets_target: str
) -> None:
    server = prometheus([buckets_target], job="buckets")
    series = sum(len(buckets) for buckets, _ in CASES)
    wait_for_result(server.url, "count(rollguard_hq_bucket)", minimum=series)
    compared = 0
    for index, (buckets, quantiles) in enumerate(CASES):
        for quantile in quantiles:
            promql = f'histogram_quantile({quantile}, sum by (le) (rollguard_hq_bucket{{case="{index}"}}))'
            theirs = float(query(server.url, promql)[0]["value"][1])
            ours = histogram_quantile(quantile, [(float(le), count) for le, count in buckets])
            assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, rel=1e-12), (
                f"case {index} {buckets} at {quantile}: Prometheus {theirs}, rollguard {ours}")
            compared += 1
    assert compared == 22
