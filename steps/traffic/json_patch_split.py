"""The stable/canary split held by a Kustomize JSON 6902 patch, and the byte-preserving edit of its weight values.

The patch is applied to the base VirtualService (plain data), the split is found in the result by
route_selection's rule (default route, --route, weights agree, HTTP/TCP/TLS, missing weight is 0),
and each of the split's weights must come from an operation of the patch: those `value`s are the
only characters that change. Without the base, explicit JSON pointers (--stable-weight-path,
--canary-weight-path) name the weights, and what only the base could tell is said to be unverified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rollguard.steps.traffic.istio_objects import destination_subset, destinations, namespace_of, routes_by_kind
from rollguard.steps.traffic.json_patch_ops import (
    PatchOperation,
    WeightSource,
    apply_operations,
    decode_pointer,
    encode_pointer,
    parse_operations,
    value_position,
)
from rollguard.steps.traffic.manifest_errors import (
    InvalidWeights,
    ManifestError,
    ManifestSyntaxError,
    WeightedRouteNotFound,
)
from rollguard.steps.traffic.manifest_yaml import line_starts, load_documents, plain_documents
from rollguard.steps.traffic.route_selection import destination_weight, kind_label, select_split

_PLAIN_INTEGER = re.compile(r"[0-9]+(?![0-9A-Za-z_.:])")
_WEIGHT_POINTER = re.compile(r"^/spec/(http|tcp|tls)/(\d+)/route/(\d+)/weight$")


@dataclass(frozen=True)
class PatchWeight:
    """One weight of the split as the patch writes it."""

    pointer: str  # where it lands in the VirtualService: /spec/http/0/route/1/weight
    source: WeightSource
    value: int

    @property
    def line(self) -> int:
        """0-based line of the value in the patch file."""
        return value_position(self.source)[0]


@dataclass(frozen=True)
class PatchRoute:
    """One route of the split: its label for messages, its two weights, and the rest of its destinations."""

    where: str  # `HTTP route #1`
    stable: PatchWeight
    canary: PatchWeight
    other_weight: int


@dataclass(frozen=True)
class PatchSplit:
    """The split a patch sets, what was checked against the base, and what could not be."""

    routes: tuple[PatchRoute, ...]
    verified: tuple[str, ...]
    unverified: tuple[str, ...]
    namespace: str | None = None
    destinations: tuple[tuple[Any, Any], ...] = ()  # per route, the patched (stable, canary) destination entries


def _weight_of(operations: list[PatchOperation], pointer: str) -> PatchWeight | None:
    """The last add/replace of exactly `pointer` in the patch (explicit mode)."""
    found = [op for op in operations if op.op in ("add", "replace") and op.path == pointer]
    if not found:
        return None
    operation = found[-1]
    value = destination_weight({"weight": operation.value}, None, -1)
    return PatchWeight(pointer, WeightSource(operation, ()), value)


def split_with_base(
    patch_text: str, base: Any, subsets: tuple[str, str], routes: tuple[str, ...], patch_name: str, base_name: str
) -> PatchSplit:
    """The split of the base VirtualService with the patch applied; ManifestError naming what the patch lacks."""
    operations = parse_operations(patch_text)
    patched, sources = apply_operations(base, operations)
    by_kind = routes_by_kind(patched)
    chosen = select_split(by_kind, subsets[0], subsets[1], routes)
    found: list[PatchRoute] = []
    pairs: list[tuple[Any, Any]] = []
    missing: list[str] = []
    for route_choice in chosen:
        route = by_kind[route_choice.kind][route_choice.index]
        entries = destinations(route)
        where = f"{kind_label(route_choice.kind)} route #{route_choice.index + 1}"
        weights: list[PatchWeight] = []
        for subset, position in zip(subsets, (route_choice.stable_position, route_choice.canary_position),
                                    strict=True):  # fmt: skip
            pointer = encode_pointer(("spec", route_choice.kind, route_choice.index, "route", position, "weight"))
            source = sources.get(id(entries[position]))
            if source is None:
                missing.append(f"subset {subset!r} of the {where} ({pointer})")
                continue
            weights.append(PatchWeight(pointer, source, destination_weight(entries[position], subset, -1)))
        others = sum(destination_weight(entry, destination_subset(entry), -1) for position, entry in enumerate(entries)
                     if position not in (route_choice.stable_position, route_choice.canary_position))  # fmt: skip
        if len(weights) == 2:
            found.append(PatchRoute(where, weights[0], weights[1], others))
            pairs.append((entries[route_choice.stable_position], entries[route_choice.canary_position]))
    if missing:
        elsewhere = [op.path for op in operations if op.op in ("add", "replace") and op.path.endswith("/weight")
                     and op.path not in {w.pointer for r in found for w in (r.stable, r.canary)}]  # fmt: skip
        pointed = f" (its weight operations point at {', '.join(elsewhere)}, not at the split)" if elsewhere else ""
        none = "no operation on the split's weights" if not found and len(missing) == 2 * len(chosen) else \
            "no operation on some of the split's weights"  # fmt: skip
        raise WeightedRouteNotFound(
            f"the JSON 6902 patch {patch_name} has {none}: nothing in it sets the weight of {'; '.join(missing)} of "
            f"the base in {base_name}{pointed}, so kustomize would keep the base's value whatever rollguard writes "
            "here. Add an "
            "operation such as `- {op: replace, path: " + missing[0].split("(")[-1].rstrip(")") + ", value: 0}`"
        )
    return PatchSplit(
        tuple(found),
        verified=(f"the patch applies to the base VirtualService in {base_name}", "which routes are the split",
                  "that its weights are the stable and canary subsets' weights"),
        unverified=(),
        namespace=namespace_of(patched),
        destinations=tuple(pairs),
    )  # fmt: skip


def split_from_pointers(
    patch_text: str, stable_pointer: str, canary_pointer: str, patch_name: str, base: Any | None = None,
    subsets: tuple[str, str] = ("", ""),
) -> PatchSplit:  # fmt: skip
    """The split at explicit JSON pointers; with the base too, checks they point at the two subsets."""
    operations = parse_operations(patch_text)
    for label, pointer in (("--stable-weight-path", stable_pointer), ("--canary-weight-path", canary_pointer)):
        if not _WEIGHT_POINTER.match(pointer):
            raise ManifestError(f"{label} {pointer!r} is not a weight: write /spec/http/I/route/J/weight")
    stable, canary = _weight_of(operations, stable_pointer), _weight_of(operations, canary_pointer)
    absent = [pointer for pointer, weight in ((stable_pointer, stable), (canary_pointer, canary)) if weight is None]
    if absent or stable is None or canary is None:
        raise WeightedRouteNotFound(
            f"the JSON 6902 patch {patch_name} has no replace/add operation on {' and '.join(absent)}; "
            f"its operations: {', '.join(op.label for op in operations)}"
        )
    verified = ["the patch sets both weights"]
    unverified = ["which subsets these destinations are, and whether they are the route Istio uses for the split "
                  "(the base VirtualService was not found through a kustomization beside the patch)"]
    if base is not None:
        patched, _sources = apply_operations(base, operations)
        for subset, pointer in zip(subsets, (stable_pointer, canary_pointer), strict=True):
            tokens = decode_pointer(pointer)
            entries = routes_by_kind(patched).get(tokens[1]) or []
            route = entries[int(tokens[2])] if int(tokens[2]) < len(entries) else None
            listed = destinations(route)
            entry = listed[int(tokens[4])] if int(tokens[4]) < len(listed) else None
            if destination_subset(entry) != subset:
                raise WeightedRouteNotFound(
                    f"{pointer} is the weight of subset {destination_subset(entry)!r} in the patched base, "
                    f"not of {subset!r}; check the weight paths"
                )
        verified.append("that the paths are the stable and canary subsets' weights in the base")
        unverified = []
    route = PatchRoute(f"route at {stable_pointer.rsplit('/route/', 1)[0]}", stable, canary, 0)
    return PatchSplit((route,), tuple(verified), tuple(unverified))


def agreed_patch_weights(split: PatchSplit, patch_name: str) -> tuple[int, int]:
    """(stable, canary), after checking each route adds up to 100 and all routes agree."""
    for route in split.routes:
        total = route.stable.value + route.canary.value + route.other_weight
        if total != 100:
            raise InvalidWeights(
                f"the weights the patch {patch_name} gives the {route.where} add up to {total}, not 100: rollguard "
                "reads weights as percent; write them so they add up to 100 (`rollguard rollback` rewrites any "
                "split to 100/0)"
            )
    pairs = {(route.stable.value, route.canary.value) for route in split.routes}
    if len(pairs) > 1:
        listing = ", ".join(f"{r.where}: {r.stable.value}/{r.canary.value}" for r in split.routes)
        raise InvalidWeights(f"the weighted routes the patch {patch_name} sets disagree on the split ({listing})")
    return split.routes[0].stable.value, split.routes[0].canary.value


def set_patch_weights(patch_text: str, split: PatchSplit, canary_weight: int) -> tuple[str, int]:
    """The patch text with the split's weight values set (canary `canary_weight`, stable the rest); and how many
    routes changed. Only the digits of those values change; the result is parsed again to prove it."""
    stable_weight = 100 - canary_weight
    for route in split.routes:
        if route.other_weight:
            raise InvalidWeights(
                f"the {route.where} also sends {route.other_weight} % to other destinations, so "
                f"{stable_weight}/{canary_weight} would not add up to 100; give those destinations weight 0"
            )
    starts = line_starts(patch_text)
    replacements: dict[int, tuple[int, str, PatchWeight]] = {}
    for route in split.routes:
        for weight, value in ((route.stable, stable_weight), (route.canary, canary_weight)):
            line, column = value_position(weight.source)
            offset = starts[line] + column
            match = _PLAIN_INTEGER.match(patch_text, offset)
            if match is None or int(match.group(0)) != weight.value:
                written = patch_text[offset : offset + 12].split("\n")[0]
                raise InvalidWeights(
                    f"the weight value at line {line + 1} of the patch is written as {written!r}; rollguard only "
                    "edits a value written as a plain number (no anchor, alias, quotes or sign)"
                )
            if weight.value != value:
                replacements[match.start()] = (match.end(), str(value), weight)
    new_text = patch_text
    for start in sorted(replacements, reverse=True):
        end, digits, _weight = replacements[start]
        new_text = new_text[:start] + digits + new_text[end:]
    if replacements:
        _verify(patch_text, new_text, [(site.source, int(digits)) for _end, digits, site in replacements.values()])
    changed = sum(1 for r in split.routes if (r.stable.value, r.canary.value) != (stable_weight, canary_weight))
    return new_text, changed


def _verify(old_text: str, new_text: str, changes: list[tuple[WeightSource, int]]) -> None:
    expected = plain_documents(load_documents(old_text))
    for source, value in changes:
        node: Any = expected[0][source.operation.index]
        key: Any = "value"
        for inner in source.inside_value:
            node, key = node[key], inner
        node[key] = value
    try:
        actual = plain_documents(load_documents(new_text))
    except ManifestSyntaxError as exc:
        raise ManifestError(f"refusing the edit: the changed patch would not parse ({exc})") from None
    if actual != expected:
        raise ManifestError(
            "refusing the edit: changing the weight values would change more than the weights "
            "(are they shared through YAML anchors?); edit this patch by hand"
        )
