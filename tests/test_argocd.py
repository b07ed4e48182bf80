"""argocd/: core objects against Kubernetes' schemas, Istio objects against published Istio models,
Argo objects against Hera's models, the kustomization, the RBAC limits, and the hook's wiring."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from argo_schema import SUPPORTED_LINES, schema_errors
from cloudcoil.models.istio.networking.v1beta1 import DestinationRule, VirtualService
from hera.workflows.models import Workflow as WorkflowModel
from ruamel.yaml import YAML

from rollguard.steps.analyze import command as analyze
from rollguard.steps.rollback import evidence_lines, rollback_message
from rollguard.steps.traffic.virtualservice import read_split
from rollguard.steps.traffic.weight_edit import SplitEdit
from rollguard.steps.verdict_document import read_text

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
    for line, version in SUPPORTED_LINES.items():
        assert schema_errors(hook, version) == [], f"Argo {line}"
    annotations = hook["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PostSync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    assert "generateName" not in hook["metadata"]  # a fixed name, so BeforeHookCreation finds the old one
    assert hook["spec"]["workflowTemplateRef"] == {"name": "canary-analysis"}
    # The app's namespace injects Istio sidecars; the hook's step pods must not get one.
    assert hook["spec"]["podMetadata"]["labels"]["sidecar.istio.io/inject"] == "false"


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
    assert given["fail-on-rollback"] == "false"  # a rollback must not fail the sync (argocd/README.md)


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
    secret = load_all(ARGOCD / "git-credentials.secret.yaml")[0]
    for name in ("rollguard-steps", "canary-release", "canary-analysis"):
        spec = load_all(REPO / "workflows" / f"{name}.yaml")[0]["spec"]
        git_steps = [t for t in spec["templates"]
                     if t["name"] in ("analyze", "deploy", "promote", "rollback", "status")]  # fmt: skip
        assert git_steps, name
        for template in git_steps:
            inputs = {p["name"]: p for p in template["inputs"]["parameters"]}
            assert inputs["git-secret"]["default"] == secret["metadata"]["name"]
            refs = [e["valueFrom"]["secretKeyRef"] for e in template["container"]["env"] if "valueFrom" in e]
            assert refs == [{"name": "{{inputs.parameters.git-secret}}", "key": "token", "optional": True}]
            assert template["volumes"][0]["secret"]["secretName"] == "{{inputs.parameters.git-secret}}"
        arguments = {p["name"]: p for p in spec.get("arguments", {}).get("parameters", [])}
        if arguments:  # the workflows pass their parameter `git-secret`, defaulting to the same Secret
            assert arguments["git-secret"]["value"] == secret["metadata"]["name"]
    assert set(secret["stringData"]) == {"token"}
    assert "git-credentials" not in (ARGOCD / "kustomization.yaml").read_text(encoding="utf-8").split("resources:")[1]


def test_the_notify_secret_template_is_what_the_exit_handler_mounts() -> None:
    secret = load_all(ARGOCD / "notify-webhook.secret.yaml")[0]
    assert set(secret["stringData"]) == {"url"} and secret["metadata"]["namespace"] == "demo"
    for name in ("canary-release", "canary-analysis"):
        spec = load_all(REPO / "workflows" / f"{name}.yaml")[0]["spec"]
        arguments = {p["name"]: p for p in spec["arguments"]["parameters"]}
        assert arguments["notify-secret"]["value"] == secret["metadata"]["name"]
        assert arguments["notify-url-file"]["value"].endswith("/url")  # the Secret's key, mounted as a file
    assert "notify-webhook" not in (ARGOCD / "kustomization.yaml").read_text(encoding="utf-8")


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
    ("Namespace", "", "demo"),
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


def test_the_namespace_exists_before_the_objects_in_it() -> None:
    # `kubectl apply -k argocd/` on a fresh cluster: namespace demo must be part of the install, and the
    # Namespace the Application syncs from Git (demo-app) must say the same (ArgoCD adopts it).
    installed = next(o for o in resolve(ARGOCD) if o["kind"] == "Namespace")
    synced = next(d for d in load_all(ARGOCD / "demo-app" / "podinfo.yaml") if d["kind"] == "Namespace")
    assert installed == synced
    assert installed["metadata"]["labels"]["istio-injection"] == "enabled"


# The Application fields ArgoCD has in every supported release (json tags of ApplicationSpec,
# ApplicationSource, ApplicationDestination, SyncPolicy and SyncPolicyAutomated in argo-cd's
# pkg/apis/application/v1alpha1/types.go, v2.13.0; v3.5.1 only adds fields).
APPLICATION_FIELDS: dict[str, Any] = {
    "apiVersion": None, "kind": None,
    "metadata": {"name": None, "namespace": None, "annotations": None, "labels": None},
    "spec": {
        "project": None, "info": None, "revisionHistoryLimit": None, "ignoreDifferences": None, "sources": None,
        "source": {"repoURL": None, "path": None, "targetRevision": None, "helm": None, "kustomize": None,
                   "directory": None, "plugin": None, "chart": None, "ref": None},
        "destination": {"server": None, "namespace": None, "name": None},
        "syncPolicy": {"automated": {"prune": None, "selfHeal": None, "allowEmpty": None}, "syncOptions": None,
                       "retry": None, "managedNamespaceMetadata": None},
    },
}  # fmt: skip


def application_problems(
    document: dict[str, Any], known: dict[str, Any] = APPLICATION_FIELDS, path: str = ""
) -> list[str]:
    problems = []
    for key, value in document.items():
        if key not in known:
            problems.append(f"{path}{key}")
        elif isinstance(known[key], dict) and isinstance(value, dict):
            problems.extend(application_problems(value, known[key], f"{path}{key}."))
    return problems


def validate_object(document: dict[str, Any]) -> None:
    """One installed object against its schema: Kubernetes', Argo's (every supported line) or ArgoCD's fields."""
    kind = document["kind"]
    if kind in CORE_KINDS | {"ClusterRole", "ClusterRoleBinding", "ConfigMap"}:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)
    elif kind in ("Workflow", "WorkflowTemplate"):
        for line, version in SUPPORTED_LINES.items():
            assert schema_errors(document, version) == [], f"{kind} {document['metadata']['name']} on Argo {line}"
    elif kind == "Application":
        assert application_problems(document) == [], "Application fields unknown to ArgoCD 2.13"
    else:
        pytest.fail(f"no schema to check a {kind} against")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_kubectl_kustomize_builds_the_same_objects_and_each_validates() -> None:
    built = subprocess.run(["kubectl", "kustomize", str(ARGOCD)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in YAML(typ="safe").load_all(built.stdout) if doc]
    assert summary(objects) == EXPECTED_INSTALL
    assert objects[0]["kind"] == "Namespace", "kustomize must create namespace demo before the objects in it"
    for document in objects:
        validate_object(document)


def test_the_application_check_refuses_an_unknown_field() -> None:
    application = one("Application")
    assert application_problems(application) == []
    broken = {**application, "spec": {**application["spec"], "syncPolicy": {"automated": {"selfHeel": True}}}}
    assert application_problems(broken) == ["spec.syncPolicy.automated.selfHeel"]


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


KIND_SCRIPT = ARGOCD / "kind-e2e.sh"


def test_kind_script_is_valid_bash_with_bounded_waits_and_existing_paths() -> None:
    assert subprocess.run(["bash", "-n", str(KIND_SCRIPT)], check=False).returncode == 0
    text = KIND_SCRIPT.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text and "NOT RUN" in text
    assert not re.search(r"^\s*(while|until)\b", text, re.MULTILINE), "every wait is a bounded `for _ in $(seq N)` loop"
    for path in ("images/Dockerfile", "argocd/rbac.yaml", "argocd/application.yaml", "argocd/demo-app/podinfo.yaml",
                 "argocd/demo-app/istio.yml", "argocd/hook/canary-analysis-hook.yaml",
                 "argocd/namespace.yaml"):  # fmt: skip
        assert path in text and (REPO / path).exists(), path


def test_kind_script_installs_as_the_supported_versions_need() -> None:
    text = KIND_SCRIPT.read_text(encoding="utf-8")
    # Argo Workflows 4.x ships full CRDs that only a server-side apply can install; ArgoCD's too.
    installs = [line for line in text.splitlines() if "install.yaml" in line or "kubectl apply -n arg" in line]
    assert installs and all("--server-side" in line for line in installs if "kubectl apply" in line)
    # The committed templates need no artifact repository: nothing opts into the verdict artifact.
    assert "--verdict-artifact" not in text and "--no-verdict-artifact" not in text
    assert "kubectl apply -f argocd/namespace.yaml" in text  # namespace demo before the objects in it


def run_kind_script(tmp_path: Path, argo_version: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """The script with stand-ins for the cluster tools: each records its call and exits 97."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir(exist_ok=True)
    calls.write_text("")
    for tool in ("docker", "kind", "kubectl", "istioctl"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\nexit 97\n')
        stub.chmod(0o755)
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", "GITOPS_REPO": "https://git.invalid/x.git",
                   "GITOPS_TOKEN": "t", "ARGO_WORKFLOWS_VERSION": argo_version, "HOME": str(tmp_path)}  # fmt: skip
    done = subprocess.run(["bash", str(KIND_SCRIPT)], capture_output=True, text=True, env=environment, check=False)
    return done, calls.read_text()


@pytest.mark.parametrize("version", ["v3.5.15", "v3.5.8", "v3.4.0", "v2.12.0", "latest", "3.7.0"])
def test_kind_script_refuses_unsupported_argo_versions_before_touching_anything(tmp_path: Path, version: str) -> None:
    done, calls = run_kind_script(tmp_path, version)
    assert done.returncode == 2, done.stderr
    assert "3.6 or later" in done.stderr and version in done.stderr
    assert calls == ""


@pytest.mark.parametrize("version", ["v3.6.0", "v3.6.3", "v3.7.18", "v4.0.0", "v4.1.2"])
def test_kind_script_accepts_supported_argo_versions(tmp_path: Path, version: str) -> None:
    done, calls = run_kind_script(tmp_path, version)
    assert done.returncode == 97, done.stderr  # it went on to create the cluster (the stand-in kind exits 97)
    assert calls.startswith("kind get clusters")


def kind_script_pattern(name: str) -> str:
    found = re.search(rf"^{name}='([^']+)'$", KIND_SCRIPT.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, name
    return found.group(1)


def grep_matches(pattern: str, text: str) -> bool:
    return subprocess.run(["grep", "-q", pattern], input=text, text=True, check=False).returncode == 0


FAILED_CHECK = {"metric": "error_rate", "value": 0.5, "threshold": 0.01}


@pytest.mark.parametrize(
    ("verdict", "reason", "counts"),
    [
        ({"verdict": "fail", "reason": "canary 5xx share above 1 %", "failed_check": FAILED_CHECK}, "", True),
        ({"verdict": "inconclusive", "reason": "Prometheus unreachable"}, "", False),
        ({"verdict": "error", "reason": "the analyze step wrote no verdict"}, "", False),
        ({"verdict": "error", "reason": "the workflow ended Failed"}, "ended Failed (exit handler)", False),
    ],
)
def test_kind_script_counts_only_a_rollback_on_a_fail_verdict(
    verdict: dict[str, Any], reason: str, counts: bool
) -> None:
    # The message is the one `rollguard rollback` commits (steps/rollback.py), so the script's patterns
    # follow any change of its wording.
    args = argparse.Namespace(reason=reason, virtual_service="podinfo", stable_subset="v1", canary_subset="v2",
                              path="k8s/istio.yml")  # fmt: skip
    edit = SplitEdit(text="", changed=True, before_stable_weight=90, before_canary_weight=10, stable_weight=100,
                     canary_weight=0, routes_changed=1, warnings=())  # fmt: skip
    message = rollback_message(args, edit, evidence_lines(read_text(json.dumps(verdict), "the verdict")))
    assert grep_matches(kind_script_pattern("ROLLBACK_SUBJECT"), message)
    assert grep_matches(kind_script_pattern("FAIL_VERDICT_LINE"), message) is counts
    text = KIND_SCRIPT.read_text(encoding="utf-8")
    assert 'grep -q "$FAIL_VERDICT_LINE"' in text and 'grep -q "$ROLLBACK_SUBJECT"' in text


def argo_submit_commands(text: str) -> list[str]:
    """Every `argo submit ...` command in a Markdown text, joined across line breaks, up to its closing backtick."""
    return [" ".join(match.split()) for match in re.findall(r"`(argo submit [^`]+)`", text)]


@pytest.mark.parametrize("document", ["README.md", "argocd/README.md"])
def test_documented_release_commands_name_the_namespace_and_every_required_parameter(document: str) -> None:
    template = load_all(REPO / "workflows" / "canary-release.yaml")[0]
    declared = {p["name"]: p for p in template["spec"]["arguments"]["parameters"]}
    required = {name for name, p in declared.items() if "value" not in p}
    commands = argo_submit_commands((REPO / document).read_text(encoding="utf-8"))
    assert commands, f"{document} shows no `argo submit` command"
    for command in commands:
        words = command.split()
        assert "-n" in words and words[words.index("-n") + 1] == "demo", f"{document}: no `-n demo` in {command}"
        assert "--from" in words and words[words.index("--from") + 1] == "workflowtemplate/canary-release"
        given = {words[i + 1].split("=", 1)[0] for i, word in enumerate(words) if word == "-p"}
        assert required <= given, f"{document}: the command misses {sorted(required - given)}"
        assert given <= set(declared), f"{document}: unknown parameters {sorted(given - set(declared))}"
