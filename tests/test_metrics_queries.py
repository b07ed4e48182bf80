"""The metrics layer without Prometheus: rendered PromQL (verbatim), escaping, custom templates,
counter windows and the classification of query answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rollguard.steps.metrics import istio_queries
from rollguard.steps.metrics.counter_window import CounterHistory, CounterSnapshot, counts_between
from rollguard.steps.metrics.custom_templates import MetricsFileError, load_metrics, render
from rollguard.steps.metrics.prometheus_answers import MalformedAnswer, samples_of_answer
from rollguard.steps.metrics.promql import escape_label_value, range_window
from rollguard.steps.metrics.query_results import QueryStatus, Sample, classify

SELECTOR = ('reporter="destination",destination_workload_namespace="shop",destination_service_name="checkout",'
            'destination_version="v2"')


def test_error_rate_query_verbatim() -> None:
    assert istio_queries.error_rate_query("shop", "checkout", "v2", "1m") == (
        f'(sum(rate(istio_requests_total{{{SELECTOR},response_code=~"5.."}}[1m])) or on() vector(0)) / '
        f"sum(rate(istio_requests_total{{{SELECTOR}}}[1m]))"
    )


def test_p99_latency_query_verbatim() -> None:
    assert istio_queries.p99_latency_query("shop", "checkout", "v2", 30.0) == (
        f"histogram_quantile(0.99, sum by (le) (rate(istio_request_duration_milliseconds_bucket{{{SELECTOR}}}[30s])))"
    )


def test_counters_query_verbatim() -> None:
    assert istio_queries.counters_query("shop", "checkout", "v2") == (
        f'{{{SELECTOR},__name__=~"istio_requests_total|istio_request_duration_milliseconds_bucket"}}'
    )


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


def series(name: str, code: str = "200", le: str | None = None, pod: str = "a") -> tuple[tuple[str, str], ...]:
    labels = {"__name__": name, "response_code": code, "pod": pod}
    if le is not None:
        labels["le"] = le
    return tuple(sorted(labels.items()))


REQ, BUCKET = "istio_requests_total", "istio_request_duration_milliseconds_bucket"


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
    assert not counts_between(before, after, 300.0).slow_known


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
