"""Custom metrics from `--metrics-file`: named PromQL templates with limits, checked at start-up.

File format (YAML), either a list of metrics or a mapping with `metrics:` and shared `vars:`:

    vars: {job: checkout}                 # optional, shared user variables
    metrics:
      - name: canary_queue_depth          # letters, digits, underscores
        query: max(queue_depth{namespace="{{ namespace }}", version="{{ canary_version }}", job="{{ job }}"})
        max: 100                          # min and/or max; the value must stay within them
        vars: {job: checkout-worker}      # optional, this metric's own user variables

Placeholders are `{{ name }}`. Built-in variables: namespace, service, version (= canary_version),
canary_version, stable_version, window (the --window range, e.g. 1m). Every value is escaped for the
quotes it stands in ("double" or 'single': backslash, that quote, newline), so a label value cannot
break out of its string; outside a string only a plain name, number or duration may stand (like
`[{{ window }}]`). An unknown variable, a malformed or unsafe placeholder or a bad field is an error
naming the file and line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollguard.steps.metrics.promql_template import TemplateError, render_template

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FIELDS = {"name", "query", "min", "max", "vars"}
MAX_FILE_BYTES = 1024 * 1024


class MetricsFileError(ValueError):
    """The metrics file is unusable; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class CustomMetric:
    """One custom metric, its query rendered and ready to run."""

    name: str
    query: str
    minimum: float
    maximum: float
    line: int  # 1-based line of the metric in the file


def render(template: str, variables: dict[str, str], where: str) -> str:
    """Substitute `{{ var }}` placeholders, escaped for the quoting each stands in; unknown, malformed or
    unsafe ones are errors naming `where` (file, line, metric)."""
    try:
        return render_template(template, variables, where)
    except TemplateError as exc:
        raise MetricsFileError(str(exc)) from None


def load_metrics(path: Path, builtins: dict[str, str]) -> list[CustomMetric]:
    """Read, validate and render every metric of the file at `path` with `builtins` + user variables."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)  # bounded: /dev/zero or a huge file must not fill the memory
    except OSError as exc:
        raise MetricsFileError(f"{path}: cannot read the metrics file: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise MetricsFileError(f"{path}: the metrics file is larger than {MAX_FILE_BYTES // 1024} KiB; "
                               "it holds a few PromQL templates")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetricsFileError(f"{path}: the metrics file is not UTF-8 text (byte {exc.start + 1})") from None
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MetricsFileError(f"{path}{where}: YAML syntax error: {exc.problem or exc}") from None
    except YAMLError as exc:
        raise MetricsFileError(f"{path}: YAML error: {exc}") from None

    shared: dict[str, str] = {}
    if isinstance(document, dict):
        unknown = set(document) - {"metrics", "vars"}
        if unknown:
            raise MetricsFileError(f"{path}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}; "
                                   "expected `metrics:` and optional `vars:`")
        shared = _variables(document.get("vars"), builtins, f"{path} line {_line(document, 'vars')}")
        document = document.get("metrics")
    if not isinstance(document, list) or not document:
        raise MetricsFileError(f"{path}: expected a non-empty list of metrics (or `metrics:` holding one)")

    metrics: list[CustomMetric] = []
    seen: set[str] = set()
    for index, item in enumerate(document):
        line = _item_line(document, index)
        where = f"{path} line {line}"
        if not isinstance(item, dict):
            raise MetricsFileError(f"{where}: each metric is a mapping with name, query, min and/or max")
        unknown = set(map(str, item)) - _FIELDS
        if unknown:
            raise MetricsFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                                   f"allowed: {', '.join(sorted(_FIELDS))}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise MetricsFileError(f"{where}: `name` must be letters, digits and underscores, got {name!r}")
        where = f"{path} line {line} (metric {name})"
        if name in seen:
            raise MetricsFileError(f"{where}: the name {name} is used twice")
        seen.add(name)
        query = item.get("query")
        if not isinstance(query, str) or not query.strip():
            raise MetricsFileError(f"{where}: `query` must be a non-empty PromQL string")
        minimum = _limit(item, "min", -math.inf, where)
        maximum = _limit(item, "max", math.inf, where)
        if math.isinf(minimum) and math.isinf(maximum):
            raise MetricsFileError(f"{where}: give `min`, `max` or both, or the metric can never fail")
        if minimum > maximum:
            raise MetricsFileError(f"{where}: min {minimum:g} is above max {maximum:g}")
        own = _variables(item.get("vars"), builtins, where)
        rendered = render(query, {**builtins, **shared, **own}, where)
        metrics.append(CustomMetric(name, rendered, minimum, maximum, line))
    return metrics


def _limit(item: dict[str, Any], key: str, default: float, where: str) -> float:
    if key not in item or item[key] is None:
        return default
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise MetricsFileError(f"{where}: `{key}` must be a number, got {value!r}")
    return float(value)


def _variables(raw: Any, builtins: dict[str, str], where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MetricsFileError(f"{where}: `vars` must be a mapping of name: value")
    variables: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _NAME.match(key):
            raise MetricsFileError(f"{where}: variable name {key!r} must be letters, digits and underscores")
        if key in builtins:
            raise MetricsFileError(f"{where}: variable {key} is built in and cannot be redefined")
        if isinstance(value, (dict, list)) or value is None:
            raise MetricsFileError(f"{where}: variable {key} must be a plain value")
        variables[key] = str(value)
    return variables


def _line(mapping: Any, key: str) -> int:
    try:
        return int(mapping.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return 1


def _item_line(sequence: Any, index: int) -> int:
    try:
        return int(sequence.lc.item(index)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return 1
