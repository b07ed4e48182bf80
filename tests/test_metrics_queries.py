"""The metrics layer without Prometheus: rendered PromQL (verbatim), escaping, custom templates,
counter windows and the classification of query answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollguard.steps.metrics import istio_queries
from rollguard.steps.metrics.counter_window import (
    CounterHistory,
    CounterSnapshot,
    counts_between,
    latency_bucket_at_or_above,
    latency_bucket_warning,
)
from rollguard.steps.metrics.custom_templates import MetricsFileError, load_metrics, render
from rollguard.steps.metrics.failures import (
    DEFAULT_GRPC_ERROR_CODES,
    ErrorDefinition,
    grpc_codes_text,
    parse_grpc_codes,
)
from rollguard.steps.metrics.prometheus_answers import MalformedAnswer, samples_of_answer
from rollguard.steps.metrics.promql import escape_label_value, range_window
from rollguard.steps.metrics.query_results import QueryStatus, Sample, classify

SELECTOR = ('reporter="destination",destination_workload_namespace="shop",destination_service_name="checkout",'
            'destination_version="v2"')


DESTINATION = ('reporter="destination",destination_workload_namespace="shop",destination_service_name="checkout",'
               'destination_version="v2"')
CALLERS = ('reporter="source",destination_service_namespace="shop",destination_service_name="checkout",'
           'destination_version=~"v2|unknown",destination_canonical_revision=~"v2|latest"')
STABLE_CALLERS = ('reporter="source",destination_service_namespace="shop",destination_service_name="checkout",'
                  'destination_version=~"v1|unknown",destination_canonical_revision="v1"')
NEVER_REACHED = 'response_flags=~"(.*,)?(UH|UF|UO)(,.*)?"'
TCP_FAILED = 'response_flags=~"(.*,)?(UH|UF|UO|URX)(,.*)?"'
GRPC_ERRORS = 'grpc_response_status=~"2|4|12|13|14|15"'


def test_error_rate_query_verbatim() -> None:
    """Failed / all: the destination's 5xx or gRPC errors or failed TCP connections, plus what never reached it."""
    assert SELECTOR == DESTINATION
    assert istio_queries.error_rate_query("shop", "checkout", "v2", "1m") == (
        f'(sum(rate(istio_requests_total{{{DESTINATION},response_code=~"5.."}}[1m]) '
        f"or rate(istio_requests_total{{{DESTINATION},{GRPC_ERRORS}}}[1m]) "
        f"or rate(istio_tcp_connections_closed_total{{{DESTINATION},{TCP_FAILED}}}[1m]) "
        f"or rate(istio_requests_total{{{CALLERS},{NEVER_REACHED}}}[1m]) "
        f"or rate(istio_tcp_connections_closed_total{{{CALLERS},{TCP_FAILED}}}[1m])) or on() vector(0)) / "
        f'sum(rate({{{DESTINATION},__name__=~"istio_requests_total|istio_tcp_connections_opened_total"}}[1m]) '
        f"or rate(istio_requests_total{{{CALLERS},{NEVER_REACHED}}}[1m]) "
        f"or rate(istio_tcp_connections_opened_total{{{CALLERS},{TCP_FAILED}}}[1m]))"
    )


def test_stable_error_rate_leaves_unattributed_failures_to_the_canary() -> None:
    query = istio_queries.error_rate_query("shop", "checkout", "v1", "1m", unattributed=False)
    assert f"rate(istio_requests_total{{{STABLE_CALLERS},{NEVER_REACHED}}}[1m])" in query
    assert "latest" not in query


def test_grpc_error_codes_change_the_one_matcher() -> None:
    errors = ErrorDefinition(parse_grpc_codes("UNAVAILABLE,resource_exhausted"))
    query = istio_queries.error_rate_query("shop", "checkout", "v2", "1m", errors)
    assert 'grpc_response_status=~"8|14"' in query and GRPC_ERRORS not in query
    only_http = istio_queries.error_rate_query("shop", "checkout", "v2", "1m", ErrorDefinition(frozenset()))
    assert "grpc_response_status" not in only_http and 'response_code=~"5.."' in only_http


def test_failures_increase_query_verbatim() -> None:
    assert istio_queries.failures_increase_query("shop", "checkout", "v2", 30) == (
        f'sum(increase(istio_requests_total{{{DESTINATION},response_code=~"5.."}}[30s]) '
        f"or increase(istio_requests_total{{{DESTINATION},{GRPC_ERRORS}}}[30s]) "
        f"or increase(istio_tcp_connections_closed_total{{{DESTINATION},{TCP_FAILED}}}[30s]) "
        f"or increase(istio_requests_total{{{CALLERS},{NEVER_REACHED}}}[30s]) "
        f"or increase(istio_tcp_connections_closed_total{{{CALLERS},{TCP_FAILED}}}[30s]))"
    )


def test_p99_latency_query_verbatim() -> None:
    assert istio_queries.p99_latency_query("shop", "checkout", "v2", 30.0) == (
        f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{SELECTOR}}}[30s])))"
    )


def test_counters_query_verbatim() -> None:
    assert istio_queries.counters_query("shop", "checkout", "v2", unattributed=True) == (
        f'{{{SELECTOR},__name__=~"istio_requests_total|istio_request_duration_milliseconds_bucket|'
        f'istio_tcp_connections_opened_total|istio_tcp_connections_closed_total"}} '
        f"or istio_requests_total{{{CALLERS},{NEVER_REACHED}}} "
        f'or {{{CALLERS},__name__=~"istio_tcp_connections_opened_total|istio_tcp_connections_closed_total",'
        f"{TCP_FAILED}}}"
    )


def test_versions_are_regex_escaped_in_caller_matchers() -> None:
    query = istio_queries.counters_query("shop", "checkout", "v1.2+b", unattributed=True)
    assert 'destination_version=~"v1\\\\.2\\\\+b|unknown"' in query
    assert 'destination_version="v1.2+b"' in query


@pytest.mark.parametrize(("text", "codes"), [
    ("UNKNOWN,DEADLINE_EXCEEDED,UNIMPLEMENTED,INTERNAL,UNAVAILABLE,DATA_LOSS", DEFAULT_GRPC_ERROR_CODES),
    (" unavailable , 13,resource-exhausted", frozenset({8, 13, 14})),
    ("none", frozenset()),
    ("", frozenset()),
])
def test_grpc_codes_by_name_or_number(text: str, codes: frozenset[int]) -> None:
    assert parse_grpc_codes(text) == codes


@pytest.mark.parametrize(("text", "message"), [
    ("UNAVAILABEL", "'UNAVAILABEL' is not a gRPC status; valid names and numbers: CANCELLED \\(1\\), UNKNOWN"),
    ("17", "'17' is not a gRPC status.*UNAUTHENTICATED \\(16\\)"),
    ("OK", "OK \\(0\\) is success"),
])
def test_unknown_grpc_codes_are_refused_naming_the_valid_ones(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grpc_codes(text)


def test_default_grpc_codes_are_those_envoy_maps_to_5xx() -> None:
    """Envoy's Grpc::Utility::grpcToHttpStatus, transcribed: the error set is exactly the 5xx ones."""
    envoy_http_status = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409,
                         11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
    assert frozenset(code for code, http in envoy_http_status.items() if http >= 500) == DEFAULT_GRPC_ERROR_CODES
    assert grpc_codes_text(DEFAULT_GRPC_ERROR_CODES) == (
        "UNKNOWN,DEADLINE_EXCEEDED,UNIMPLEMENTED,INTERNAL,UNAVAILABLE,DATA_LOSS")


def test_label_values_are_escaped() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    query = istio_queries.error_rate_query('sh"op', "checkout", "v2", "1m")
    assert 'destination_workload_namespace="sh\\"op"' in query


@pytest.mark.parametrize("window", ["0s", "1 minute", "1d", "", "-1m"])
def test_bad_windows_are_refused(window: str) -> None:
    with pytest.raises(ValueError, match="range window"):
        range_window(window)


def test_window_from_seconds() -> None:
    assert range_window(0.5) == "500ms"
    assert range_window(120.0) == "2m"


BUILTINS = {"namespace": "shop", "service": "checkout", "version": "v2", "canary_version": "v2",
            "stable_version": "v1", "window": "1m"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "metrics.yaml"
    path.write_text(text)
    return path


def test_custom_metrics_render_with_builtin_and_user_variables(tmp_path: Path) -> None:
    path = write(tmp_path, """\
vars:
  job: checkout
metrics:
  - name: queue_depth
    query: max(queue_depth{namespace="{{ namespace }}",version="{{canary_version}}",job="{{ job }}"}[{{ window }}])
    max: 100
  - name: hit_ratio
    query: avg(hit_ratio{team="{{ team }}"})
    min: 0.9
    vars: {team: 'pay"ments'}
""")
    first, second = load_metrics(path, BUILTINS)
    assert first.query == 'max(queue_depth{namespace="shop",version="v2",job="checkout"}[1m])'
    assert (first.minimum, first.maximum, first.line) == (-math.inf, 100.0, 4)
    assert second.query == 'avg(hit_ratio{team="pay\\"ments"})'
    assert (second.minimum, second.line) == (0.9, 7)


def test_unknown_variable_names_metric_and_line(tmp_path: Path) -> None:
    text = '- name: ok\n  query: up\n  max: 1\n- name: broken\n  query: x{a="{{ colour }}"}\n  max: 1\n'
    path = write(tmp_path, text)
    with pytest.raises(MetricsFileError, match=r"line 4 \(metric broken\): unknown variable \{\{ colour \}\}"):
        load_metrics(path, BUILTINS)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "- name: a\n  query: up\n  max: [1\n")
    with pytest.raises(MetricsFileError, match=r"line \d+: YAML syntax error"):
        load_metrics(path, BUILTINS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: a\n  query: up\n", "give `min`, `max` or both"),
        ("- name: a\n  query: up\n  max: lots\n", "`max` must be a number"),
        ("- name: a b\n  query: up\n  max: 1\n", "`name` must be letters"),
        ("- name: a\n  query: up\n  max: 1\n  colour: red\n", "unknown field"),
        ("- name: a\n  query: up\n  max: 1\n- name: a\n  query: up\n  max: 2\n", "used twice"),
        ("- name: a\n  query: 'x{{ namespace }'\n  max: 1\n", "malformed placeholder"),
        ("- name: a\n  query: up\n  max: 1\n  vars: {namespace: x}\n", "built in"),
        ("[]\n", "non-empty list"),
        ("- name: a\n  query: up\n  min: 5\n  max: 1\n", "above max"),
    ],
)
def test_bad_metric_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(MetricsFileError, match=message):
        load_metrics(write(tmp_path, text), BUILTINS)


def test_render_refuses_unknown_variables() -> None:
    with pytest.raises(MetricsFileError, match="unknown variable"):
        render("{{ nope }}", {"a": "b"}, "here")


def series(name: str, code: str = "200", le: str | None = None, pod: str = "a",
           **more: str) -> tuple[tuple[str, str], ...]:
    labels = {"__name__": name, "response_code": code, "pod": pod, **more}
    if le is not None:
        labels["le"] = le
    return tuple(sorted(labels.items()))


REQ, BUCKET = "istio_requests_total", "istio_request_duration_milliseconds_bucket"
OPENED, CLOSED = "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"


def test_grpc_status_counts_and_is_named() -> None:
    """gRPC calls answer HTTP 200; the status says they failed. A 503 with UNAVAILABLE is one failure, not two."""
    grpc = {"request_protocol": "grpc", "reporter": "destination"}
    after = CounterSnapshot(1.0, {
        series(REQ, "200", grpc_response_status="0", **grpc): 50.0,
        series(REQ, "200", grpc_response_status="14", **grpc): 30.0,
        series(REQ, "503", grpc_response_status="14", **grpc): 2.0,
        series(REQ, "200", grpc_response_status="5", **grpc): 7.0,  # NOT_FOUND: the caller's doing
        series(REQ, "500", grpc_response_status="", request_protocol="http", reporter="destination"): 1.0,
    })
    counts = counts_between(CounterSnapshot(0.0, {}), after, 500.0)
    assert (counts.requests, counts.errors) == (90, 33)
    assert counts.failures == (("gRPC UNAVAILABLE (14)", 32), ("HTTP 500", 1))
    only_http = counts_between(CounterSnapshot(0.0, {}), after, 500.0, ErrorDefinition(frozenset()))
    assert only_http.errors == 3 and only_http.failures == (("HTTP 503", 2), ("HTTP 500", 1))


def test_callers_series_count_only_what_never_reached_the_destination() -> None:
    """A caller's UH/UF/UO request has no destination twin: counted once; its answered requests are twins: skipped."""
    source = {"reporter": "source", "request_protocol": "http"}
    after = CounterSnapshot(1.0, {
        series(REQ, "200", reporter="destination", request_protocol="http"): 80.0,
        series(REQ, "200", response_flags="-", **source): 80.0,  # the twin of the 80 above
        series(REQ, "503", response_flags="UH", **source): 15.0,
        series(REQ, "503", response_flags="UF,URX", **source): 4.0,
        series(REQ, "503", response_flags="URX", **source): 3.0,  # retries on the destination's own 503s: twins
    })
    counts = counts_between(CounterSnapshot(0.0, {}), after, 500.0)
    assert (counts.requests, counts.errors) == (99, 19)
    assert counts.failures == (
        ("request UH at the caller (no healthy upstream, never reached it)", 15),
        ("request UF at the caller (upstream connection failure, never reached it)", 4),
    )


def test_tcp_connections_closed_with_upstream_failure_flags_fail() -> None:
    tcp = {"request_protocol": "tcp", "reporter": "destination"}
    after = CounterSnapshot(1.0, {
        series(OPENED, "", response_flags="-", **tcp): 40.0,
        series(CLOSED, "", response_flags="-", **tcp): 35.0,
        series(OPENED, "", response_flags="UF", **tcp): 10.0,
        series(CLOSED, "", response_flags="UF", **tcp): 10.0,
        series(OPENED, "", response_flags="UF,URX", reporter="source", request_protocol="tcp"): 5.0,
        series(CLOSED, "", response_flags="UF,URX", reporter="source", request_protocol="tcp"): 5.0,
    })
    counts = counts_between(CounterSnapshot(0.0, {}), after, 500.0)
    assert (counts.requests, counts.errors, counts.connections, counts.timed) == (55, 15, 55, 0)
    assert counts.failures == (("TCP connection UF (upstream connection failure)", 10),
                               ("TCP connection UF at the caller (upstream connection failure, never reached it)", 5))


def test_new_series_count_in_full_and_resets_count_from_zero() -> None:
    before = CounterSnapshot(0.0, {series(REQ, "200"): 100.0, series(REQ, "200", pod="b"): 50.0})
    after = CounterSnapshot(1.0, {
        series(REQ, "200"): 110.0,
        series(REQ, "500"): 4.0,  # appeared since the baseline: all 4 count
        series(REQ, "200", pod="b"): 3.0,  # restarted pod: counts from zero
    })
    counts = counts_between(before, after, 500.0)
    assert (counts.requests, counts.errors) == (17, 4)


def test_slow_requests_from_the_bucket_at_the_limit() -> None:
    before = CounterSnapshot(0.0, {})
    after = CounterSnapshot(1.0, {
        series(BUCKET, le="250.0"): 10.0, series(BUCKET, le="500.0"): 12.0, series(BUCKET, le="+Inf"): 20.0,
        series(REQ): 20.0,
    })
    assert counts_between(before, after, 500.0).slow == 8
    assert counts_between(before, after, 500.0).slow_known
    # Between boundaries: slow counts above the next boundary up (sound: slower than 500 is slower than 300).
    between = counts_between(before, after, 300.0)
    assert (between.slow, between.slow_known, between.slow_bound_ms) == (8, True, 500.0)
    # Above the last finite boundary: nothing over the limit can be seen.
    beyond = counts_between(before, after, 900.0)
    assert not beyond.slow_known and math.isinf(beyond.slow_bound_ms)
    # No histogram at all: unknown, not "none slow".
    assert math.isnan(counts_between(before, CounterSnapshot(1.0, {series(REQ): 20.0}), 500.0).slow_bound_ms)


def test_latency_bucket_rule_and_start_up_warning() -> None:
    assert latency_bucket_at_or_above(500.0) == 500.0
    assert latency_bucket_at_or_above(300.0) == 500.0
    assert math.isinf(latency_bucket_at_or_above(4_000_000.0))
    assert latency_bucket_warning(500.0) is None
    warning = latency_bucket_warning(300.0)
    assert warning is not None and "only a p99 above 500 ms" in warning and "use 250 or 500" in warning
    beyond = latency_bucket_warning(4_000_000.0)
    assert beyond is not None and "latency is not judged" in beyond


def test_running_totals_survive_counter_resets_and_never_go_down() -> None:
    """The sequential tests need totals of a stream: a restarted pod loses only what it counted since the
    previous snapshot, never what was counted before."""
    history = CounterHistory()
    values = [100.0, 150.0, 20.0, 60.0]  # the pod restarted between the 2nd and 3rd snapshot
    totals = []
    for second, value in enumerate(values):
        history.add(CounterSnapshot(float(second), {series(REQ, "500"): value}), 500.0)
        assert history.since_start is not None
        totals.append((history.since_start.requests, history.since_start.errors))
    assert totals == [(0, 0), (50, 50), (70, 70), (110, 110)]
    assert history.requests_since_start == 110


def test_history_slides_the_baseline_but_keeps_the_first() -> None:
    history = CounterHistory()
    for second in range(10):
        history.add(CounterSnapshot(float(second), {series(REQ): 10.0 * second}))
    assert history.baseline(9.0, 60.0).at_s == 0.0
    assert history.baseline(9.0, 3.0).at_s == 6.0
    assert history.first is not None and history.first.at_s == 0.0


def test_classify_answers() -> None:
    one = (Sample((), 0.5),)
    assert classify("q", (), expect_one=True).status is QueryStatus.EMPTY
    assert classify("q", one, expect_one=True).value == 0.5
    assert classify("q", (Sample((), math.nan),), expect_one=True).status is QueryStatus.NAN
    several = classify("q", (Sample((("pod", "a"),), 1.0), Sample((("pod", "b"),), 2.0)), expect_one=True)
    assert several.status is QueryStatus.MULTIPLE and "2 series" in several.detail
    assert math.isnan(several.value)


@given(
    st.lists(
        st.tuples(st.sampled_from(["200", "500", "503"]), st.sampled_from(["a", "b"]),
                  st.integers(0, 1000), st.integers(0, 1000)),
        max_size=8, unique_by=lambda item: (item[0], item[1]),
    )
)
def test_counts_are_never_negative_and_add_up(pairs: list[tuple[str, str, int, int]]) -> None:
    """Whatever happened between two snapshots (growth, resets, new series), counts are sane."""
    before = CounterSnapshot(0.0, {series(REQ, code, pod=pod): float(old) for code, pod, old, _ in pairs})
    after = CounterSnapshot(1.0, {series(REQ, code, pod=pod): float(new) for code, pod, _, new in pairs})
    counts = counts_between(before, after, 500.0)
    expected = sum(new - old if new >= old else new for _, _, old, new in pairs)
    assert counts.requests == expected
    assert 0 <= counts.errors <= counts.requests


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"status": "success"}, "without data"),
        ({"status": "success", "data": None}, "without data"),
        ([1, 2], "its JSON is a list, not an object"),
        ("up", "its JSON is a string, not an object"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "with status error: bad_data: parse"),
        ({"status": "pending"}, "its status is 'pending', not 'success'"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "resultType is 'matrix'"),
        ({"status": "success", "data": {"resultType": "vector", "result": None}}, "vector result is null"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "2"]}]}},
         "series 1 has no `metric` object"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": 3}]}},
         "series 1 has no [time, value] pair"),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "many"]}},
         "the scalar has the value 'many', not a number"),
    ],
)
def test_malformed_answers_say_what_is_wrong(document: object, problem: str) -> None:
    with pytest.raises(MalformedAnswer) as malformed:
        samples_of_answer(document)
    assert problem in str(malformed.value)


def test_answers_in_prometheus_words_parse() -> None:
    series = [{"metric": {"b": "2", "a": "1"}, "value": [1.5, word]} for word in ("NaN", "+Inf", "-Inf", "0.25")]
    vector = {"status": "success", "data": {"resultType": "vector", "result": series}}
    values = [sample.value for sample in samples_of_answer(vector)]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf, 0.25]
    assert samples_of_answer(vector)[0].labels == (("a", "1"), ("b", "2"))
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.5, "2"]}}
    assert samples_of_answer(scalar) == (Sample((), 2.0),)


def test_counters_that_are_not_finite_numbers_are_an_error() -> None:
    nan = (Sample((("code", "200"),), 5.0), Sample((("code", "500"),), math.nan))
    result = classify("q", nan, expect_one=False)
    assert result.status is QueryStatus.ERROR and not result.unreachable
    assert 'series {code="500"} has the value nan' in result.detail
    # One value may be infinite (a p99 above the last bucket): that is a value, and it breaches.
    assert classify("q", (Sample((), math.inf),), expect_one=True).status is QueryStatus.VALUE


TRICKY = "a'} or vector(1) # \"x\"\n\\"


@pytest.mark.parametrize(
    ("template", "rendered"),
    [
        ("x{job='{{ job }}'}", "x{job='a\\'} or vector(1) # \"x\"\\n\\\\'}"),
        ('x{job="{{ job }}"}', 'x{job="a\'} or vector(1) # \\"x\\"\\n\\\\"}'),
        ("x{job='it\\'s {{ team }}'}", "x{job='it\\'s pay\\'ments'}"),
        ('rate(x{a="#{{ team }}"}[{{ window }}]) > {{ limit }}', 'rate(x{a="#pay\'ments"}[1m]) > 0.5'),
        ("x{job=`{{ window }}`}", "x{job=`1m`}"),
    ],
)
def test_placeholders_are_escaped_for_the_quotes_they_stand_in(template: str, rendered: str) -> None:
    variables = {"job": TRICKY, "team": "pay'ments", "window": "1m", "limit": "0.5"}
    assert render(template, variables, "f.yaml line 3") == rendered


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("x > {{ job }}", "{{ job }} stands outside a quoted string, where only a plain name, number or duration"),
        ("x # note {{ job }}", "{{ job }} stands in a # comment"),
        ("x{job=`{{ job }}`}", "holds a backtick"),
        ("x{job='{{ limit }}}", "a 'string' is not closed"),
    ],
)
def test_unsafe_placeholders_are_refused_with_the_place(template: str, message: str) -> None:
    with pytest.raises(MetricsFileError) as refused:
        render(template, {"job": "a`b or vector(1)", "limit": "0.5"}, "f.yaml line 3 (metric m)")
    assert str(refused.value).startswith("f.yaml line 3 (metric m): ")
    assert message in str(refused.value)


def test_a_metrics_file_with_an_injectable_placeholder_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "- name: ok\n  query: up\n  max: 1\n- name: bad\n  query: up > {{ level }}\n"
                           "  max: 1\n  vars: {level: '1 or vector(0)'}\n")
    with pytest.raises(MetricsFileError, match=rf"{path} line 4 \(metric bad\): \{{\{{ level \}}\}} stands outside"):
        load_metrics(path, BUILTINS)
