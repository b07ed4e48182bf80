"""The verdict file's format: valid JSON, readable top-level fields, one line per check."""

from __future__ import annotations

import json

from rollguard.steps.analyze import render_verdict


def test_verdict_renders_as_json_with_one_line_per_check() -> None:
    document = {
        "verdict": "fail",
        "reason": 'canary_error_rate failed: "quoted"\nand a newline',
        "started_at": 1.5,
        "decided_at": 2.5,
        "failed_check": {"metric": "canary_error_rate", "value": 1.0, "threshold": 0.01, "detail": "5 of 5"},
        "checks": [{"index": i, "metrics": [{"metric": "m", "value": None}]} for i in range(3)],
        "settings": {"interval": "1s", "queries": {"a": 'x{y="z"}'}},
    }
    text = render_verdict(document)
    assert json.loads(text) == document
    check_lines = [line for line in text.splitlines() if line.lstrip().startswith('{"index"')]
    assert len(check_lines) == 3
    assert text.splitlines()[1] == '  "verdict": "fail",'


def test_empty_check_list_is_valid_json() -> None:
    document = {"verdict": "inconclusive", "checks": [], "failed_check": None}
    assert json.loads(render_verdict(document)) == document
