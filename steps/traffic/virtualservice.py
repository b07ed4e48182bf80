"""Find the weighted stable/canary split of an Istio VirtualService in a manifest file (its HTTP, TCP and TLS
routes, by route_selection's rule), and validate it.

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
    is_istio,
    name_of,
    namespace_of,
    routes_by_kind,
)
from rollguard.steps.traffic.manifest_errors import (
    InvalidWeights,
    ManifestError,
    VirtualServiceNotFound,
    WeightedRouteNotFound,
)
from rollguard.steps.traffic.manifest_yaml import human_line, line_of, load_documents
from rollguard.steps.traffic.route_selection import destination_weight, kind_label, route_name, select_split
from rollguard.steps.traffic.route_selection import (  # experiment/cluster.py reads live objects with it
    weighted_route_positions as weighted_route_positions,
)
from rollguard.steps.traffic.weight_sites import WeightSite, weight_site


@dataclass(frozen=True)
class WeightedRoute:
    """One route (HTTP, TCP or TLS) of the VirtualService that splits traffic between the two subsets."""

    kind: str  # http, tcp or tls
    index: int  # in spec.http, spec.tcp or spec.tls
    name: str | None
    line: int  # 0-based line of the route in the file
    stable: WeightSite
    stable_position: int  # index of the stable destination in the route's `route` list
    canary: WeightSite
    canary_position: int
    other_weight: int  # total weight of destinations that are neither subset

    @property
    def where(self) -> str:
        """`HTTP route at line 12`, for messages."""
        return f"{kind_label(self.kind)} route at {human_line(self.line)}"


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
    by_kind = routes_by_kind(document)
    try:
        selected = select_split(by_kind, stable_subset, canary_subset, routes)
    except ManifestError as exc:
        raise type(exc)(f"VirtualService {virtual_service!r}: {exc}") from None
    chosen_routes = [by_kind[chosen.kind][chosen.index] for chosen in selected]
    warnings = check_subsets_declared(
        documents,
        virtual_service,
        [(destinations(route)[r.stable_position], destinations(route)[r.canary_position])
         for r, route in zip(selected, chosen_routes, strict=True)],
        (stable_subset, canary_subset),
    )  # fmt: skip
    found: list[WeightedRoute] = []
    for chosen, route in zip(selected, chosen_routes, strict=True):
        entries = destinations(route)
        route_line = line_of(route)
        others = [
            destination_weight(entry, destination_subset(entry), route_line)
            for position, entry in enumerate(entries)
            if position not in (chosen.stable_position, chosen.canary_position)
        ]
        found.append(
            WeightedRoute(
                kind=chosen.kind,
                index=chosen.index,
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
                f"the weights of the {route.where} add up to {total}, not 100: rollguard "
                "reads weights as percent and does not guess what other totals mean (Istio reads 9/1 as the "
                "shares 90/10); write them so they add up to 100 (`rollguard rollback` rewrites any split to 100/0)"
            )
    pairs = {(route.stable.value, route.canary.value) for route in split.routes}
    if len(pairs) > 1:
        listing = ", ".join(f"{r.where}: {r.stable.value}/{r.canary.value}" for r in split.routes)
        raise InvalidWeights(f"the weighted routes of {virtual_service!r} disagree on the split ({listing})")
    return split.stable_weight, split.canary_weight
