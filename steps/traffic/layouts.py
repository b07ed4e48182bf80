"""Where a team keeps the weights, and one way to read and set them whatever the layout.

Layouts: a plain manifest holding the VirtualService; a Kustomize strategic-merge patch (a partial
VirtualService: read and edited like a manifest, checked against its base's DestinationRule); a
Kustomize JSON 6902 patch (its `value`s, resolved against the base VirtualService found through the
kustomization, or at explicit JSON pointers); a Helm values file (`--values-key`). Every edit is a
pure function of the texts read on one head, so a push race re-runs it on the new head.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field

from rollguard.steps.traffic.helm_values import agreed_values_weights, find_values_split, set_values_split
from rollguard.steps.traffic.istio_objects import check_subsets_declared, destinations, routes_by_kind
from rollguard.steps.traffic.json_patch_ops import is_json_patch
from rollguard.steps.traffic.json_patch_split import (
    PatchSplit,
    agreed_patch_weights,
    set_patch_weights,
    split_from_pointers,
    split_with_base,
)
from rollguard.steps.traffic.kustomization import PatchReference, ReadFile, check_target, find_patch_reference
from rollguard.steps.traffic.manifest_errors import InvalidWeights, ManifestError, WeightedRouteNotFound
from rollguard.steps.traffic.manifest_yaml import load_documents
from rollguard.steps.traffic.virtualservice import TrafficSplit, agreed_weights, find_split
from rollguard.steps.traffic.weight_edit import SplitEdit, set_split

MANIFEST, STRATEGIC_MERGE, JSON_6902, HELM_VALUES = "manifest", "kustomize-strategic-merge", "kustomize-json6902", \
    "helm-values"  # fmt: skip
LAYOUT_LABELS = {MANIFEST: "VirtualService manifest", STRATEGIC_MERGE: "Kustomize strategic-merge patch",
                 JSON_6902: "Kustomize JSON 6902 patch", HELM_VALUES: "Helm values file"}  # fmt: skip


@dataclass(frozen=True)
class SplitSource:
    """Where the split lives, from the flags."""

    path: str
    virtual_service: str
    stable_subset: str = "v1"
    canary_subset: str = "v2"
    routes: tuple[str, ...] = ()
    values_key: str | None = None
    stable_values_key: str | None = None
    stable_weight_path: str | None = None
    canary_weight_path: str | None = None

    @property
    def subsets(self) -> tuple[str, str]:
        """(stable subset, canary subset)."""
        return self.stable_subset, self.canary_subset


@dataclass(frozen=True)
class LocatedSplit:
    """The split found in one layout: current weights (of the first route), what was and was not verified,
    and the edit."""

    layout: str
    stable_weight: int
    canary_weight: int
    routes: int
    warnings: tuple[str, ...]
    namespace: str | None
    agreed: Callable[[], tuple[int, int]]  # (stable, canary) after the adds-up-to-100 and agree checks
    edit: Callable[[int], SplitEdit]  # the file's text at a new canary weight
    verified: tuple[str, ...] = ()
    unverified: tuple[str, ...] = ()
    overlay: str | None = None  # the kustomization directory that renders it, for the render check
    base: str | None = field(default=None)


def locate_split(text: str, read: ReadFile, source: SplitSource) -> LocatedSplit:
    """The split in the file at `source.path` (text given; `read` reads the other files of the same head)."""
    if source.stable_subset == source.canary_subset:
        raise WeightedRouteNotFound(f"stable and canary subset are both {source.stable_subset!r}; they must differ")
    if source.values_key:
        return _helm(text, source)
    if is_json_patch(load_documents(text)):
        return _json_patch(text, read, source)
    if source.stable_weight_path or source.canary_weight_path or source.stable_values_key:
        flags = "--stable-weight-path/--canary-weight-path" if source.stable_values_key is None else \
            "--stable-values-key"  # fmt: skip
        raise ManifestError(f"{flags} given, but {source.path} is a VirtualService manifest, not that layout")
    return _manifest(text, read, source)


def _manifest(text: str, read: ReadFile, source: SplitSource) -> LocatedSplit:
    split = find_split(text, source.virtual_service, source.stable_subset, source.canary_subset, source.routes)
    reference = find_patch_reference(source.path, read)
    warnings = split.warnings
    layout, overlay, base = MANIFEST, None, None
    if reference is not None:
        check_target(reference, source.virtual_service, source.path)
        layout, overlay, base = STRATEGIC_MERGE, posixpath.dirname(reference.kustomization), reference.where_base
        if warnings:  # no DestinationRule in the patch: check the base's, or name it
            warnings = _base_subsets_warning(text, split, reference, source)
    return LocatedSplit(
        layout, split.stable_weight, split.canary_weight, len(split.routes), warnings,
        reference.namespace if reference is not None and reference.namespace else split.namespace,
        agreed=lambda: agreed_weights(split, source.virtual_service),
        edit=lambda canary: set_split(text, source.virtual_service, source.stable_subset, source.canary_subset,
                                      canary, source.routes, split),
        verified=("which routes are the split", "that the weights add up"), overlay=overlay, base=base,
    )  # fmt: skip


def _base_subsets_warning(
    text: str, split: TrafficSplit, reference: PatchReference, source: SplitSource
) -> tuple[str, ...]:
    """Check the subsets against the base's DestinationRules; a warning naming the base when it has none."""
    document = load_documents(text)[split.document_index]
    by_kind = routes_by_kind(document)
    pairs = [(destinations(by_kind[r.kind][r.index])[r.stable_position],
              destinations(by_kind[r.kind][r.index])[r.canary_position]) for r in split.routes]  # fmt: skip
    warnings = check_subsets_declared(list(reference.base_documents), source.virtual_service, pairs, source.subsets)
    if not warnings:
        return ()
    return (
        f"{source.path} is a Kustomize patch ({reference.kustomization}) and its base ({reference.where_base}) "
        f"has no DestinationRule, so subsets {source.stable_subset!r} and {source.canary_subset!r} of "
        f"VirtualService {source.virtual_service!r} could not be checked; make sure a DestinationRule declares them",
    )


def _json_patch(text: str, read: ReadFile, source: SplitSource) -> LocatedSplit:
    reference = find_patch_reference(source.path, read)
    if reference is not None:
        check_target(reference, source.virtual_service, source.path)
    base = reference.base_virtual_service(source.virtual_service) if reference is not None else None
    pointers = (source.stable_weight_path, source.canary_weight_path)
    if any(pointers) and not all(pointers):
        raise ManifestError("give both --stable-weight-path and --canary-weight-path, or neither")
    base_name = reference.where_base if reference is not None else "(no base found)"
    try:
        if source.stable_weight_path and source.canary_weight_path:
            split = split_from_pointers(text, source.stable_weight_path, source.canary_weight_path, source.path,
                                        base, source.subsets)  # fmt: skip
        elif base is not None:
            split = split_with_base(text, base, source.subsets, source.routes, source.path, base_name)
        else:
            raise WeightedRouteNotFound(_no_base(reference, source))
    except ManifestError as exc:
        raise type(exc)(f"VirtualService {source.virtual_service!r}: {exc}") from None
    warnings: tuple[str, ...] = ()
    if reference is not None and base is not None:
        warnings = tuple(check_subsets_declared(list(reference.base_documents), source.virtual_service,
                                                list(split.destinations), source.subsets))  # fmt: skip
        warnings = tuple(w.replace("in this file", f"in the base ({base_name})") for w in warnings)
    first = split.routes[0]
    return LocatedSplit(
        JSON_6902, first.stable.value, first.canary.value, len(split.routes), warnings,
        (reference.namespace if reference is not None else None) or split.namespace,
        agreed=lambda: agreed_patch_weights(split, source.path),
        edit=lambda canary: _patch_edit(text, split, canary),
        verified=split.verified, unverified=split.unverified,
        overlay=posixpath.dirname(reference.kustomization) if reference is not None else None,
        base=base_name if base is not None else None,
    )  # fmt: skip


def _no_base(reference: PatchReference | None, source: SplitSource) -> str:
    if reference is None:
        where = f"no kustomization beside {source.path} applies it as a patch"
    else:
        unread = f" (not read: {', '.join(reference.unread)})" if reference.unread else ""
        where = f"the resources of {reference.kustomization} hold no VirtualService {source.virtual_service!r}{unread}"
    return (
        f"{source.path} is a JSON 6902 patch, and its base VirtualService was not found: {where}. Without the base "
        "rollguard cannot tell which weights are the stable and canary subsets'; pass --stable-weight-path and "
        "--canary-weight-path (JSON pointers such as /spec/http/0/route/1/weight)"
    )


def _patch_edit(text: str, split: PatchSplit, canary_weight: int) -> SplitEdit:
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int) or not 0 <= canary_weight <= 100:
        raise InvalidWeights(f"canary weight {canary_weight!r} is outside 0..100; a weight is a whole percentage")
    new_text, changed_routes = set_patch_weights(text, split, canary_weight)
    first = split.routes[0]
    return SplitEdit(new_text, new_text != text, first.stable.value, first.canary.value, 100 - canary_weight,
                     canary_weight, changed_routes, (), split.namespace)  # fmt: skip


def _helm(text: str, source: SplitSource) -> LocatedSplit:
    values_key = str(source.values_key)
    split = find_values_split(text, values_key, source.stable_values_key, source.path)
    stable, canary = split.weights
    warnings: tuple[str, ...] = ()
    if source.stable_values_key is None:
        warnings = (f"no --stable-values-key: the chart is expected to give stable {source.stable_subset} 100 - "
                    f"{values_key} itself",)  # fmt: skip

    def edit(canary_weight: int) -> SplitEdit:
        new_text = set_values_split(text, split, canary_weight)
        return SplitEdit(new_text, new_text != text, stable, canary, 100 - canary_weight, canary_weight,
                         int((stable, canary) != (100 - canary_weight, canary_weight)), warnings)  # fmt: skip

    return LocatedSplit(
        HELM_VALUES, stable, canary, 1, warnings, None,
        agreed=lambda: agreed_values_weights(split, source.path), edit=edit,
        verified=(f"{values_key} is a number 0-100",) + (
            (f"{source.stable_values_key} and {values_key} add up to 100",) if source.stable_values_key else ()),
        unverified=(f"that the chart's templates make {values_key} the weight of canary subset "
                    f"{source.canary_subset!r} of VirtualService {source.virtual_service!r} (the chart is not "
                    "rendered)",),
    )  # fmt: skip
