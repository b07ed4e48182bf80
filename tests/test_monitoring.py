"""The shipped alert rules and Grafana dashboard: promtool checks every expression, promtool's rule unit tests
show each alert firing (and staying quiet) on the series Argo's controller exports, and every metric and label
they name is one rollguard's templates emit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from rollguard.workflows import metrics
from rollguard.workflows.templates import build_templates

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "argocd" / "monitoring"
RULES = MONITORING / "rollguard-rules.yaml"
DASHBOARD = MONITORING / "rollguard-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")
METRIC = re.compile(r"\b(argo_workflows_[a-z_]+)")
SERIES = 'argo_workflows_rollguard_releases_total{namespace="demo",virtual_service="podinfo",kind="release",'


def rule_groups() -> dict[str, Any]:
    document = YAML(typ="safe").load(RULES.read_text(encoding="utf-8"))
    assert (document["apiVersion"], document["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    return document["spec"]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [variable["query"]["query"] for variable in dashboard["templating"]["list"]]
    return exprs


def concrete(expr: str) -> str:
    """A dashboard expression as Grafana sends it: its variables filled in."""
    for variable, value in (("$namespace", ".*"), ("$virtual_service", ".*"), ("$__range", "7d")):
        expr = expr.replace(variable, value)
    return expr


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_every_rule_and_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(json.dumps(rule_groups()))
    done = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    panels = [concrete(expr) for expr in dashboard_exprs() if not expr.startswith("label_values")]
    recorded = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel:{i}", "expr": expr}
                                                            for i, expr in enumerate(panels)]}]}  # fmt: skip
    (tmp_path / "dashboard.yaml").write_text(json.dumps(recorded))
    done = promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def alert(name: str, value: str = "", **labels: str) -> dict[str, Any]:
    """An expected alert for promtool: its labels and its annotations as Prometheus renders them."""
    rule = next(r for group in rule_groups()["groups"] for r in group["rules"] if r.get("alert") == name)
    annotations = {}
    for key, text in rule["annotations"].items():
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda match: labels[match.group(1)], text)
        annotations[key] = text.replace("{{ $value }}", value)
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


PODINFO = {"namespace": "demo", "virtual_service": "podinfo"}
PROMTOOL_TESTS = {
    "rule_files": ["rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {   # a first rollback (a new series: increase() alone would miss it), then a second one much later
            "interval": "1m",
            "input_series": [
                {"series": SERIES + 'outcome="rolled_back"}', "values": "_x10 1x50 2x20"},
                {"series": SERIES + 'outcome="promoted"}', "values": "1x80"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "RollguardCanaryRolledBack", "exp_alerts": []},
                {"eval_time": "12m", "alertname": "RollguardCanaryRolledBack",
                 "exp_alerts": [alert("RollguardCanaryRolledBack", **PODINFO)]},
                {"eval_time": "40m", "alertname": "RollguardCanaryRolledBack", "exp_alerts": []},
                {"eval_time": "63m", "alertname": "RollguardCanaryRolledBack",
                 "exp_alerts": [alert("RollguardCanaryRolledBack", **PODINFO)]},
                {"eval_time": "63m", "alertname": "RollguardReleaseFailed", "exp_alerts": []},
            ],
        },
        {   # an aborted release; a canary left at 10 % (argo terminate) for over two hours
            "interval": "1m",
            "input_series": [
                {"series": SERIES + 'outcome="aborted"}', "values": "_x3 1x30"},
                {"series": 'argo_workflows_rollguard_canary_weight_percent{namespace="demo",'
                           'virtual_service="podinfo"}', "values": "10x180"},
                {"series": 'argo_workflows_rollguard_canary_weight_percent{namespace="demo",'
                           'virtual_service="reviews"}', "values": "100x180"},
            ],
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "RollguardReleaseFailed",
                 "exp_alerts": [alert("RollguardReleaseFailed", outcome="aborted", **PODINFO)]},
                {"eval_time": "90m", "alertname": "RollguardCanaryStuck", "exp_alerts": []},
                {"eval_time": "150m", "alertname": "RollguardCanaryStuck",
                 "exp_alerts": [alert("RollguardCanaryStuck", "10", **PODINFO)]},
            ],
        },
    ],
}  # fmt: skip


@needs_promtool
def test_the_alerts_fire_on_what_argo_exports_and_only_then(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(json.dumps(rule_groups()))
    (tmp_path / "tests.yaml").write_text(json.dumps(PROMTOOL_TESTS))
    done = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def emitted() -> dict[str, set[str]]:
    """Every metric the rendered templates emit (as Argo exports it) -> its label keys."""
    found: dict[str, set[str]] = {}
    for template in build_templates():
        for step in template.to_dict()["spec"]["templates"]:
            for metric in (step.get("metrics") or {}).get("prometheus") or []:
                name = metrics.PREFIX + metric["name"]
                keys = {label["key"] for label in metric["labels"]}
                if "histogram" in metric:
                    for suffix in ("_bucket", "_sum", "_count"):
                        found[name + suffix] = keys | ({"le"} if suffix == "_bucket" else set())
                else:
                    found[name] = keys
    return found


def test_rules_and_dashboard_name_only_metrics_and_labels_the_templates_emit() -> None:
    known = emitted()
    texts = [rule["expr"] for group in rule_groups()["groups"] for rule in group["rules"]] + dashboard_exprs()
    used = set()
    for text in texts:
        for name in METRIC.findall(text):
            assert name in known, f"{name} is not emitted by any template"
            used.add(name.removesuffix("_bucket"))
        for labels in re.findall(r"by \(([^)]*)\)", text):
            keys = {key.strip() for key in labels.split(",")}
            assert any(keys <= known[name] for name in METRIC.findall(text)), f"{keys} in {text}"
    assert {metrics.PREFIX + name for name in (metrics.RELEASES, metrics.CANARY_WEIGHT)} <= used
    assert metrics.PREFIX + metrics.BREACH_TO_CUT in used and metrics.PREFIX + metrics.ANALYSIS_DURATION in used
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(panel["datasource"]["uid"] == "${DS_PROMETHEUS}" for panel in dashboard["panels"])
