"""argocd/: core objects against Kubernetes' schemas, Istio objects against published Istio models,
Argo objects against Hera's models, the kustomization, the RBAC limits, and the hook's wiring."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cloudcoil.models.istio.networking.v1beta1 import DestinationRule, VirtualService
from hera.workflows.models import Workflow as WorkflowModel
from ruamel.yaml import YAML

from rollguard.steps.analyze import command as analyze
from rollguard.steps.traffic.virtualservice import read_split

REPO = Path(__file__).resolve().parents[1]
ARGOCD = REPO / "argocd"
CORE_KINDS = {"ServiceAccount", "Role", "RoleBinding", "Secret", "Namespace", "Service", "Deployment"}
K8S_VERSION = "1.30"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text(encoding="utf-8")) if doc]


def objects_under(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(folder.rglob("*.y*ml")):
        if path.name != "kustomization.yaml":
            found.extend((path, doc) for doc in load_all(path))
    return found


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        doc for _, doc in objects_under(ARGOCD) if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} found"
    return matches[0]


def analyze_defaults() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    analyze.add_arguments(parser)
    return {a.dest: a.default for a in parser._actions}


def round_trips(model: Any, document: dict[str, Any]) -> bool:
    """The published models ignore unknown keys; equality after a round trip proves there are none."""
    return model.model_validate(document).model_dump(by_alias=True, exclude_none=True, mode="json") == document


def test_every_file_parses_and_core_objects_pass_the_kubernetes_schema() -> None:
    seen = set()
    for path, doc in objects_under(ARGOCD):
        assert {"apiVersion", "kind", "metadata"} <= set(doc), path
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            seen.add(doc["kind"])
    assert seen == CORE_KINDS


def test_istio_objects_match_the_published_istio_models() -> None:
    documents = load_all(ARGOCD / "demo-app" / "istio.yml")
    kinds = {doc["kind"]: doc for doc in documents}
    assert round_trips(DestinationRule, kinds["DestinationRule"])
    assert round_trips(VirtualService, kinds["VirtualService"])
    assert read_split((ARGOCD / "demo-app" / "istio.yml").read_text(encoding="utf-8"), "podinfo", "v1", "v2") == (
        90,
        10,
    )
    labels = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for _, d in objects_under(ARGOCD)
              if d["kind"] == "Deployment"}  # fmt: skip
    subsets = {s["name"]: s["labels"] for s in kinds["DestinationRule"]["spec"]["subsets"]}
    assert subsets == {"v1": {"version": "v1"}, "v2": {"version": "v2"}}
    assert {"podinfo-v1": "v1", "podinfo-v2": "v2"} == {name: lab["version"] for name, lab in labels.items()}


def test_the_hook_is_a_valid_postsync_workflow_on_canary_analysis() -> None:
    hook = load_all(ARGOCD / "hook" / "canary-analysis-hook.yaml")[0]
    assert round_trips(WorkflowModel, hook)
    annotations = hook["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PostSync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    assert "generateName" not in hook["metadata"]  # a fixed name, so BeforeHookCreation finds the old one
    assert hook["spec"]["workflowTemplateRef"] == {"name": "canary-analysis"}


def test_the_hook_passes_every_required_parameter_and_only_known_ones() -> None:
    template = load_all(REPO / "workflows" / "canary-analysis.yaml")[0]
    declared = {p["name"]: p for p in template["spec"]["arguments"]["parameters"]}
    given = {p["name"]: p["value"] for p in load_all(ARGOCD / "hook" / "canary-analysis-hook.yaml")[0]["spec"]
             ["arguments"]["parameters"]}  # fmt: skip
    assert set(given) <= set(declared)
    required = {name for name, p in declared.items() if "value" not in p}
    assert required <= set(given), f"the hook misses {sorted(required - set(given))}"
    # The names agree with the Application, the RBAC and the demo app's VirtualService.
    application = one("Application")
    virtual_service = next(d for d in load_all(ARGOCD / "demo-app" / "istio.yml") if d["kind"] == "VirtualService")
    assert given["repo"] == application["spec"]["source"]["repoURL"]
    assert given["path"] == f"{application['spec']['source']['path']}/istio.yml"
    assert given["argocd-app"] == application["metadata"]["name"]
    assert given["virtual-service"] == virtual_service["metadata"]["name"]
    assert (
        given["namespace"]
        == virtual_service["metadata"]["namespace"]
        == application["spec"]["destination"]["namespace"]
    )
    assert given["live-patch"] == "true"


def test_rbac_is_namespaced_and_limited_to_the_one_virtualservice_and_application() -> None:
    kinds = {doc["kind"] for _, doc in objects_under(ARGOCD)}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    roles = {d["metadata"]["name"]: d for _, d in objects_under(ARGOCD) if d["kind"] == "Role"}
    allowed = {
        ("networking.istio.io", "virtualservices"): ({"get", "patch"}, ["podinfo"]),
        ("argoproj.io", "applications"): ({"get", "patch"}, ["podinfo"]),
        ("argoproj.io", "workflowtaskresults"): ({"create", "patch"}, None),  # names are generated
    }
    granted = set()
    for role in roles.values():
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    verbs, names = allowed[(group, resource)]
                    assert set(rule["verbs"]) <= verbs and "*" not in rule["verbs"]
                    assert rule.get("resourceNames") == names
                    granted.add((group, resource, role["metadata"]["namespace"]))
    assert granted == {
        ("networking.istio.io", "virtualservices", "demo"),
        ("argoproj.io", "workflowtaskresults", "demo"),
        ("argoproj.io", "applications", "argocd"),
    }
    account = one("ServiceAccount")
    for _, binding in objects_under(ARGOCD):
        if binding["kind"] == "RoleBinding":
            assert binding["roleRef"]["name"] in roles
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rollguard", "namespace": "demo"}]
    for name in ("canary-release", "canary-analysis"):
        spec = load_all(REPO / "workflows" / f"{name}.yaml")[0]["spec"]
        assert spec["serviceAccountName"] == account["metadata"]["name"]


def test_the_secret_template_is_what_the_steps_read_and_is_not_installed_by_kustomize() -> None:
    secret = one("Secret")
    steps = load_all(REPO / "workflows" / "rollguard-steps.yaml")[0]
    refs = [e["valueFrom"]["secretKeyRef"] for t in steps["spec"]["templates"] for e in t["container"]["env"]
            if "valueFrom" in e]  # fmt: skip
    assert refs and all(ref == {"name": secret["metadata"]["name"], "key": "token", "optional": True} for ref in refs)
    assert set(secret["stringData"]) == {"token"}
    assert "git-credentials" not in (ARGOCD / "kustomization.yaml").read_text(encoding="utf-8").split("resources:")[1]


def resolve(folder: Path) -> list[dict[str, Any]]:
    """The objects a kustomization yields, for the fields used here (resources, namespace); others refused."""
    kustomization = load_all(folder / "kustomization.yaml")[0]
    assert set(kustomization) <= {"apiVersion", "kind", "resources", "namespace"}, f"{folder}: unexpected fields"
    objects: list[dict[str, Any]] = []
    for entry in kustomization["resources"]:
        target = (folder / entry).resolve()
        assert target.exists(), f"{folder}/kustomization.yaml: {entry} does not exist"
        objects.extend(resolve(target) if target.is_dir() else load_all(target))
    if "namespace" in kustomization:
        for obj in objects:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def summary(objects: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted((o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objects)


EXPECTED_INSTALL = [
    ("Application", "argocd", "podinfo"),
    ("Role", "argocd", "rollguard-sync-podinfo"),
    ("Role", "demo", "rollguard-steps"),
    ("RoleBinding", "argocd", "rollguard-sync-podinfo"),
    ("RoleBinding", "demo", "rollguard-steps"),
    ("ServiceAccount", "demo", "rollguard"),
    ("WorkflowTemplate", "demo", "canary-analysis"),
    ("WorkflowTemplate", "demo", "canary-release"),
    ("WorkflowTemplate", "demo", "rollguard-steps"),
]


def test_the_kustomization_installs_templates_rbac_and_application() -> None:
    assert summary(resolve(ARGOCD)) == EXPECTED_INSTALL


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kubectl_kustomize_builds_the_same_objects() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(ARGOCD)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in YAML(typ="safe").load_all(built.stdout) if doc]
    assert summary(objects) == EXPECTED_INSTALL


def test_flagger_alternative_is_marked_and_uses_the_same_limits() -> None:
    text = (ARGOCD / "alternatives" / "flagger-canary.yaml").read_text(encoding="utf-8")
    assert text.startswith("# ALTERNATIVE, FOR COMPARISON ONLY")
    canary = load_all(ARGOCD / "alternatives" / "flagger-canary.yaml")[0]
    assert (canary["apiVersion"], canary["kind"], canary["spec"]["provider"]) == (
        "flagger.app/v1beta1",
        "Canary",
        "istio",
    )
    metrics = {m["name"]: m["thresholdRange"] for m in canary["spec"]["analysis"]["metrics"]}
    defaults = analyze_defaults()
    assert metrics["request-success-rate"] == {"min": round(100 * (1 - defaults["max_error_rate"]))}
    assert metrics["request-duration"] == {"max": defaults["max_p99_latency_ms"]}
    assert canary["spec"]["analysis"]["threshold"] == defaults["failure_limit"]
    assert "alternatives" not in (ARGOCD / "kustomization.yaml").read_text(encoding="utf-8")


def test_kind_script_is_valid_bash_with_bounded_waits_and_existing_paths() -> None:
    script = ARGOCD / "kind-e2e.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text and "NOT RUN" in text
    assert not re.search(r"^\s*(while|until)\b", text, re.MULTILINE), "every wait is a bounded `for _ in $(seq N)` loop"
    for path in ("images/Dockerfile", "argocd/rbac.yaml", "argocd/application.yaml", "argocd/demo-app/podinfo.yaml",
                 "argocd/demo-app/istio.yml", "argocd/hook/canary-analysis-hook.yaml"):  # fmt: skip
        assert path in text and (REPO / path).exists(), path
