"""How weights are read and written: a destination without `weight` weighs 0 (as Istio reads it, and as
`kubectl get -o yaml` writes it), and setting it to another value adds a `weight:` in the file's own style."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rollguard.steps.traffic.live_routes import apply_split_to_routes
from rollguard.steps.traffic.manifest_yaml import load_documents, plain
from rollguard.steps.traffic.virtualservice import read_split
from rollguard.steps.traffic.weight_edit import set_split, unified_diff

HEAD = """\
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
spec:
  hosts:
  - reviews
  http:
"""
# As `kubectl get virtualservice reviews -o yaml` prints a rolled-back split: no weight for the canary.
KUBECTL = HEAD + """\
  - route:
    - destination:
        host: reviews
        subset: v1
      weight: 100
    - destination:
        host: reviews
        subset: v2
    timeout: 3s
"""
FLOW = HEAD + """\
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 100}
    - {destination: {host: reviews, subset: 'v2'}}   # canary
"""
WIDE = HEAD.replace("  - reviews\n  http:\n", "    - reviews\n  http:\n") + """\
      - route:
          - destination:
                host: reviews
                subset: v1
            weight: 100
          - destination:
                host: reviews
                subset: v2"""  # four-space style, and the file ends right after the canary destination


def test_a_missing_weight_reads_as_0_and_a_rollback_is_a_no_op() -> None:
    for text in (KUBECTL, FLOW, WIDE):
        assert read_split(text, "reviews", "v1", "v2") == (100, 0)
        edit = set_split(text, "reviews", "v1", "v2", 0)
        assert not edit.changed and edit.text == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KUBECTL, KUBECTL.replace("      weight: 100\n", "      weight: 90\n").replace(
            "        subset: v2\n", "        subset: v2\n      weight: 10\n")),
        (FLOW, FLOW.replace("weight: 100}", "weight: 90}").replace("subset: 'v2'}}", "subset: 'v2'}, weight: 10}")),
        (WIDE, WIDE.replace("            weight: 100\n", "            weight: 90\n") + "\n            weight: 10"),
        (KUBECTL.replace("\n", "\r\n"), KUBECTL.replace("      weight: 100\n", "      weight: 90\n").replace(
            "        subset: v2\n", "        subset: v2\n      weight: 10\n").replace("\n", "\r\n")),
    ],
    ids=["block", "flow", "four-space-no-final-newline", "crlf"],
)  # fmt: skip
def test_deploy_adds_the_weight_in_the_files_style(text: str, expected: str) -> None:
    edit = set_split(text, "reviews", "v1", "v2", 10)
    assert edit.text == expected
    assert (edit.before_stable_weight, edit.before_canary_weight, edit.routes_changed) == (100, 0, 1)
    assert read_split(edit.text, "reviews", "v1", "v2") == (90, 10)


def test_the_live_patch_reads_a_missing_weight_as_0_too() -> None:
    live = plain(load_documents(KUBECTL)[0])["spec"]["http"]
    unchanged, changed = apply_split_to_routes(live, "v1", "v2", 0)
    assert changed == 0 and unchanged == live
    patched, changed = apply_split_to_routes(live, "v1", "v2", 10)
    assert changed == 1 and [entry.get("weight") for entry in patched[0]["route"]] == [90, 10]


def test_the_dry_run_diff_applies_with_git_when_the_file_has_no_final_line_break(tmp_path: Path) -> None:
    edit = set_split(WIDE, "reviews", "v1", "v2", 10)
    diff = unified_diff(WIDE, edit.text, "istio.yml")
    assert diff.endswith("-                subset: v2\n\\ No newline at end of file\n+                subset: v2\n"
                         "+            weight: 10\n\\ No newline at end of file\n")
    (tmp_path / "istio.yml").write_text(WIDE)
    subprocess.run(["git", "apply", "-"], input=diff, cwd=tmp_path, check=True, text=True, capture_output=True)
    assert (tmp_path / "istio.yml").read_text() == edit.text
