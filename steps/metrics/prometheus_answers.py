"""The body of an answer from Prometheus's instant-query API, checked field by field: anything but
`{"status": "success", "data": {"resultType": "vector" | "scalar", "result": ...}}` is a MalformedAnswer
that names what is wrong, never an exception from deep inside the parser.
"""

from __future__ import annotations

import math
from typing import Any

from rollguard.steps.metrics.query_results import Sample

_NUMBER_WORDS = {"NaN": math.nan, "+Inf": math.inf, "Inf": math.inf, "-Inf": -math.inf}


class MalformedAnswer(ValueError):
    """An answer that is not what the query API returns; the message says how it differs."""


def samples_of_answer(document: Any) -> tuple[Sample, ...]:
    """The series of a parsed answer (a scalar is one series without labels)."""
    if not isinstance(document, dict):
        raise MalformedAnswer(f"its JSON is {_kind(document)}, not an object")
    status = document.get("status")
    if status == "error":
        raise MalformedAnswer(f"with status error: {document.get('errorType', '?')}: "
                              f"{str(document.get('error', 'no message'))[:200]}")
    if status != "success":
        raise MalformedAnswer(f"its status is {_shown(status)}, not 'success'")
    data = document.get("data")
    if not isinstance(data, dict):
        raise MalformedAnswer("without data" if data is None else f"its data is {_kind(data)}, not an object")
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        return (Sample((), _value(result, "the scalar")),)
    if result_type != "vector":
        raise MalformedAnswer(f"its resultType is {_shown(result_type)}; an instant query answers a vector or a scalar")
    if not isinstance(result, list):
        raise MalformedAnswer(f"its vector result is {_kind(result)}, not a list")
    samples = []
    for index, item in enumerate(result):
        where = f"series {index + 1}"
        if not isinstance(item, dict) or not isinstance(item.get("metric"), dict):
            raise MalformedAnswer(f"{where} has no `metric` object of labels")
        labels = tuple(sorted((str(key), str(value)) for key, value in item["metric"].items()))
        samples.append(Sample(labels, _value(item.get("value"), where)))
    return tuple(samples)


def _value(pair: Any, where: str) -> float:
    """The number of a `[timestamp, "value"]` pair; Prometheus writes NaN and infinities as words."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise MalformedAnswer(f"{where} has no [time, value] pair: {_shown(pair)}")
    text = pair[1]
    if text in _NUMBER_WORDS:
        return _NUMBER_WORDS[text]
    try:
        return float(text)
    except ValueError:
        raise MalformedAnswer(f"{where} has the value {_shown(text)}, not a number") from None


def _kind(value: Any) -> str:
    return "null" if value is None else {list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}")


def _shown(value: Any) -> str:
    return repr(value)[:80]
