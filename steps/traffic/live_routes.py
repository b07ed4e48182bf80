"""The same weight change on a live VirtualService's `spec.http`, as plain JSON from the Kubernetes API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rollguard.steps.traffic.virtualservice import weighted_route_positions


def apply_split_to_routes(
    http_routes: list[dict[str, Any]], stable_subset: str, canary_subset: str, canary_weight: int
) -> tuple[list[dict[str, Any]], int]:
    """Copy of a live VirtualService's `spec.http` with the weighted routes set to the new split.

    Returns (new routes, number of routes changed). Used for the live patch, where the object comes
    from the Kubernetes API as plain JSON; other routes and fields are copied untouched.
    """
    new_routes: list[dict[str, Any]] = []
    changed = 0
    for route in http_routes:
        positions = weighted_route_positions(route, stable_subset, canary_subset)
        if positions is None:
            new_routes.append(route)
            continue
        entries = [dict(entry) if isinstance(entry, Mapping) else entry for entry in route["route"]]
        wanted = {positions[0]: 100 - canary_weight, positions[1]: canary_weight}
        if any(entries[position].get("weight") != weight for position, weight in wanted.items()):
            changed += 1
        for position, weight in wanted.items():
            entries[position]["weight"] = weight
        new_route = dict(route)
        new_route["route"] = entries
        new_routes.append(new_route)
    return new_routes, changed
