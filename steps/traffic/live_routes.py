"""The same weight change on a live VirtualService's `spec.http`, as plain JSON from the Kubernetes API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollguard.steps.traffic.route_selection import select_split_routes


def apply_split_to_routes(
    http_routes: list[dict[str, Any]],
    stable_subset: str,
    canary_subset: str,
    canary_weight: int,
    routes: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], int]:
    """Copy of a live VirtualService's `spec.http` with the routes of the split set to the new weights.

    The split is found by the same rule as in the file (route_selection; `routes`: the --route names).
    Returns (new routes, number of routes changed); other routes and fields are copied untouched.
    Raises ManifestError when the live object has no split or it is unclear.
    """
    new_routes = list(http_routes)
    changed = 0
    for chosen in select_split_routes(http_routes, stable_subset, canary_subset, routes):
        route = http_routes[chosen.http_index]
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
        new_routes[chosen.http_index] = new_route
    return new_routes, changed
