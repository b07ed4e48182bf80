"""Property: for generated manifests (styles, comments, quoting, extra routes and documents) and any
weight, the edit changes only weight values, and the file parses to the same structure otherwise."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from rollguard.steps.traffic.live_routes import apply_split_to_routes
from rollguard.steps.traffic.manifest_errors import ManifestError, SplitRouteUnclear
from rollguard.steps.traffic.manifest_yaml import load_documents
from rollguard.steps.traffic.virtualservice import read_split
from rollguard.steps.traffic.weight_edit import set_split

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8).map(lambda s: f"x{s}")
SUBSET_NAMES = ["v1", "v2", "v3", "stable", "canary", "blue", "green"]
WEIGHT = re.compile(r"weight: \d+")
FIXTURE_TEXT = (Path(__file__).parent / "fixtures" / "istio.yml").read_text(encoding="utf-8")


def quoted(draw: st.DrawFn, text: str) -> Any:
    style = draw(st.sampled_from(["plain", "double", "single"]))
    if style == "double":
        return DoubleQuotedScalarString(text)
    if style == "single":
        return SingleQuotedScalarString(text)
    return text


@st.composite
def manifests(draw: st.DrawFn) -> tuple[str, str, str, str, int, int]:
    """(yaml text, VirtualService name, stable subset, canary subset, number of weighted routes, canary weight)."""
    stable, canary, third = draw(st.permutations(SUBSET_NAMES))[:3]
    host = draw(NAMES)
    name = draw(NAMES)
    routes: list[dict[str, Any]] = []
    weighted = 0
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        if draw(st.booleans()) or (weighted == 0 and len(routes) >= 1):
            # Several weighted routes often split alike (uri routes), sometimes not.
            canary_weight = draw(st.sampled_from([30, draw(st.integers(min_value=0, max_value=100))]))
            entries = [
                {
                    "destination": {"host": quoted(draw, host), "subset": quoted(draw, stable)},
                    "weight": 100 - canary_weight,
                },
                {"destination": {"host": host, "subset": canary}, "weight": canary_weight},
            ]
            if draw(st.booleans()):
                entries.reverse()
            if draw(st.booleans()):
                entries.append({"destination": {"host": host, "subset": third}, "weight": 0})
            route: dict[str, Any] = {"route": entries}
            if draw(st.booleans()):
                route["match"] = [{"uri": {"prefix": f"/{draw(NAMES)}"}}]
            weighted += 1
        else:
            route = {
                "match": [{"headers": {"x-" + draw(NAMES): {"exact": quoted(draw, draw(NAMES))}}}],
                "route": [{"destination": {"host": host, "subset": draw(st.sampled_from([stable, canary]))}}],
            }
        if draw(st.booleans()):
            route["name"] = quoted(draw, draw(NAMES))
        if draw(st.booleans()):
            route["timeout"] = f"{draw(st.integers(1, 9))}s"
        if draw(st.booleans()):
            route = dict(reversed(list(route.items())))
        routes.append(route)
    if weighted == 0:
        routes.append({"route": [{"destination": {"host": host, "subset": stable}, "weight": 100},
                                 {"destination": {"host": host, "subset": canary}, "weight": 0}]})  # fmt: skip
        weighted = 1
    virtual_service = {
        "apiVersion": draw(st.sampled_from(["networking.istio.io/v1beta1", "networking.istio.io/v1"])),
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": quoted(draw, "shop")},
        "spec": {"hosts": [host], "http": routes},
    }
    documents: list[Any] = [virtual_service]
    if draw(st.integers(0, 4)) > 0:
        documents.append({
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": {"name": host},
            "spec": {"host": f"{host}.shop.svc.cluster.local" if draw(st.booleans()) else host,
                     "subsets": [{"name": s, "labels": {"version": s}} for s in (stable, canary, third)]},
        })  # fmt: skip
    if draw(st.booleans()):
        other = draw(NAMES.filter(lambda n: n != name))
        documents.append({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": other},
            "spec": {"hosts": [host], "http": [{"route": [
                {"destination": {"host": host, "subset": stable}, "weight": 50},
                {"destination": {"host": host, "subset": canary}, "weight": 50}]}]},
        })  # fmt: skip
    if draw(st.booleans()):
        documents.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "weight: 7"}}
        )
    documents = draw(st.permutations(documents))
    yaml = YAML(typ="rt")
    mapping, sequence, offset = draw(st.sampled_from([(2, 2, 0), (2, 4, 2), (4, 4, 2), (4, 6, 4), (3, 3, 1)]))
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.width = 4096
    yaml.default_flow_style = draw(st.sampled_from([False, None]))
    yaml.explicit_start = True
    stream = io.StringIO()
    yaml.dump_all(documents, stream)
    lines = stream.getvalue().splitlines(keepends=True)
    commented = draw(st.lists(st.integers(min_value=0, max_value=len(lines) - 1), max_size=6))
    for index in commented:
        lines[index] = lines[index].rstrip("\n") + "   # note\n"
    text = "# generated manifest\n" + "".join(lines)
    return text, name, stable, canary, weighted, draw(st.integers(min_value=0, max_value=100))


def expected_split(routes: list[dict[str, Any]], stable: str, canary: str) -> list[int] | None:
    """The rule, written out independently: indexes of the split's routes, or None when it must be refused."""
    def weights(route: dict[str, Any]) -> tuple[int, int]:
        by_subset = {entry["destination"]["subset"]: entry.get("weight", 0) for entry in route["route"]}
        return by_subset[stable], by_subset[canary]

    holding = [index for index, route in enumerate(routes)
               if {stable, canary} <= {entry["destination"]["subset"] for entry in route["route"]}]
    default = next((index for index, route in enumerate(routes) if not route.get("match")), None)
    if default in holding:
        return [default]
    return holding if len({weights(routes[index]) for index in holding}) == 1 else None


def plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(item) for item in node]
    return node


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests())
def test_only_weight_values_change(case: tuple[str, str, str, str, int, int]) -> None:
    text, name, stable, canary, weighted, canary_weight = case
    original_live = next(
        plain(d)
        for d in load_documents(text)
        if d and d.get("kind") == "VirtualService" and d["metadata"]["name"] == name
    )
    split = expected_split(original_live["spec"]["http"], stable, canary)
    if split is None:  # no default route holds both and the routes holding both disagree: refused everywhere
        with pytest.raises(SplitRouteUnclear, match="pass --route NAME"):
            set_split(text, name, stable, canary, canary_weight)
        with pytest.raises(SplitRouteUnclear):
            apply_split_to_routes(original_live["spec"]["http"], stable, canary, canary_weight)
        return
    edit = set_split(text, name, stable, canary, canary_weight)

    # Byte for byte, the file differs only in the digits after `weight:`.
    assert WEIGHT.sub("weight: N", edit.text) == WEIGHT.sub("weight: N", text)
    # Structurally, only the weights of the split's routes of that VirtualService differ.
    before = [plain(doc) for doc in load_documents(text)]
    after = [plain(doc) for doc in load_documents(edit.text)]
    expected = before
    for document in expected:
        if document.get("kind") == "VirtualService" and document["metadata"]["name"] == name:
            for index in split:
                for entry in document["spec"]["http"][index]["route"]:
                    subset = entry["destination"]["subset"]
                    if subset in (stable, canary):
                        entry["weight"] = canary_weight if subset == canary else 100 - canary_weight
    assert after == expected
    # The live patch computes the same routes from the live object as the Git edit writes to the file.
    wanted = next(d for d in expected if d.get("kind") == "VirtualService" and d["metadata"]["name"] == name)
    patched, _changed = apply_split_to_routes(original_live["spec"]["http"], stable, canary, canary_weight)
    assert patched == wanted["spec"]["http"]
    assert read_split(edit.text, name, stable, canary) == (100 - canary_weight, canary_weight)
    assert not set_split(edit.text, name, stable, canary, canary_weight).changed
    assert len([line for line in text.splitlines() if "weight:" in line]) >= 2 * weighted


JUNK = st.one_of(
    st.none(),
    st.integers(-5, 500),
    st.booleans(),
    st.text(alphabet="abv12 ", max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.sampled_from(["weight", "subset", "host", "route"]), st.integers(0, 100), max_size=2),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_damaged_manifests_fail_only_with_a_manifest_error(data: st.DataObject) -> None:
    """Any subtree of the fixture replaced by junk: the edit works or raises a ManifestError, never crashes."""
    documents = [plain(doc) for doc in load_documents(FIXTURE_TEXT)]
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(documents) - 1))
        where = data.draw(st.sampled_from(paths(documents[index])[1:]))
        node = documents[index]
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = data.draw(JUNK)
    stream = io.StringIO()
    YAML(typ="rt").dump_all(documents, stream)
    try:
        set_split(stream.getvalue(), "reviews", "v1", "v2", data.draw(st.integers(0, 100)))
        read_split(stream.getvalue(), "reviews", "v1", "v2")
    except ManifestError:
        pass
