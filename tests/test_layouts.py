"""The split in each layout (Kustomize JSON 6902 and strategic-merge patches, Helm values): read, edited
byte for byte, and refused with a message naming the file and what is missing."""

from __future__ import annotations

import re

import pytest
from layout_repos import (
    BASE_ISTIO,
    HELM_VALUES,
    JSON_6902_PATCH,
    JSON_6902_PATCH_JSON,
    PATCH_PATH,
    STRATEGIC_MERGE_PATCH,
    kustomize_files,
    reader,
)

from rollguard.steps.traffic.layouts import HELM_VALUES as HELM_LAYOUT
from rollguard.steps.traffic.layouts import JSON_6902, STRATEGIC_MERGE, LocatedSplit, SplitSource, locate_split
from rollguard.steps.traffic.manifest_errors import (
    InvalidWeights,
    ManifestError,
    ManifestTooLarge,
    SplitRouteUnclear,
    UndeclaredSubset,
    WeightedRouteNotFound,
)

SOURCE = SplitSource(PATCH_PATH, "reviews")


def locate(patch: str = JSON_6902_PATCH, source: SplitSource = SOURCE, **files_kw: str) -> LocatedSplit:
    files = kustomize_files(patch, **files_kw)
    return locate_split(files[source.path] if source.path in files else patch, reader(files), source)


def test_json_6902_patch_is_resolved_against_the_base_and_only_its_values_change() -> None:
    split = locate()
    assert split.layout == JSON_6902 and split.agreed() == (80, 20) and split.base == "base/istio.yaml"
    assert split.overlay == "overlays/prod" and split.namespace == "shop" and not split.unverified
    edit = split.edit(5)
    assert edit.text == JSON_6902_PATCH.replace("value: 80 ", "value: 95 ").replace("value: 20}", "value: 5}")
    assert (edit.before_stable_weight, edit.before_canary_weight, edit.stable_weight, edit.canary_weight) == (
        80, 20, 95, 5)  # fmt: skip
    assert not locate(edit.text).edit(5).changed


def test_json_6902_patch_written_as_json_keeps_its_bytes() -> None:
    source = SplitSource("overlays/prod/weights.json", "reviews")
    split = locate(JSON_6902_PATCH_JSON, source, patch_file="weights.json")
    edit = split.edit(0)
    assert edit.text == JSON_6902_PATCH_JSON.replace('"value": 80}', '"value": 100}').replace(
        '"value": 20}', '"value": 0}')  # fmt: skip


def test_a_destination_added_with_dash_carries_the_canary_weight() -> None:
    base = BASE_ISTIO.replace(
        "    - destination:\n        host: reviews\n        subset: v2\n        port: {number: 9080}\n"
        "      weight: 10     # canary\n", "").replace("weight: 90     # stable", "weight: 100     # stable")
    patch = ("- op: replace\n  path: /spec/http/1/route/0/weight\n  value: 90\n"
             "- op: add\n  path: /spec/http/1/route/-\n"
             "  value:\n    destination: {host: reviews, subset: v2}\n    weight: 10  # canary\n")
    split = locate(patch, base=base)
    assert split.agreed() == (90, 10)
    assert split.edit(40).text == patch.replace("value: 90", "value: 60").replace("weight: 10", "weight: 40")


def test_a_patch_with_no_operation_on_the_split_is_refused_naming_file_and_path() -> None:
    patch = "- op: replace\n  path: /spec/http/1/timeout\n  value: 5s\n"
    with pytest.raises(WeightedRouteNotFound, match=r"overlays/prod/weights.yaml has no operation on the split's "
                       r"weights.*/spec/http/1/route/0/weight.*/spec/http/1/route/1/weight"):  # fmt: skip
        locate(patch)


def test_a_patch_pointing_at_a_route_without_both_subsets_is_refused() -> None:
    patch = "- op: add\n  path: /spec/http/0/route/0/weight\n  value: 100\n"  # the testers route: only v2
    with pytest.raises(WeightedRouteNotFound, match=r"point at /spec/http/0/route/0/weight, not at the split"):
        locate(patch)
    explicit = SplitSource(PATCH_PATH, "reviews", stable_weight_path="/spec/http/0/route/0/weight",
                           canary_weight_path="/spec/http/1/route/1/weight")  # fmt: skip
    with pytest.raises(WeightedRouteNotFound, match="subset 'v2' in the patched base, not of 'v1'"):
        locate(patch + JSON_6902_PATCH, explicit)


def test_the_route_rules_apply_to_the_base() -> None:
    unnamed_default = BASE_ISTIO.replace(
        "  - name: primary\n    route:", "  - name: primary\n    match: [{uri: {prefix: /}}]\n    route:")
    # the testers route gets a v1 destination too, so two matched routes hold both and disagree
    disagreeing = unnamed_default.replace(
        "        subset: v2\n  # The weighted",
        "        subset: v2\n      weight: 100\n    - destination: {host: reviews, subset: v1}\n  # The weighted")
    with pytest.raises(SplitRouteUnclear, match="pass --route NAME"):
        locate(base=disagreeing)
    assert locate(source=SplitSource(PATCH_PATH, "reviews", routes=("primary",)), base=disagreeing).agreed() == (80, 20)
    with pytest.raises(InvalidWeights, match="add up to 10, not 100"):
        locate(JSON_6902_PATCH.replace("value: 80 ", "value: 9 ").replace("value: 20}", "value: 1}")).agreed()


def test_a_huge_base_is_refused() -> None:
    with pytest.raises(ManifestTooLarge):
        locate(base=BASE_ISTIO + "#" * (1024 * 1024) + "\n")


def test_without_its_base_a_patch_needs_explicit_paths_and_says_what_is_unverified() -> None:
    files = {PATCH_PATH: JSON_6902_PATCH}
    with pytest.raises(WeightedRouteNotFound, match=r"no kustomization beside overlays/prod/weights.yaml.*"
                       r"--stable-weight-path"):  # fmt: skip
        locate_split(JSON_6902_PATCH, reader(files), SOURCE)
    explicit = SplitSource(PATCH_PATH, "reviews", stable_weight_path="/spec/http/1/route/0/weight",
                           canary_weight_path="/spec/http/1/route/1/weight")  # fmt: skip
    split = locate_split(JSON_6902_PATCH, reader(files), explicit)
    assert split.agreed() == (80, 20) and split.unverified and "which subsets" in split.unverified[0]
    assert split.edit(50).text.count("value: 50") == 2
    with pytest.raises(WeightedRouteNotFound, match="no replace/add operation on /spec/http/1/route/2/weight"):
        locate_split(JSON_6902_PATCH, reader(files), SplitSource(
            PATCH_PATH, "reviews", stable_weight_path="/spec/http/1/route/0/weight",
            canary_weight_path="/spec/http/1/route/2/weight"))  # fmt: skip


def test_a_patch_targeting_another_object_is_refused() -> None:
    files = kustomize_files()
    files["overlays/prod/kustomization.yaml"] = files["overlays/prod/kustomization.yaml"].replace(
        "name: reviews", "name: ratings")
    with pytest.raises(ManifestError, match="to VirtualService ratings, not to VirtualService 'reviews'"):
        locate_split(JSON_6902_PATCH, reader(files), SOURCE)


def test_strategic_merge_patch_works_as_a_manifest_and_warns_naming_the_base() -> None:
    no_rule = BASE_ISTIO.split("---\n")[1]
    files = kustomize_files(STRATEGIC_MERGE_PATCH, how="patchesStrategicMerge", base=no_rule)
    split = locate_split(STRATEGIC_MERGE_PATCH, reader(files), SOURCE)
    assert split.layout == STRATEGIC_MERGE and split.agreed() == (80, 20) and split.overlay == "overlays/prod"
    assert "its base (base/istio.yaml) has no DestinationRule" in split.warnings[0]
    assert split.edit(30).text == STRATEGIC_MERGE_PATCH.replace("weight: 80", "weight: 70").replace(
        "weight: 20", "weight: 30")  # fmt: skip
    with_rule = kustomize_files(STRATEGIC_MERGE_PATCH, how="patchesStrategicMerge")
    assert locate_split(STRATEGIC_MERGE_PATCH, reader(with_rule), SOURCE).warnings == ()
    undeclared = kustomize_files(STRATEGIC_MERGE_PATCH, how="patchesStrategicMerge",
                                 base=BASE_ISTIO.replace("- name: v2", "- name: v3"))  # fmt: skip
    with pytest.raises(UndeclaredSubset, match="subset 'v2' is not declared"):
        locate_split(STRATEGIC_MERGE_PATCH, reader(undeclared), SOURCE)


HELM = SplitSource("charts/reviews/values.yaml", "reviews", values_key="reviews.canary.weight")


def test_helm_values_key_changes_only_that_scalar() -> None:
    split = locate_split(HELM_VALUES, reader({}), HELM)
    assert split.layout == HELM_LAYOUT and split.agreed() == (80, 20) and split.unverified
    assert "no --stable-values-key" in split.warnings[0]
    assert split.edit(35).text == HELM_VALUES.replace("weight: 20 ", "weight: 35 ")
    both = SplitSource(HELM.path, "reviews", values_key="reviews.canary.weight",
                       stable_values_key="reviews.stable.weight")  # fmt: skip
    edit = locate_split(HELM_VALUES, reader({}), both).edit(0)
    assert edit.text == HELM_VALUES.replace("weight: 20 ", "weight: 0 ").replace("weight: 80 ", "weight: 100 ")
    assert re.sub(r"weight: \d+", "", edit.text) == re.sub(r"weight: \d+", "", HELM_VALUES)


@pytest.mark.parametrize(("values", "key", "message"), [
    (HELM_VALUES, "reviews.canary.share", r"values key 'reviews.canary.share' does not exist in "
     r"charts/reviews/values.yaml: reviews.canary has no 'share'"),
    (HELM_VALUES, "reviews.image.tag", r"'reviews.image.tag' in charts/reviews/values.yaml is '1.4.0', not a number"),
    (HELM_VALUES.replace("weight: 20 ", "weight: &w 20 "), "reviews.canary.weight", "written as '&w 20"),
    (HELM_VALUES, "reviews..weight", "not a dotted path"),
])  # fmt: skip
def test_helm_values_bad_input_names_file_and_key(values: str, key: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        locate_split(values, reader({}), SplitSource(HELM.path, "reviews", values_key=key)).edit(10)


def test_a_plain_manifest_beside_an_empty_kustomization_is_read_as_before() -> None:
    files = {"k8s/istio.yml": BASE_ISTIO, "k8s/kustomization.yaml": ""}
    split = locate_split(BASE_ISTIO, reader(files), SplitSource("k8s/istio.yml", "reviews"))
    assert split.layout == "manifest" and split.agreed() == (90, 10) and split.overlay is None


def test_a_json_6902_split_is_checked_against_the_base_destination_rule() -> None:
    with pytest.raises(UndeclaredSubset, match="subset 'v2' is not declared by DestinationRule 'reviews'"):
        locate(base=BASE_ISTIO.replace("- name: v2", "- name: v3"))
    no_rule = BASE_ISTIO.split("---\n")[1]
    assert "in the base (base/istio.yaml)" in locate(base=no_rule).warnings[0]
