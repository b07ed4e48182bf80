"""Test helpers: GitOps repositories as teams lay them out (Kustomize base + overlay patches, Helm values)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from git_remote import FIXTURE

from rollguard.steps.traffic.kustomization import ReadFile

FIXTURE_DOCUMENTS = FIXTURE.read_text(encoding="utf-8").split("---\n")
# The DestinationRule and the VirtualService `reviews` of the fixture (its HTTP route #2 `primary` is the split).
BASE_ISTIO = "---\n".join(FIXTURE_DOCUMENTS[1:3])
BASE_KUSTOMIZATION = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - istio.yaml\n"
OVERLAY = "overlays/prod"
PATCH_PATH = f"{OVERLAY}/weights.yaml"
JSON_PATCH_PATH = f"{OVERLAY}/weights.json"

JSON_6902_PATCH = """\
# Prod canary weights: rollguard edits the two values below.
- op: replace
  path: /spec/http/1/timeout
  value: 5s
- op: add
  path: /metadata/labels/example.com~1tier
  value: "prod"
- op: replace
  path: /spec/http/1/route/0/weight
  value: 80   # stable v1
- {op: replace, path: /spec/http/1/route/1/weight, value: 20}
"""

JSON_6902_PATCH_JSON = """\
[
  {"op": "replace", "path": "/spec/http/1/route/0/weight", "value": 80},
  {"op": "replace", "path": "/spec/http/1/route/1/weight", "value": 20}
]
"""

STRATEGIC_MERGE_PATCH = """\
# Prod split (strategic merge: the http list replaces the base's).
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  http:
  - name: primary
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80   # stable
    - destination: {host: reviews, subset: v2}
      weight: 20   # canary
"""

HELM_VALUES = """\
# Values of the reviews chart (rendered by ArgoCD).
defaults: &defaults
  replicas: 2
reviews:
  image: {repository: reviews, tag: "1.4.0"}
  stable:
    <<: *defaults
    weight: 80    # stable share
  canary:
    <<: *defaults
    weight: 20    # canary share, moved by rollguard
"""


def overlay_kustomization(patch_file: str = "weights.yaml", how: str = "patches", extra: str = "") -> str:
    """An overlay kustomization applying `patch_file` to VirtualService reviews of ../../base."""
    if how == "patchesStrategicMerge":
        patches = f"patchesStrategicMerge:\n  - {patch_file}\n"
    else:
        patches = f"{how}:\n  - path: {patch_file}\n    target:\n      group: networking.istio.io\n" \
            f"      version: v1beta1\n      kind: VirtualService\n      name: reviews\n"  # fmt: skip
    return ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\n"
            + patches + extra)  # fmt: skip


def kustomize_files(patch: str = JSON_6902_PATCH, patch_file: str = "weights.yaml", how: str = "patches",
                    base: str = BASE_ISTIO, extra: str = "") -> dict[str, str]:  # fmt: skip
    """Files of a repository with base/ and overlays/prod/ applying the patch."""
    return {
        "base/istio.yaml": base,
        "base/kustomization.yaml": BASE_KUSTOMIZATION,
        f"{OVERLAY}/kustomization.yaml": overlay_kustomization(patch_file, how, extra),
        f"{OVERLAY}/{patch_file}": patch,
    }


def reader(files: dict[str, str]) -> ReadFile:
    """A ReadFile over a dict of files."""
    return files.get


RENDER_TOOL = shutil.which("kustomize") or shutil.which("kubectl")
needs_kustomize = pytest.mark.skipif(
    RENDER_TOOL is None, reason="neither kustomize nor kubectl is installed: the render checks cannot run here"
)


def render_overlay(root: Path, overlay: str = OVERLAY) -> str:
    """The overlay rendered by kubectl kustomize (or kustomize build) in a checkout at `root`."""
    command = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]
    completed = subprocess.run([*command, overlay], cwd=root, capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout
