"""Argo's template metrics, computed as its controller computes them, and kept like its /metrics endpoint.

When a node completes, each `metrics.prometheus` entry of its template is emitted
(workflow/controller/operator.go computeMetrics, v3.6.19): name, help, labels and `when` are
substituted first, without allowing unresolved references; `when` is evaluated like a step's; then
the value is substituted and parsed as a number. The scope is the workflow's global variables plus
the node's own (steps.go prepareMetricScope): `status`, `duration` (seconds), `exitCode`,
`retries`, `inputs.parameters.*`, `outputs.parameters.*`. A metric that cannot be emitted is
reported (Argo: the workflow condition MetricsError) and never fails the workflow. A counter adds,
a gauge sets (or adds/subtracts with `operation`), a histogram observes
(metrics/metrics_custom.go UpsertCustomMetric); a name keeps its first help and type.

The registry renders the Prometheus text format with Argo's prefix `argo_workflows_` and no suffix
added (util/telemetry/exporter_prometheus.go): what the sandbox's Prometheus scrapes in place of the
controller's endpoint (rollguard.sandbox.workflow_metrics).
"""

from __future__ import annotations

import json
import math
import re
import threading
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import evaluate_when, substitute, yaml_text
from rollguard.sandbox.executor.nodes import NodeResult

PREFIX = "argo_workflows_"
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # metrics/util.go IsValidMetricName: legacy names, no ':'


@dataclass(frozen=True)
class Emission:
    """One metric update, after substitution."""

    name: str
    help: str
    kind: str  # counter | gauge | histogram
    labels: tuple[tuple[str, str], ...]
    value: float
    buckets: tuple[float, ...] = ()
    operation: str = "Set"

    def to_json(self) -> dict[str, Any]:
        """For the HTTP transport to the sandbox's metrics endpoint."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Emission:
        """Read one emission sent over HTTP."""
        return cls(str(data["name"]), str(data["help"]), str(data["kind"]),
                   tuple((str(k), str(v)) for k, v in data["labels"]), float(data["value"]),
                   tuple(float(b) for b in data.get("buckets") or ()), str(data.get("operation") or "Set"))


def metric_scope(variables: dict[str, str], node: NodeResult) -> dict[str, str]:
    """The variables a node's metrics see (prepareMetricScope): globals, status, duration, exit code, in/outputs."""
    scope = {key: value for key, value in variables.items()
             if key.startswith("workflow.") or key.startswith("inputs.parameters.")}
    finished = node.finished_at or node.started_at
    scope["duration"] = f"{max(0.0, finished - node.started_at):f}" if node.started_at else "0"
    scope["status"] = node.phase.value
    if node.exit_code is not None:
        scope["exitCode"] = str(node.exit_code)
    for key, value in node.outputs.items():
        scope[f"outputs.parameters.{key}"] = value
    return scope


def compute(template: dict[str, Any], scope: dict[str, str], where: str) -> tuple[list[Emission], list[str]]:
    """The emissions of a completed node's template, and the problems of those that could not be emitted."""
    emissions: list[Emission] = []
    problems: list[str] = []
    for metric in (template.get("metrics") or {}).get("prometheus") or []:
        metric_where = f"{where} metric {metric.get('name')!r}"
        try:
            emission = _one(metric, scope, metric_where)
        except ExecutorError as exc:
            problems.append(str(exc))
            continue
        if emission is not None:
            emissions.append(emission)
    return emissions, problems


def _one(metric: dict[str, Any], scope: dict[str, str], where: str) -> Emission | None:
    if not metric.get("help"):
        raise ExecutorError(f"metric '{metric.get('name')}' must contain a help string under 'help: ' field")
    name = substitute(yaml_text(metric.get("name", "")), scope, where)
    help_text = substitute(yaml_text(metric["help"]), scope, where)
    labels = tuple((str(label["key"]), substitute(yaml_text(label.get("value", "")), scope, where))
                   for label in metric.get("labels") or [])  # fmt: skip
    if not _NAME.match(name):
        raise ExecutorError(f"{where}: metric name is invalid: names may only contain alphanumeric characters or '_'")
    for key, _ in labels:
        if not _NAME.match(key):
            raise ExecutorError(f"{where}: metric label '{key}' is invalid: keys may only contain alphanumeric "
                                "characters or '_'")
    if metric.get("when") is not None:
        condition = substitute(yaml_text(metric["when"]), scope, where)
        if not evaluate_when(condition, f"{where} when"):
            return None
    kind = next(kind for kind in ("counter", "gauge", "histogram") if kind in metric)
    body = metric[kind] or {}
    text = substitute(yaml_text(body.get("value", "")), scope, where)
    try:
        value = float(text)
    except ValueError:
        raise ExecutorError(f'{where}: strconv.ParseFloat: parsing "{text}": invalid syntax') from None
    buckets = tuple(float(bucket) for bucket in body.get("buckets") or ())
    return Emission(name, help_text, kind, labels, value, buckets, str(body.get("operation") or "Set"))


class MetricsSink(Protocol):
    """Where emissions go: an in-process registry or the sandbox's endpoint. Returns problems, never raises."""

    def record(self, emissions: list[Emission]) -> list[str]: ...


@dataclass
class _Series:
    value: float = 0.0
    counts: list[int] | None = None  # histogram: per bucket (not cumulative)
    total: float = 0.0
    observations: int = 0


class MetricsRegistry:
    """The metrics emitted so far (like the controller's memory), rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[str, str, tuple[float, ...]]] = {}  # name -> (kind, help, buckets)
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = {}

    def record(self, emissions: list[Emission]) -> list[str]:
        """Apply `emissions`; a metric redefined with another type or help is refused (Argo 3.6+)."""
        problems = []
        with self._lock:
            for emission in emissions:
                known = self._kinds.setdefault(emission.name, (emission.kind, emission.help, emission.buckets))
                if known[:2] != (emission.kind, emission.help):
                    problems.append(f"could not construct metric '{emission.name}': it is a {known[0]} with help "
                                    f"{known[1]!r}; a metric may not change its type or help")
                    continue
                series = self._series.setdefault((emission.name, tuple(sorted(emission.labels))), _Series())
                if emission.kind == "counter":
                    series.value += emission.value
                elif emission.kind == "gauge":
                    if emission.operation == "Add":
                        series.value += emission.value
                    elif emission.operation == "Sub":
                        series.value -= emission.value
                    else:
                        series.value = emission.value
                else:
                    buckets = known[2]
                    if series.counts is None:
                        series.counts = [0] * len(buckets)
                    for index, bound in enumerate(buckets):
                        if emission.value <= bound:
                            series.counts[index] += 1
                            break
                    series.total += emission.value
                    series.observations += 1
        return problems

    def exposition(self) -> str:
        """Every metric in the Prometheus text format (version 0.0.4), names prefixed like Argo's."""
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._kinds):
                kind, help_text, buckets = self._kinds[name]
                full = PREFIX + name
                lines.append(f"# HELP {full} {_escape_help(help_text)}")
                lines.append(f"# TYPE {full} {kind}")
                for (series_name, labels), series in sorted(self._series.items()):
                    if series_name != name:
                        continue
                    if kind != "histogram":
                        lines.append(f"{full}{_labels(labels)} {_number(series.value)}")
                        continue
                    cumulative = 0
                    for bound, count in zip(buckets, series.counts or [], strict=True):
                        cumulative += count
                        lines.append(f"{full}_bucket{_labels((*labels, ('le', _number(bound))))} {cumulative}")
                    lines.append(f"{full}_bucket{_labels((*labels, ('le', '+Inf')))} {series.observations}")
                    lines.append(f"{full}_sum{_labels(labels)} {_number(series.total)}")
                    lines.append(f"{full}_count{_labels(labels)} {series.observations}")
        return "\n".join(lines) + "\n"


class RemoteMetrics:
    """Sends emissions to the sandbox's metrics endpoint (POST /emit); a failure is a problem, not an error."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def record(self, emissions: list[Emission]) -> list[str]:
        """POST the emissions; the endpoint's problems (or why it could not be reached)."""
        if not emissions:
            return []
        body = json.dumps([emission.to_json() for emission in emissions]).encode()
        request = urllib.request.Request(f"{self.url}/emit", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return [str(problem) for problem in json.load(response).get("problems") or []]
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return [f"metrics endpoint {self.url} not reached: {exc}"]


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape_value(value)}"' for key, value in labels) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
