"""The verdict document: its file format (valid JSON, readable top-level fields, one line per check), the
summary, the "no verdict" placeholder, and reading every shape and format version back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rollguard.steps.judgment.outcomes import Verdict
from rollguard.steps.verdict_document import (
    FORMAT_VERSION,
    FailedCheck,
    NoVerdict,
    UnreadableVerdict,
    VerdictDocument,
    VerdictSummary,
    from_json,
    read_file,
    read_text,
)

DOCUMENT = VerdictDocument(
    verdict=Verdict.FAIL,
    reason='canary_error_rate failed: "quoted"\nand a newline',
    started_at=1.5,
    decided_at=2.5,
    failed_check=FailedCheck("canary_error_rate", 1.0, 0.01, "5 of 5"),
    settings={"interval": "1s", "queries": {"a": 'x{y="z"}'}, "judge": "statistical"},
    checks=tuple({"index": i, "metrics": [{"metric": "m", "value": None}]} for i in range(3)),
)


def test_verdict_renders_as_json_with_one_line_per_check() -> None:
    text = DOCUMENT.render()
    assert json.loads(text) == {
        "verdict": "fail",
        "format_version": FORMAT_VERSION,
        "reason": 'canary_error_rate failed: "quoted"\nand a newline',
        "started_at": 1.5,
        "decided_at": 2.5,
        "failed_check": {"metric": "canary_error_rate", "value": 1.0, "threshold": 0.01, "detail": "5 of 5",
                         "samples": None},
        "first_breach_at": None,
        "checks": [{"index": i, "metrics": [{"metric": "m", "value": None}]} for i in range(3)],
        "settings": {"interval": "1s", "queries": {"a": 'x{y="z"}'}, "judge": "statistical"},
    }
    check_lines = [line for line in text.splitlines() if line.lstrip().startswith('{"index"')]
    assert len(check_lines) == 3
    assert text.splitlines()[1] == '  "verdict": "fail",'


def test_the_first_breach_is_the_first_check_with_the_deciding_metric_over_its_limit() -> None:
    checks = (
        {"index": 0, "at": 10.0, "metrics": [{"metric": "canary_error_rate", "phase": "ok"},
                                             {"metric": "canary_p99_latency_ms", "phase": "suspect"}]},
        {"index": 1, "at": 11.0, "metrics": [{"metric": "canary_error_rate", "phase": "suspect"}]},
        {"index": 2, "at": 12.0, "metrics": [{"metric": "canary_error_rate", "phase": "failed"}]},
    )
    evidence = FailedCheck("canary_error_rate", 0.5, 0.01, "6 of 12", samples=12)
    document = VerdictDocument(Verdict.FAIL, "r", 9.5, 12.1, evidence, {}, checks=checks)
    written = json.loads(document.render())
    assert written["first_breach_at"] == 11.0  # not 10.0: that was another metric
    assert written["failed_check"]["samples"] == 12
    summary = document.summary()
    assert summary.first_breach_at == 11.0
    assert read_text(summary.render(), "x") == summary
    passed = VerdictDocument(Verdict.PASS, "ok", 9.5, 40.0, None, {}, checks=checks[:1])
    assert json.loads(passed.render())["first_breach_at"] == 10.0  # any metric, when none decided
    clean = VerdictDocument(Verdict.PASS, "ok", 9.5, 40.0, None, {}, checks=({"at": 1.0, "metrics": []},))
    assert clean.summary().first_breach_at is None


def test_empty_check_list_is_valid_json() -> None:
    document = VerdictDocument(Verdict.INCONCLUSIVE, "interrupted", 1.0, 1.0, None, {}, checks=())
    assert json.loads(document.render())["checks"] == []
    assert from_json(json.loads(document.render())) == document


def test_full_document_and_summary_read_back_as_they_were_written() -> None:
    assert read_text(DOCUMENT.render(), "x") == DOCUMENT
    summary = DOCUMENT.summary()
    assert isinstance(summary, VerdictSummary)
    assert (summary.check_count, summary.last_check) == (3, DOCUMENT.checks[-1])
    written = json.loads(summary.render())
    assert "checks" not in written and written["check_count"] == 3
    assert read_text(summary.render(), "x") == summary
    assert summary.judge == "statistical"


def test_a_verdict_written_before_the_format_version_is_read_as_version_1() -> None:
    older = {"verdict": "fail", "reason": "r", "started_at": 1795680000.0, "decided_at": 1795680012.5,
             "failed_check": {"metric": "error_rate", "value": 0.12, "threshold": 0.01, "detail": "36 of 300"},
             "checks": [], "settings": {}}
    document = from_json(older)
    assert isinstance(document, VerdictDocument)
    assert document.format_version == 1
    assert document.failed_check == FailedCheck("error_rate", 0.12, 0.01, "36 of 300")


def test_a_newer_format_is_read_by_the_fields_it_shares() -> None:
    newer = {**DOCUMENT.to_json(), "format_version": FORMAT_VERSION + 1, "a_field_from_the_future": [1, 2]}
    document = from_json(newer)
    assert isinstance(document, VerdictDocument)
    assert document.format_version == FORMAT_VERSION + 1
    assert (document.verdict, document.reason, document.checks) == (DOCUMENT.verdict, DOCUMENT.reason, DOCUMENT.checks)


def test_the_no_verdict_placeholder_is_its_own_case() -> None:
    placeholder = NoVerdict("the analyze step wrote no verdict")
    assert placeholder.render() == ('{"verdict": "error", "reason": "the analyze step wrote no verdict", '
                                    '"failed_check": null}')
    assert read_text(placeholder.render(), "x") == placeholder


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "x is not JSON"),
        ("[1, 2]", "x is not a verdict: it holds list"),
        ('{"verdict": "maybe"}', "its verdict is 'maybe', not one of pass, fail, inconclusive or error"),
        ('{"verdict": "pass", "format_version": "two"}', "its format_version is 'two'"),
        ('{"verdict": "fail", "failed_check": 3}', "failed_check is int"),
    ],
)
def test_what_is_not_a_verdict_is_unreadable_with_the_reason(text: str, problem: str) -> None:
    reading = read_text(text, "x")
    assert isinstance(reading, UnreadableVerdict)
    assert problem in reading.problem


def test_a_missing_file_is_unreadable(tmp_path: Path) -> None:
    reading = read_file(tmp_path / "nope.json")
    assert reading == UnreadableVerdict(f"reason file {tmp_path / 'nope.json'} does not exist")
