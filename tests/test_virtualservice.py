"""VirtualService edits on a realistic multi-document file: only weights change, bad files are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cloudcoil.models.istio.networking.v1beta1 import DestinationRule, VirtualService
from ruamel.yaml import YAML

from rollguard.steps.traffic.live_routes import apply_split_to_routes
from rollguard.steps.traffic.manifest_errors import (
    InvalidWeights,
    ManifestError,
    ManifestSyntaxError,
    UndeclaredSubset,
    VirtualServiceNotFound,
    WeightedRouteNotFound,
)
from rollguard.steps.traffic.manifest_yaml import load_documents
from rollguard.steps.traffic.virtualservice import find_split, read_split
from rollguard.steps.traffic.weight_edit import set_split, unified_diff

FIXTURE = (Path(__file__).parent / "fixtures" / "istio.yml").read_text(encoding="utf-8")


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines)
    return [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]


def test_read_split_of_the_fixture() -> None:
    assert read_split(FIXTURE, "reviews", "v1", "v2") == (90, 10)
    assert read_split(FIXTURE, "ratings", "v1", "v2") == (90, 10)


def test_rollback_changes_exactly_the_two_weight_numbers() -> None:
    edit = set_split(FIXTURE, "reviews", "v1", "v2", 0)
    assert edit.changed and edit.routes_changed == 1
    assert (edit.before_stable_weight, edit.before_canary_weight) == (90, 10)
    assert edit.namespace == "shop"  # the live patch's default namespace, from the VirtualService itself
    assert changed_lines(FIXTURE, edit.text) == [
        ("      weight: 90     # stable\n", "      weight: 100     # stable\n"),
        ("      weight: 10     # canary\n", "      weight: 0     # canary\n"),
    ]
    # The canary destination is kept with weight 0; the header route to the canary is untouched.
    assert read_split(edit.text, "reviews", "v1", "v2") == (100, 0)
    assert "subset: v2\n        port: {number: 9080}\n      weight: 0" in edit.text
    assert 'exact: "always"\n    route:\n    - destination:\n        host: reviews\n        subset: v2\n' in edit.text
    # The other VirtualService (same subsets) and every comment, quote and flow mapping stay.
    assert read_split(edit.text, "ratings", "v1", "v2") == (90, 10)
    for kept in (
        "# Testers always get the canary.",
        "'shop'",
        '"reviews.example.com"',
        "{http1MaxPendingRequests: 100}",
    ):
        assert kept in edit.text


def test_setting_the_same_split_is_a_no_op() -> None:
    edit = set_split(FIXTURE, "reviews", "v1", "v2", 10)
    assert not edit.changed and edit.text == FIXTURE and edit.routes_changed == 0


def test_a_matched_route_with_both_subsets_is_not_the_split_when_the_default_route_is() -> None:
    text = FIXTURE.replace(
        "    timeout: 3s\n",
        "    timeout: 3s\n"
        "  - name: mobile\n"
        "    match: [{uri: {prefix: /m}}]\n"
        "    route:\n"
        "    - {destination: {host: reviews, subset: v2}, weight: 10}\n"
        "    - {destination: {host: reviews, subset: v1}, weight: 90}\n",
        1,
    )
    edit = set_split(text, "reviews", "v1", "v2", 50)
    assert edit.routes_changed == 1
    assert "- {destination: {host: reviews, subset: v2}, weight: 10}" in edit.text  # /m keeps its own split
    assert "- {destination: {host: reviews, subset: v1}, weight: 90}" in edit.text
    assert len(changed_lines(text, edit.text)) == 2
    assert [route.name for route in find_split(edit.text, "reviews", "v1", "v2").routes] == ["primary"]
    assert find_split(edit.text, "reviews", "v1", "v2", ("mobile",)).canary_weight == 10


def test_crlf_file_keeps_its_line_endings() -> None:
    text = FIXTURE.replace("\n", "\r\n")
    edit = set_split(text, "reviews", "v1", "v2", 0)
    assert edit.text == set_split(FIXTURE, "reviews", "v1", "v2", 0).text.replace("\n", "\r\n")


def test_no_destination_rule_in_the_file_is_a_warning() -> None:
    without_rule = "---\n".join(part for part in FIXTURE.split("---\n") if "kind: DestinationRule" not in part)
    assert "DestinationRule" not in without_rule
    edit = set_split(without_rule, "reviews", "v1", "v2", 0)
    assert edit.changed
    assert len(edit.warnings) == 1 and "no DestinationRule" in edit.warnings[0]


@pytest.mark.parametrize(
    ("text", "error", "words"),
    [
        (FIXTURE + "\n  bad: [unclosed\n", ManifestSyntaxError, "not valid YAML at line"),
        (FIXTURE, VirtualServiceNotFound, "VirtualServices in this file: reviews, ratings"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\n", VirtualServiceNotFound, "no VirtualService in it"),
    ],
)
def test_unreadable_file_or_missing_virtual_service(text: str, error: type[ManifestError], words: str) -> None:
    name = "reviews" if error is ManifestSyntaxError else "nope"
    with pytest.raises(error, match=words):
        set_split(text, name, "v1", "v2", 0)


def test_no_route_with_both_subsets_lists_the_routes() -> None:
    with pytest.raises(WeightedRouteNotFound, match=r"both subset 'v1' and 'v3'.*#1 'testers' at line \d+ -> v2; "
                       r"#2 'primary' at line \d+ -> v1 90, v2 10"):
        read_split(FIXTURE, "reviews", "v1", "v3")


def test_subset_not_declared_by_the_destination_rule() -> None:
    text = FIXTURE.replace('    - name: v2\n      labels:\n        version: "v2"\n', "")
    with pytest.raises(UndeclaredSubset, match=r"subset 'v2' is not declared by DestinationRule 'reviews'.*v1"):
        set_split(text, "reviews", "v1", "v2", 0)


def test_destination_rule_for_another_host_does_not_declare_the_subsets() -> None:
    text = FIXTURE.replace("host: reviews.shop.svc.cluster.local", "host: details")
    with pytest.raises(UndeclaredSubset, match=r"no DestinationRule in this file is for host 'reviews'"):
        read_split(text, "reviews", "v1", "v2")


@pytest.mark.parametrize("weight", [-1, 101, 1000])
def test_weight_outside_0_to_100_is_refused(weight: int) -> None:
    with pytest.raises(InvalidWeights, match=r"outside 0\.\.100"):
        set_split(FIXTURE, "reviews", "v1", "v2", weight)


def test_weights_that_would_not_add_up_to_100_are_refused() -> None:
    text = FIXTURE.replace(
        "      weight: 10     # canary\n",
        "      weight: 5     # canary\n    - destination:\n        host: reviews\n        subset: v1\n"
        "        port: {number: 9081}\n      weight: 5\n",
    ).replace("subset: v1\n        port: {number: 9081}", "subset: v3\n        port: {number: 9081}")
    with pytest.raises(InvalidWeights, match="would add up to 105, not 100"):
        set_split(text, "reviews", "v1", "v2", 0)


def test_file_weights_that_do_not_add_up_are_refused_by_read_split() -> None:
    text = FIXTURE.replace("weight: 10     # canary", "weight: 20     # canary")
    with pytest.raises(InvalidWeights, match="add up to 110, not 100"):
        read_split(text, "reviews", "v1", "v2")
    # A rollback still repairs such a file: the result adds up to 100.
    assert read_split(set_split(text, "reviews", "v1", "v2", 0).text, "reviews", "v1", "v2") == (100, 0)


@pytest.mark.parametrize(
    ("replacement", "words"),
    [
        ('weight: "10"     # canary', "not a whole number"),
        ("weight: 10.5     # canary", "not a whole number"),
        ("weight: 150     # canary", "must be 0 to 100"),
    ],
)
def test_bad_weights_in_the_file_are_refused(replacement: str, words: str) -> None:
    text = FIXTURE.replace("weight: 10     # canary", replacement)
    with pytest.raises(InvalidWeights, match=words):
        set_split(text, "reviews", "v1", "v2", 0)


def test_weights_shared_through_an_anchor_are_refused_not_corrupted() -> None:
    text = FIXTURE.replace("weight: 90     # stable", "weight: &w 90     # stable")
    with pytest.raises(InvalidWeights, match="plain number"):
        set_split(text, "reviews", "v1", "v2", 0)


def test_weight_from_a_merge_key_is_refused() -> None:
    text = FIXTURE.replace("      weight: 10     # canary", "      <<: {weight: 10}")
    with pytest.raises(InvalidWeights, match="comes from a YAML merge key"):
        set_split(text, "reviews", "v1", "v2", 0)


def test_duplicate_subset_in_one_route_is_ambiguous() -> None:
    text = FIXTURE.replace(
        "      weight: 10     # canary\n",
        "      weight: 10     # canary\n    - destination: {host: reviews, subset: v2}\n      weight: 0\n",
    )
    with pytest.raises(WeightedRouteNotFound, match="2 destinations with subset 'v2'"):
        set_split(text, "reviews", "v1", "v2", 0)


def test_same_subset_for_stable_and_canary_is_refused() -> None:
    with pytest.raises(WeightedRouteNotFound, match="must differ"):
        read_split(FIXTURE, "reviews", "v1", "v1")


def test_two_virtual_services_with_the_same_name_are_refused() -> None:
    text = FIXTURE + "---\n" + FIXTURE.split("---\n")[2]
    with pytest.raises(VirtualServiceNotFound, match="2 VirtualServices are named 'reviews'"):
        read_split(text, "reviews", "v1", "v2")


def test_unified_diff_names_the_file_and_the_lines() -> None:
    edit = set_split(FIXTURE, "reviews", "v1", "v2", 25)
    diff = unified_diff(FIXTURE, edit.text, "k8s/istio.yml")
    assert diff.startswith("--- a/k8s/istio.yml\n+++ b/k8s/istio.yml\n")
    assert "-      weight: 90     # stable\n+      weight: 75     # stable\n" in diff


def test_apply_split_to_live_routes_changes_only_weighted_routes() -> None:
    documents = load_documents(FIXTURE)
    live = [dict(route) for route in documents[1]["spec"]["http"]]
    new_routes, changed = apply_split_to_routes(live, "v1", "v2", 0)
    assert changed == 1
    assert new_routes[0] is live[0]
    assert [entry["weight"] for entry in new_routes[1]["route"]] == [100, 0]
    assert new_routes[1]["timeout"] == "3s"
    _again, changed_again = apply_split_to_routes(new_routes, "v1", "v2", 0)
    assert changed_again == 0


@pytest.mark.parametrize("canary_weight", [0, 37, 100])
def test_edited_file_is_still_valid_istio_per_the_published_models(canary_weight: int) -> None:
    """Every Istio object of the edited file round-trips through Istio's published models unchanged."""
    text = set_split(FIXTURE, "reviews", "v1", "v2", canary_weight).text
    models: dict[str, Any] = {"VirtualService": VirtualService, "DestinationRule": DestinationRule}
    checked = 0
    for document in YAML(typ="safe").load_all(text):
        model = models.get(str((document or {}).get("kind")))
        if model is not None:
            dumped = model.model_validate(document).model_dump(by_alias=True, exclude_none=True, mode="json")
            assert dumped == document
            checked += 1
    assert checked == 4
