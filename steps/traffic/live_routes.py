"""The same weight change on a live VirtualService's routes (`spec.http`, `spec.tcp`, `spec.tls`), as plain JSON
from the Kubernetes API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollguard.steps.traffic.istio_objects import ROUTE_KINDS
from rollguard.steps.traffic.route_selection import select_split


def apply_split_to_spec(
    spec: Mapping[str, Any],
    stable_subset: str,
    canary_subset: str,
    canary_weight: int,
    routes: tuple[str, ...] = (),
) -> tuple[dict[str, list[Any]], int]:
    """Copies of a live VirtualService's route lists with the routes of the split set to the new weights.

    The split is found by the same rule as in the file (route_selection; `routes`: the --route names).
    Returns ({kind: new route list} for every kind whose routes changed, number of routes changed); other
    routes and fields are copied untouched. Raises ManifestError when the live object has no split or it
    is unclear.
    """
    lists = {kind: list(spec.get(kind) or []) for kind in ROUTE_KINDS}
    changed_kinds: dict[str, list[Any]] = {}
    changed = 0
    for chosen in select_split(lists, stable_subset, canary_subset, routes):
        route = lists[chosen.kind][chosen.index]
        entries = [dict(entry) if isinstance(entry, Mapping) else entry for entry in route["route"]]
        wanted = {chosen.stable_position: 100 - canary_weight, chosen.canary_position: canary_weight}
        different = {
            position: weight for position, weight in wanted.items() if entries[position].get("weight", 0) != weight
        }
        if not different:
            continue  # a destination without `weight` already weighs 0
        changed += 1
        for position, weight in different.items():
            entries[position]["weight"] = weight
        new_route = dict(route)
        new_route["route"] = entries
        new_list = changed_kinds.setdefault(chosen.kind, lists[chosen.kind])
        new_list[chosen.index] = new_route
    return changed_kinds, changed


def apply_split_to_routes(
    http_routes: list[dict[str, Any]],
    stable_subset: str,
    canary_subset: str,
    canary_weight: int,
    routes: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], int]:
    """`apply_split_to_spec` on a `spec.http` list alone: (the new list, number of routes changed)."""
    changed_kinds, changed = apply_split_to_spec({"http": http_routes}, stable_subset, canary_subset, canary_weight,
                                                 routes)
    return changed_kinds.get("http", list(http_routes)), changed
