"""Find the weighted stable/canary split of an Istio VirtualService in a manifest file, and validate it.

ruamel.yaml parses every document of the file with positions, so the split records where each weight
scalar sits (line, column): weight_edit.py changes exactly those characters and nothing else.
"""

from __future__ import annotations

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
    non_http_routes,
)
from rollguard.steps.traffic.manifest_errors import (
    InvalidWeights,
    ManifestError,
    VirtualServiceNotFound,
    WeightedRouteNotFound,
)
from rollguard.steps.traffic.manifest_yaml import human_line, line_of, load_documents
from rollguard.steps.traffic.route_selection import describe_route, destination_weight, route_name, select_split_routes
from rollguard.steps.traffic.route_selection import (  # experiment/cluster.py reads live objects with it
    weighted_route_positions as weighted_route_positions,
)
from rollguard.steps.traffic.weight_sites import WeightSite, weight_site


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


def find_split(
    yaml_text: str, virtual_service: str, stable_subset: str, canary_subset: str, routes: tuple[str, ...] = ()
) -> TrafficSplit:
    """Locate the split of the named VirtualService (route_selection's rule; `routes`: --route names) and
    validate it; raise ManifestError naming the problem if the file or the split is not usable."""
    if stable_subset == canary_subset:
        raise WeightedRouteNotFound(f"stable and canary subset are both {stable_subset!r}; they must differ")
    documents = load_documents(yaml_text)
    document_index, document = _the_virtual_service(documents, virtual_service)
    http = http_routes(document)
    _refuse_a_split_outside_http(document, virtual_service, http, stable_subset, canary_subset)
    try:
        selected = select_split_routes(http, stable_subset, canary_subset, routes)
    except ManifestError as exc:
        raise type(exc)(f"VirtualService {virtual_service!r}: {exc}") from None
    warnings = check_subsets_declared(
        documents,
        virtual_service,
        [(destinations(http[r.http_index])[r.stable_position], destinations(http[r.http_index])[r.canary_position])
         for r in selected],
        (stable_subset, canary_subset),
    )  # fmt: skip
    found: list[WeightedRoute] = []
    for chosen in selected:
        route = http[chosen.http_index]
        entries = destinations(route)
        route_line = line_of(route)
        others = [
            destination_weight(entry, destination_subset(entry), route_line)
            for position, entry in enumerate(entries)
            if position not in (chosen.stable_position, chosen.canary_position)
        ]
        found.append(
            WeightedRoute(
                http_index=chosen.http_index,
                name=route_name(route),
                line=route_line,
                stable=weight_site(entries[chosen.stable_position], stable_subset, route_line, yaml_text),
                stable_position=chosen.stable_position,
                canary=weight_site(entries[chosen.canary_position], canary_subset, route_line, yaml_text),
                canary_position=chosen.canary_position,
                other_weight=sum(others),
            )
        )
    return TrafficSplit(document_index, tuple(found), tuple(warnings), namespace_of(document))


def _refuse_a_split_outside_http(
    document: Any, virtual_service: str, http: list[Any], stable_subset: str, canary_subset: str
) -> None:
    """Say so when the only split between the subsets is in a TCP or TLS route, which rollguard does not edit."""
    if any(weighted_route_positions(route, stable_subset, canary_subset) for route in http):
        return
    elsewhere = [
        f"a {kind} route ({describe_route(index, route).split(' ', 1)[1]})"
        for index, (kind, route) in enumerate(non_http_routes(document))
        if weighted_route_positions(route, stable_subset, canary_subset)
    ]
    if elsewhere:
        has = "has no HTTP routes" if not http else "has no HTTP route holding both subsets"
        raise WeightedRouteNotFound(
            f"VirtualService {virtual_service!r} {has}: its split between {stable_subset!r} and {canary_subset!r} "
            f"is {' and '.join(elsewhere)}, and rollguard moves the weights of HTTP routes only; change TCP/TLS "
            "weights by hand"
        )


def read_split(
    yaml_text: str, virtual_service: str, stable_subset: str, canary_subset: str, routes: tuple[str, ...] = ()
) -> tuple[int, int]:
    """(stable weight, canary weight) of the named VirtualService's split in a manifest file.

    Raises a ManifestError (a ValueError) naming the problem if the file, the VirtualService, its
    routes, subsets or weights are not a valid two-way split adding up to 100.
    """
    split = find_split(yaml_text, virtual_service, stable_subset, canary_subset, routes)
    return agreed_weights(split, virtual_service)


def agreed_weights(split: TrafficSplit, virtual_service: str) -> tuple[int, int]:
    """(stable, canary) of a located split, after checking each route adds up to 100 and all routes agree."""
    for route in split.routes:
        total = route.stable.value + route.canary.value + route.other_weight
        if total != 100:
            raise InvalidWeights(
                f"the weights of the HTTP route at {human_line(route.line)} add up to {total}, not 100: rollguard "
                "reads weights as percent and does not guess what other totals mean (Istio reads 9/1 as the "
                "shares 90/10); write them so they add up to 100 (`rollguard rollback` rewrites any split to 100/0)"
            )
    pairs = {(route.stable.value, route.canary.value) for route in split.routes}
    if len(pairs) > 1:
        listing = ", ".join(f"{human_line(r.line)}: {r.stable.value}/{r.canary.value}" for r in split.routes)
        raise InvalidWeights(f"the weighted routes of {virtual_service!r} disagree on the split ({listing})")
    return split.stable_weight, split.canary_weight
