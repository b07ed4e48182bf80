"""Find the weighted stable/canary split of an Istio VirtualService in a manifest file, and validate it.

ruamel.yaml parses every document of the file with positions, so the split records where each weight
scalar sits (line, column): weight_edit.py changes exactly those characters and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollguard.steps.traffic.istio_objects import (
    check_subsets_declared,
    destination_subset,
    destinations,
    http_routes,
    is_istio,
    name_of,
    namespace_of,
)
from rollguard.steps.traffic.manifest_errors import (
    InvalidWeights,
    VirtualServiceNotFound,
    WeightedRouteNotFound,
)
from rollguard.steps.traffic.manifest_yaml import human_line, line_of, load_documents


@dataclass(frozen=True)
class WeightSite:
    """One `weight:` scalar of a destination: where it is in the text (0-based) and its value."""

    line: int
    column: int
    value: int


@dataclass(frozen=True)
class WeightedRoute:
    """One HTTP route of the VirtualService that splits traffic between the two subsets."""

    http_index: int
    name: str | None
    line: int  # 0-based line of the route in the file
    stable: WeightSite
    stable_position: int  # index of the stable destination in the route's `route` list
    canary: WeightSite
    canary_position: int
    other_weight: int  # total weight of destinations that are neither subset


@dataclass(frozen=True)
class TrafficSplit:
    """The weighted routes of one VirtualService and what the file says about them."""

    document_index: int
    routes: tuple[WeightedRoute, ...]
    warnings: tuple[str, ...]
    namespace: str | None = None  # the VirtualService's metadata.namespace, when the file says it

    @property
    def stable_weight(self) -> int:
        """Stable weight of the first weighted route (agreed_weights checks that all routes agree)."""
        return self.routes[0].stable.value

    @property
    def canary_weight(self) -> int:
        """Canary weight of the first weighted route."""
        return self.routes[0].canary.value


def weighted_route_positions(route: Any, stable_subset: str, canary_subset: str) -> tuple[int, int] | None:
    """Indexes of the stable and canary destinations if `route` splits between both, else None.

    Works on plain dicts (a live object from the API) and on parsed YAML alike. A route that names a
    subset twice is ambiguous and refused, since rollguard would not know which weight to move.
    """
    subsets = [destination_subset(entry) for entry in destinations(route)]
    if stable_subset not in subsets or canary_subset not in subsets:
        return None
    for subset in (stable_subset, canary_subset):
        if subsets.count(subset) > 1:
            raise WeightedRouteNotFound(
                f"HTTP route at {human_line(line_of(route))} has {subsets.count(subset)} destinations with "
                f"subset {subset!r}; rollguard moves weight between exactly one stable and one canary destination"
            )
    return subsets.index(stable_subset), subsets.index(canary_subset)


def _integer_weight(entry: Any, subset: str | None, route_line: int) -> int:
    line = line_of(entry)
    where = human_line(line if line >= 0 else route_line)
    if not isinstance(entry, Mapping) or "weight" not in entry:
        raise InvalidWeights(
            f"the destination with subset {subset!r} at {where} has no weight; "
            "give every destination of a split an explicit `weight:` (0 to 100)"
        )
    weight = entry["weight"]
    if isinstance(weight, bool) or not isinstance(weight, int):
        raise InvalidWeights(
            f"the weight of subset {subset!r} at {where} is {weight!r}, not a whole number; "
            "write it as a plain number such as `weight: 10` (no quotes, no decimals)"
        )
    if not 0 <= weight <= 100:
        raise InvalidWeights(f"the weight of subset {subset!r} at {where} is {weight}; a weight must be 0 to 100")
    return int(weight)


def _weight_site(entry: Any, subset: str, route_line: int) -> WeightSite:
    value = _integer_weight(entry, subset, route_line)
    if "weight" not in entry.lc.data:  # inherited through a YAML merge key (<<): no position of its own
        raise InvalidWeights(
            f"the weight of subset {subset!r} at {human_line(line_of(entry))} comes from a YAML merge key (<<); "
            "write `weight:` explicitly in the destination so rollguard can change it"
        )
    line, column = entry.lc.value("weight")
    return WeightSite(line=int(line), column=int(column), value=value)


def _the_virtual_service(documents: list[Any], virtual_service: str) -> tuple[int, Any]:
    found = [
        (index, doc)
        for index, doc in enumerate(documents)
        if is_istio(doc, "VirtualService") and name_of(doc) == virtual_service
    ]
    if not found:
        names = [name_of(doc) or "(no name)" for doc in documents if is_istio(doc, "VirtualService")]
        there = f"VirtualServices in this file: {', '.join(names)}" if names else "there is no VirtualService in it"
        raise VirtualServiceNotFound(f"no VirtualService named {virtual_service!r} in the file; {there}")
    if len(found) > 1:
        lines = ", ".join(human_line(line_of(doc)) for _index, doc in found)
        raise VirtualServiceNotFound(
            f"{len(found)} VirtualServices are named {virtual_service!r} (at {lines}); rollguard edits exactly one"
        )
    return found[0]


def find_split(yaml_text: str, virtual_service: str, stable_subset: str, canary_subset: str) -> TrafficSplit:
    """Locate the weighted route(s) of the named VirtualService and validate them; raise ManifestError if bad."""
    if stable_subset == canary_subset:
        raise WeightedRouteNotFound(f"stable and canary subset are both {stable_subset!r}; they must differ")
    documents = load_documents(yaml_text)
    document_index, document = _the_virtual_service(documents, virtual_service)
    matched: list[tuple[Any, int, int, int]] = []
    summaries: list[str] = []
    for http_index, route in enumerate(http_routes(document)):
        positions = weighted_route_positions(route, stable_subset, canary_subset)
        subsets = [str(destination_subset(entry)) for entry in destinations(route)]
        summaries.append(f"#{http_index + 1} at {human_line(line_of(route))} -> {', '.join(subsets) or 'nothing'}")
        if positions is not None:
            matched.append((route, http_index, positions[0], positions[1]))
    if not matched:
        listing = "; ".join(summaries) if summaries else "it has no HTTP routes"
        raise WeightedRouteNotFound(
            f"VirtualService {virtual_service!r} has no HTTP route whose destinations include both subset "
            f"{stable_subset!r} and {canary_subset!r}; its routes: {listing}"
        )
    warnings = check_subsets_declared(
        documents,
        virtual_service,
        [(destinations(route)[s], destinations(route)[c]) for route, _i, s, c in matched],
        (stable_subset, canary_subset),
    )
    routes: list[WeightedRoute] = []
    for route, http_index, stable_position, canary_position in matched:
        entries = destinations(route)
        route_line = line_of(route)
        others = [
            _integer_weight(entry, destination_subset(entry), route_line)
            for position, entry in enumerate(entries)
            if position not in (stable_position, canary_position)
        ]
        name = route.get("name") if isinstance(route.get("name"), str) else None
        routes.append(
            WeightedRoute(
                http_index=http_index,
                name=name,
                line=route_line,
                stable=_weight_site(entries[stable_position], stable_subset, route_line),
                stable_position=stable_position,
                canary=_weight_site(entries[canary_position], canary_subset, route_line),
                canary_position=canary_position,
                other_weight=sum(others),
            )
        )
    return TrafficSplit(document_index, tuple(routes), tuple(warnings), namespace_of(document))


def read_split(yaml_text: str, virtual_service: str, stable_subset: str, canary_subset: str) -> tuple[int, int]:
    """(stable weight, canary weight) of the named VirtualService's weighted route(s) in a manifest file.

    Raises a ManifestError (a ValueError) naming the problem if the file, the VirtualService, its
    routes, subsets or weights are not a valid two-way split adding up to 100.
    """
    return agreed_weights(find_split(yaml_text, virtual_service, stable_subset, canary_subset), virtual_service)


def agreed_weights(split: TrafficSplit, virtual_service: str) -> tuple[int, int]:
    """(stable, canary) of a located split, after checking each route adds up to 100 and all routes agree."""
    for route in split.routes:
        total = route.stable.value + route.canary.value + route.other_weight
        if total != 100:
            raise InvalidWeights(
                f"the weights of the HTTP route at {human_line(route.line)} add up to {total}, not 100"
            )
    pairs = {(route.stable.value, route.canary.value) for route in split.routes}
    if len(pairs) > 1:
        listing = ", ".join(f"{human_line(r.line)}: {r.stable.value}/{r.canary.value}" for r in split.routes)
        raise InvalidWeights(f"the weighted routes of {virtual_service!r} disagree on the split ({listing})")
    return split.stable_weight, split.canary_weight
