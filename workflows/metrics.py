"""rollguard's Argo template metrics: the Prometheus that already scrapes the Argo controller sees releases.

Argo Workflows emits a template's `metrics.prometheus` when the node completes (docs/metrics.md,
"Defining custom metrics"; workflow/controller/operator.go computeMetrics), with the template's own
`{{status}}`, `{{duration}}`, `{{inputs.parameters.*}}` and `{{outputs.parameters.*}}` in scope, on the
controller's /metrics endpoint with the prefix `argo_workflows_` and no suffix added
(util/telemetry/exporter_prometheus.go: WithoutCounterSuffixes in 3.6, UnderscoreEscapingWithoutSuffixes
in 4.x). A metric's name must keep one help text and one type everywhere it is emitted (Argo 3.6+).
Labels use only the template's own inputs and outputs, so the templates work in rollguard-steps too.

| metric (as scraped)                                   | type      | labels                                   |
|-------------------------------------------------------|-----------|------------------------------------------|
| argo_workflows_rollguard_releases_total               | counter   | namespace, virtual_service, kind, outcome |
| argo_workflows_rollguard_analysis_duration_seconds    | histogram | namespace, service, verdict              |
| argo_workflows_rollguard_breach_to_cut_seconds        | histogram | namespace, virtual_service               |
| argo_workflows_rollguard_canary_weight_percent        | gauge     | namespace, virtual_service               |
"""

from __future__ import annotations

from hera.workflows import Counter, Gauge, Histogram, Label
from hera.workflows.metrics import _BaseMetric as Metric  # the common base of Counter, Gauge, Histogram

PREFIX = "argo_workflows_"  # what Argo puts before a custom metric's name on /metrics

RELEASES = "rollguard_releases_total"
ANALYSIS_DURATION = "rollguard_analysis_duration_seconds"
BREACH_TO_CUT = "rollguard_breach_to_cut_seconds"
CANARY_WEIGHT = "rollguard_canary_weight_percent"

HELP = {
    RELEASES: "Canary releases (and canary-analysis hook runs) by how they ended: rolled_back, promoted, passed, "
    "inconclusive, aborted, error, skipped",
    ANALYSIS_DURATION: "Duration of rollguard's analyze step (pod included), by verdict",
    BREACH_TO_CUT: "Seconds from the first check with the deciding metric over its limit to the traffic cut",
    CANARY_WEIGHT: "Canary traffic weight in percent that rollguard last set or found",
}
ANALYSIS_BUCKETS = [5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0]
BREACH_BUCKETS = [0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
SUCCEEDED = "{{status}} == Succeeded"


def _input(name: str) -> str:
    return "{{inputs.parameters." + name + "}}"


def _output(name: str) -> str:
    return "{{outputs.parameters." + name + "}}"


def _where(namespace: str, virtual_service: str | None = None) -> list[Label]:
    labels = [Label(key="namespace", value=_input(namespace))]
    if virtual_service is not None:
        labels.append(Label(key="virtual_service", value=_input(virtual_service)))
    return labels


def weight_gauge(value: str, when: str = SUCCEEDED) -> Gauge:
    """The canary's weight after a step that set or found it."""
    return Gauge(name=CANARY_WEIGHT, help=HELP[CANARY_WEIGHT], labels=_where("namespace", "virtual-service"),
                 value=value, realtime=False, when=when)  # fmt: skip


def step_metrics(command: str) -> list[Metric]:
    """The metrics a step's container template emits ([] for steps that have none)."""
    if command == "analyze":
        labels = [*_where("namespace"), Label(key="service", value=_input("service")),
                  Label(key="verdict", value=_output("verdict"))]  # fmt: skip
        return [Histogram(name=ANALYSIS_DURATION, help=HELP[ANALYSIS_DURATION], labels=labels,
                          buckets=list(ANALYSIS_BUCKETS), value="{{duration}}")]  # fmt: skip
    if command in ("deploy", "promote"):
        return [weight_gauge(_input("weight"))]
    if command == "rollback":
        return [weight_gauge("0")]
    if command == "finish":
        outcome_labels = [*_where("namespace", "virtual-service"), Label(key="kind", value=_input("kind")),
                          Label(key="outcome", value=_output("outcome"))]  # fmt: skip
        breach = _output("breach-to-cut-seconds")
        weight = _output("final-weight")
        return [
            Counter(name=RELEASES, help=HELP[RELEASES], labels=outcome_labels, value="1"),
            Histogram(name=BREACH_TO_CUT, help=HELP[BREACH_TO_CUT], labels=_where("namespace", "virtual-service"),
                      buckets=list(BREACH_BUCKETS), value=breach, when=f"'{breach}' != ''"),
            weight_gauge(weight, when=f"'{weight}' != ''"),
        ]
    return []
