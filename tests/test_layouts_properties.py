"""Property: the byte-preservation of weight edits, extended to a JSON 6902 patch (YAML or JSON, any style, with
other operations) resolved against generated base manifests, and to a Helm values file."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layout_repos import kustomize_files, reader
from ruamel.yaml import YAML
from test_virtualservice_properties import expected_split, manifests, plain

from rollguard.steps.traffic.json_patch_ops import apply_operations, parse_operations
from rollguard.steps.traffic.layouts import SplitSource, locate_split
from rollguard.steps.traffic.manifest_errors import SplitRouteUnclear
from rollguard.steps.traffic.manifest_yaml import load_documents

VALUE = re.compile(r'("?value"?\s*:\s*)\d+')
PATH = "overlays/prod/weights.yaml"


def patch_text(draw: st.DrawFn, operations: list[dict[str, Any]]) -> str:
    style = draw(st.sampled_from(["block", "flow", "json", "json-compact"]))
    if style.startswith("json"):
        return json.dumps(operations, indent=None if style == "json-compact" else 2) + "\n"
    yaml = YAML(typ="rt")
    yaml.default_flow_style = None if style == "flow" else False
    sequence, offset = draw(st.sampled_from([(2, 0), (4, 2)]))
    yaml.indent(mapping=2, sequence=sequence, offset=offset)
    stream = io.StringIO()
    yaml.dump(operations, stream)
    lines = stream.getvalue().splitlines(keepends=True)
    for index in draw(st.lists(st.integers(0, len(lines) - 1), max_size=4)) if style == "block" else ():
        lines[index] = lines[index].rstrip("\n") + "  # note\n"
    return "# prod weights\n" + "".join(lines)


@st.composite
def patched_bases(draw: st.DrawFn) -> tuple[str, str, str, str, str, list[int], int]:
    """(base text, patch text, VirtualService, stable, canary, the split's route indexes, new canary weight)."""
    text, name, stable, canary, _weighted, canary_weight = draw(manifests())
    virtual_service = next(plain(d) for d in load_documents(text)
                           if d and d.get("kind") == "VirtualService" and d["metadata"]["name"] == name)  # fmt: skip
    routes = virtual_service["spec"]["http"]
    split = expected_split(routes, stable, canary) or []
    operations: list[dict[str, Any]] = []
    patched_canary = draw(st.integers(0, 100))  # one value: routes split alike must still agree after the patch
    for index in split:
        for position, entry in enumerate(routes[index]["route"]):
            subset = entry["destination"]["subset"]
            if subset in (stable, canary):
                value = patched_canary if subset == canary else 100 - patched_canary
                operations.append({"op": "replace", "path": f"/spec/http/{index}/route/{position}/weight",
                                   "value": value})  # fmt: skip
    if draw(st.booleans()):
        operations.append({"op": "replace", "path": "/metadata/namespace", "value": "prod"})
    if draw(st.booleans()):
        operations.append({"op": "add", "path": "/spec/hosts/-", "value": "reviews.example.com"})
    operations = draw(st.permutations(operations)) if operations else \
        [{"op": "replace", "path": "/metadata/namespace", "value": "prod"}]  # fmt: skip
    return text, patch_text(draw, operations), name, stable, canary, split, canary_weight


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patched_bases())
def test_json_6902_patch_edit_changes_only_the_weight_values(
    case: tuple[str, str, str, str, str, list[int], int],
) -> None:
    base, patch, name, stable, canary, split, canary_weight = case
    files = kustomize_files(patch, base=base)
    files["overlays/prod/kustomization.yaml"] = files["overlays/prod/kustomization.yaml"].replace(
        "name: reviews", f"name: {name}")
    files["base/istio.yaml"] = base
    source = SplitSource(PATH, name, stable, canary)
    if not split:
        with pytest.raises(SplitRouteUnclear):
            locate_split(patch, reader(files), source)
        return
    edit = locate_split(patch, reader(files), source).edit(canary_weight)
    assert VALUE.sub(r"\1N", edit.text) == VALUE.sub(r"\1N", patch)
    before, after = parse_operations(patch), parse_operations(edit.text)
    assert [(op.op, op.path) for op in before] == [(op.op, op.path) for op in after]
    for old, new in zip(before, after, strict=True):
        if not old.path.endswith("/weight"):
            assert old.value == new.value
    base_vs = next(plain(d) for d in load_documents(base)
                   if d and d.get("kind") == "VirtualService" and d["metadata"]["name"] == name)  # fmt: skip
    patched, _sources = apply_operations(base_vs, after)
    for index in split:
        weights = {e["destination"]["subset"]: e.get("weight", 0) for e in patched["spec"]["http"][index]["route"]}
        assert (weights[stable], weights[canary]) == (100 - canary_weight, canary_weight)
    again = locate_split(edit.text, reader(files), source)
    assert again.agreed() == (100 - canary_weight, canary_weight) and not again.edit(canary_weight).changed


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_helm_values_edit_changes_only_that_value(data: st.DataObject) -> None:
    path = data.draw(st.lists(st.sampled_from(["reviews", "canary", "traffic", "split"]), min_size=1, max_size=3))
    value = data.draw(st.integers(0, 100))
    values: dict[str, Any] = {"image": {"tag": "1.0"}, "weight": 7}
    node = values
    for key in path:
        node = node.setdefault(key, {"replicas": 2})
    node["weight"] = value
    yaml = YAML(typ="rt")
    block = data.draw(st.booleans())
    yaml.default_flow_style = False if block else None
    stream = io.StringIO()
    yaml.dump(values, stream)
    text = "# values\n" + (stream.getvalue().replace("replicas: 2", "replicas: 2  # per version") if block
                            else stream.getvalue())  # a comment inside a flow mapping would not parse
    key = ".".join([*path, "weight"])
    canary_weight = data.draw(st.integers(0, 100))
    edit = locate_split(text, reader({}), SplitSource("values.yaml", "reviews", values_key=key)).edit(canary_weight)
    changed = [(a, b) for a, b in zip(text.splitlines(), edit.text.splitlines(), strict=True) if a != b]
    assert len(changed) == (0 if value == canary_weight else 1)
    assert re.sub(r"\d+", "N", edit.text) == re.sub(r"\d+", "N", text)
    assert locate_split(edit.text, reader({}), SplitSource("values.yaml", "reviews", values_key=key)).agreed() == (
        100 - canary_weight, canary_weight)  # fmt: skip
