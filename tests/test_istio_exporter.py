"""The mesh-sized Istio exporter (sandbox/istio_exporter.py): valid text format, Istio's labels, the expected
cardinality, counters that grow, and a real Prometheus answering rollguard's own queries from it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollguard.sandbox.istio_exporter import ALL_LABELS, IstioExporter, MeshShape
from rollguard.steps.metrics.counter_window import ISTIO_DURATION_BUCKETS_MS
from rollguard.steps.metrics.istio_queries import counters_query

SERVICES = 12
# per service: 2 versions x 2 reporters x 4 outcomes; per such label set 1 counter + the histogram's
# buckets (+Inf too), _sum and _count
LABEL_SETS = SERVICES * 2 * 2 * 4
SERIES = LABEL_SETS * (1 + len(ISTIO_DURATION_BUCKETS_MS) + 1 + 2)


@pytest.fixture(scope="module")
def exporter() -> Iterator[IstioExporter]:
    with IstioExporter(MeshShape(services=SERVICES, rps=20.0)) as running:
        yield running


def _scrape(exporter: IstioExporter, query: str = "") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(exporter.url + query, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def test_metrics_parse_with_istio_labels_and_expected_cardinality(exporter):
    samples = _scrape(exporter)
    assert len(samples) == SERIES == exporter.metrics.series_count
    names = {name for name, _ in samples}
    assert names == {"istio_requests_total", "istio_request_duration_milliseconds_bucket",
                     "istio_request_duration_milliseconds_sum", "istio_request_duration_milliseconds_count"}
    for (name, labels), _ in samples.items():
        expected = {*ALL_LABELS, "le"} if name.endswith("_bucket") else set(ALL_LABELS)
        assert {key for key, _ in labels} == expected
    requests = [dict(labels) for name, labels in samples if name == "istio_requests_total"]
    assert {labels["destination_service_name"] for labels in requests} == {f"svc-{i:03d}" for i in range(SERVICES)}
    assert {labels["response_code"] for labels in requests} == {"200", "404", "500", "503"}
    assert {labels["reporter"] for labels in requests} == {"destination", "source"}
    assert {labels["grpc_response_status"] for labels in requests} == {"", "0", "5", "13", "14"}
    assert {labels["connection_security_policy"] for labels in requests} == {"mutual_tls", "unknown"}


def test_a_scrape_may_ask_for_some_services_only(exporter):
    samples = _scrape(exporter, "?services=2:5")
    assert len(samples) == SERIES * 3 // SERVICES
    assert {dict(labels)["destination_service_name"] for _, labels in samples} == {"svc-002", "svc-003", "svc-004"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        _scrape(exporter, "?services=two")
    assert refused.value.code == 400


def test_histograms_are_consistent(exporter):
    samples = _scrape(exporter)
    buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for (name, labels), value in samples.items():
        if name.endswith("_bucket"):
            others = tuple(item for item in labels if item[0] != "le")
            buckets.setdefault(others, []).append((float(dict(labels)["le"]), value))
    assert len(buckets) == LABEL_SETS
    for labels, series in buckets.items():
        series.sort()
        assert [bound for bound, _ in series[:-1]] == [float(b) for b in ISTIO_DURATION_BUCKETS_MS]
        values = [value for _, value in series]
        assert values == sorted(values), labels
        assert values[-1] == samples[("istio_request_duration_milliseconds_count", labels)]
        assert values[-1] == samples[("istio_requests_total", labels)]


def test_counters_grow(exporter):
    first = _scrape(exporter)
    key = next(key for key in first if key[0] == "istio_requests_total"
               and ("response_code", "200") in key[1] and ("destination_version", "v2") in key[1])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        later = _scrape(exporter)
        if later[key] > first[key]:
            assert all(later[k] >= first[k] for k in first)
            return
        time.sleep(0.1)
    pytest.fail(f"{key} did not grow within 10 s: {first[key]}")


def test_a_real_prometheus_answers_rollguards_counters_query(exporter, prometheus):
    server = prometheus([exporter.target], scrape_interval_s=1.0)
    query = counters_query("mesh", "svc-003", "v2")
    url = f"{server.url}/api/v1/query?query={urllib.parse.quote(query)}"
    deadline = time.monotonic() + 20
    result: list[object] = []
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as response:
            result = json.load(response)["data"]["result"]
        if result:
            break
        time.sleep(0.2)
    # the destination's series of the canary: 4 outcomes x (the counter + every bucket of the histogram)
    assert len(result) == 4 * (1 + len(ISTIO_DURATION_BUCKETS_MS) + 1)
