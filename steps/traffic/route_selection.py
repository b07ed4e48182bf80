"""Which routes of a VirtualService are the stable/canary split: one rule for the file and the live object.

1. `--route NAME` (Istio's HTTP route `name`, repeatable) always decides: exactly the named routes.
2. Otherwise, if the default route (the first without `match`, the one Istio sends unmatched requests
   to) holds both subsets, it alone is the split.
3. Otherwise the routes holding both subsets are the split when their weights agree (several uri or
   gateway routes split alike); when they disagree the command refuses and asks for `--route NAME`.

The rule applies to each kind of route a VirtualService has — `http`, `tcp` and `tls` — and the split
is every kind's share of it: a TCP service (Istio's `samples/tcp-echo`: one `tcp:` route matching a
port, split 80/20) is split like an HTTP one, and a service with an HTTP and a TCP port moves both.
TCP and TLS routes have no `name` in Istio's API, so `--route` names HTTP routes only (and then only
those move); TCP or TLS routes whose weights disagree are refused, to be made to agree by hand.

A matched route outside the split (testers pinned to the canary by a header, a session-affinity
cookie route) is never touched. A destination without `weight` weighs 0, as Istio reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollguard.steps.traffic.istio_objects import ROUTE_KINDS, destination_host, destination_subset, destinations
from rollguard.steps.traffic.manifest_errors import InvalidWeights, SplitRouteUnclear, WeightedRouteNotFound
from rollguard.steps.traffic.manifest_yaml import human_line, line_of


@dataclass(frozen=True)
class SplitRoute:
    """One route of the split: its kind, its index in `spec.<kind>` and where its two destinations are."""

    kind: str  # http, tcp or tls
    index: int  # in spec.http, spec.tcp or spec.tls
    stable_position: int  # index of the stable destination in the route's `route` list
    canary_position: int


def weighted_route_positions(route: Any, stable_subset: str, canary_subset: str) -> tuple[int, int] | None:
    """Indexes of the stable and canary destinations if `route` holds both subsets, else None.

    Works on plain dicts (a live object from the API) and on parsed YAML alike. A route that names a
    subset twice is ambiguous and refused, since rollguard would not know which weight to move.
    """
    subsets = [destination_subset(entry) for entry in destinations(route)]
    if stable_subset not in subsets or canary_subset not in subsets:
        return None
    for subset in (stable_subset, canary_subset):
        if subsets.count(subset) > 1:
            raise WeightedRouteNotFound(
                f"the route at {human_line(line_of(route))} has {subsets.count(subset)} destinations with "
                f"subset {subset!r}; rollguard moves weight between exactly one stable and one canary destination"
            )
    return subsets.index(stable_subset), subsets.index(canary_subset)


def destination_weight(entry: Any, subset: str | None, route_line: int) -> int:
    """The weight of one destination, 0 when it has none (as Istio reads it); InvalidWeights if not 0..100."""
    line = line_of(entry)
    where = human_line(line if line >= 0 else route_line)
    if not isinstance(entry, Mapping):
        raise InvalidWeights(f"the destination at {where} is not a mapping; write `destination:` and `weight:`")
    if "weight" not in entry:
        return 0  # as Istio reads it (and as kubectl writes a weight of 0: not at all)
    weight = entry["weight"]
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidWeights(
            f"the weight of subset {subset!r} at {where} is {weight!r}, not a whole number; "
            "write it as a plain number such as `weight: 10` (no quotes, no decimals)"
        )
    if not 0 <= weight <= 100:
        raise InvalidWeights(f"the weight of subset {subset!r} at {where} is {weight}; a weight must be 0 to 100")
    return int(weight)


def route_name(route: Any) -> str | None:
    """The HTTP route's `name`, when it has one."""
    name = route.get("name") if isinstance(route, Mapping) else None
    return name if isinstance(name, str) else None


def is_default_route(route: Any) -> bool:
    """True for a route without `match` conditions: it takes every request no earlier route matched."""
    return isinstance(route, Mapping) and not route.get("match")


def kind_label(kind: str) -> str:
    """`HTTP`, `TCP`, `TLS`: a route kind in messages."""
    return kind.upper()


def describe_route(index: int, route: Any, kind: str = "http") -> str:
    """`#2 'primary' at line 12 -> v1 90, v2 10` for messages: name, place, and where it sends traffic
    (`TCP #1 at line 20 -> ...` for a TCP or TLS route)."""
    name = route_name(route)
    prefix = "" if kind == "http" else f"{kind_label(kind)} "
    label = f"{prefix}#{index + 1}" + (f" {name!r}" if name else "") + f" at {human_line(line_of(route))}"
    entries = destinations(route)
    if not entries:
        return f"{label} -> nothing"
    if all(destination_subset(entry) is None for entry in entries):
        hosts = ", ".join(str(destination_host(entry)) for entry in entries)
        return f"{label} -> hosts {hosts}, no subset (a split between hosts, which rollguard does not move)"
    parts = []
    for entry in entries:
        weight = entry.get("weight") if isinstance(entry, Mapping) else None
        subset = destination_subset(entry)
        target = subset if subset is not None else f"host {destination_host(entry)} (no subset)"
        parts.append(target + (f" {weight}" if weight is not None else ""))
    return f"{label} -> {', '.join(parts)}"


def _weights(route: Any, positions: tuple[int, int], subsets: tuple[str, str]) -> tuple[int, int]:
    entries = destinations(route)
    return (
        destination_weight(entries[positions[0]], subsets[0], line_of(route)),
        destination_weight(entries[positions[1]], subsets[1], line_of(route)),
    )


def select_split(
    routes_by_kind: Mapping[str, list[Any]], stable_subset: str, canary_subset: str, route_names: tuple[str, ...] = ()
) -> list[SplitRoute]:
    """The routes that are the split, by the rule in this module's docstring, over every kind of route.

    `routes_by_kind` maps `http`, `tcp`, `tls` to the VirtualService's routes of that kind. Raises
    WeightedRouteNotFound (listing the routes) when no route holds both subsets, SplitRouteUnclear when a
    named route is missing or does not hold both, or the routes of a kind holding both disagree.
    """
    subsets = (stable_subset, canary_subset)
    holding = {
        kind: {
            index: positions
            for index, route in enumerate(routes_by_kind.get(kind) or [])
            if (positions := weighted_route_positions(route, stable_subset, canary_subset)) is not None
        }
        for kind in ROUTE_KINDS
    }
    listing = "; ".join(describe_route(index, route, kind) for kind in ROUTE_KINDS
                        for index, route in enumerate(routes_by_kind.get(kind) or []))
    http = routes_by_kind.get("http") or []
    if route_names:
        return [_named_route(http, holding["http"], name, subsets, listing) for name in dict.fromkeys(route_names)]
    if not any(holding.values()):
        raise WeightedRouteNotFound(
            f"no route (HTTP, TCP or TLS) whose destinations include both subset {stable_subset!r} and "
            f"{canary_subset!r}; its routes: {listing or 'it has none'}"
        )
    return [chosen for kind in ROUTE_KINDS if holding[kind]
            for chosen in _split_of_kind(kind, routes_by_kind.get(kind) or [], holding[kind], subsets)]


def select_split_routes(
    routes: list[Any], stable_subset: str, canary_subset: str, route_names: tuple[str, ...] = ()
) -> list[SplitRoute]:
    """`select_split` over HTTP routes only (a live object's `spec.http`, say)."""
    return select_split({"http": routes}, stable_subset, canary_subset, route_names)


def _split_of_kind(
    kind: str, routes: list[Any], holding: dict[int, tuple[int, int]], subsets: tuple[str, str]
) -> list[SplitRoute]:
    """Rules 2 and 3 for one kind of route (which has routes holding both subsets)."""
    default = next((index for index, route in enumerate(routes) if is_default_route(route)), None)
    if default is not None and default in holding:
        return [SplitRoute(kind, default, *holding[default])]
    pairs = {index: _weights(routes[index], positions, subsets) for index, positions in holding.items()}
    if len(set(pairs.values())) > 1:
        disagreeing = ", ".join(
            f"{describe_route(index, routes[index], kind).split(' -> ')[0]}: {stable}/{canary}"
            for index, (stable, canary) in pairs.items()
        )
        if kind != "http":
            raise SplitRouteUnclear(
                f"no {kind_label(kind)} route without `match` holds both subsets, and the {kind_label(kind)} routes "
                f"that do disagree on the split ({disagreeing}); {kind_label(kind)} routes have no name to pass to "
                "--route: make their weights agree by hand first"
            )
        raise SplitRouteUnclear(
            f"no default route (without `match`) holds both subsets, and the routes that do disagree on the split "
            f"({disagreeing}); pass --route NAME (repeatable) to say which route(s) rollguard moves "
            "(give the route a `name:` if it has none)"
        )
    return [SplitRoute(kind, index, *positions) for index, positions in holding.items()]


def _named_route(
    routes: list[Any], holding: dict[int, tuple[int, int]], name: str, subsets: tuple[str, str], listing: str
) -> SplitRoute:
    found = [index for index, route in enumerate(routes) if route_name(route) == name]
    if not found:
        names = [route_name(route) for route in routes if route_name(route)]
        raise SplitRouteUnclear(
            f"--route {name}: no HTTP route is named {name!r}; named routes: {', '.join(map(repr, names)) or 'none'}"
        )
    if len(found) > 1:
        raise SplitRouteUnclear(f"--route {name}: {len(found)} HTTP routes are named {name!r}; names must be unique")
    index = found[0]
    if index not in holding:
        raise SplitRouteUnclear(
            f"--route {name}: the route does not hold both subset {subsets[0]!r} and {subsets[1]!r} "
            f"({describe_route(index, routes[index])}); its routes: {listing}"
        )
    return SplitRoute("http", index, *holding[index])
