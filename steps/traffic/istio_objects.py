"""Reading Istio objects as parsed YAML or API JSON: kinds, names, HTTP routes, destinations, DestinationRules.

Every accessor tolerates damaged input (a list where a mapping belongs, a missing key) and answers
None or an empty list, so the callers can name what is missing instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rollguard.steps.traffic.manifest_errors import UndeclaredSubset

ISTIO_GROUP = "networking.istio.io"
ROUTE_KINDS = ("http", "tcp", "tls")  # the route lists of a VirtualService's spec


def is_istio(document: Any, kind: str) -> bool:
    """True if `document` is a networking.istio.io object of `kind` (any API version)."""
    if not isinstance(document, Mapping) or document.get("kind") != kind:
        return False
    api_version = document.get("apiVersion")
    return isinstance(api_version, str) and api_version.split("/")[0] == ISTIO_GROUP


def name_of(document: Mapping[str, Any]) -> str | None:
    """metadata.name, when it is a string."""
    metadata = document.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
        return metadata["name"]
    return None


def namespace_of(document: Mapping[str, Any]) -> str | None:
    """metadata.namespace, when the object says it."""
    metadata = document.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    return namespace if isinstance(namespace, str) else None


def _sequence(value: Any) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def routes_of(virtual_service: Mapping[str, Any], kind: str) -> list[Any]:
    """spec.http, spec.tcp or spec.tls of a VirtualService (empty when missing or malformed)."""
    spec = virtual_service.get("spec")
    return _sequence(spec.get(kind)) if isinstance(spec, Mapping) else []


def routes_by_kind(virtual_service: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Every route list of a VirtualService, by kind (`http`, `tcp`, `tls`)."""
    return {kind: routes_of(virtual_service, kind) for kind in ROUTE_KINDS}


def http_routes(virtual_service: Mapping[str, Any]) -> list[Any]:
    """spec.http of a VirtualService (empty when missing or malformed)."""
    return routes_of(virtual_service, "http")


def destinations(route: Any) -> list[Any]:
    """The `route` list (weighted destinations) of one HTTP, TCP or TLS route."""
    return _sequence(route.get("route")) if isinstance(route, Mapping) else []


def destination_subset(entry: Any) -> str | None:
    """destination.subset of one weighted destination."""
    destination = entry.get("destination") if isinstance(entry, Mapping) else None
    if isinstance(destination, Mapping) and isinstance(destination.get("subset"), str):
        return destination["subset"]
    return None


def destination_host(entry: Any) -> str | None:
    """destination.host of one weighted destination."""
    destination = entry.get("destination") if isinstance(entry, Mapping) else None
    if isinstance(destination, Mapping) and isinstance(destination.get("host"), str):
        return destination["host"]
    return None


def _short_host(host: str) -> str:
    for suffix in (".svc.cluster.local", ".svc"):
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


def same_host(first: str, second: str) -> bool:
    """True if two Kubernetes service hosts name the same service (short names match their FQDN)."""
    a, b = _short_host(first), _short_host(second)
    if a == b:
        return True
    if "." not in a or "." not in b:
        return a.split(".")[0] == b.split(".")[0]
    return False


def _rule_host(rule: Mapping[str, Any]) -> str | None:
    spec = rule.get("spec")
    host = spec.get("host") if isinstance(spec, Mapping) else None
    return host if isinstance(host, str) else None


def _rule_subsets(rule: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = rule.get("spec")
    subsets = _sequence(spec.get("subsets")) if isinstance(spec, Mapping) else []
    return [item for item in subsets if isinstance(item, Mapping)]


def check_subsets_declared(
    documents: list[Any], virtual_service: str, split_destinations: list[tuple[Any, Any]], subsets: tuple[str, str]
) -> list[str]:
    """Refuse subsets that no DestinationRule in the file declares; return a warning if the file has none.

    `split_destinations` holds, per route of the split, its (stable, canary) destination entries.
    """
    rules = [doc for doc in documents if is_istio(doc, "DestinationRule")]
    if not rules:
        return [
            f"no DestinationRule in this file, so subsets {subsets[0]!r} and {subsets[1]!r} of VirtualService "
            f"{virtual_service!r} could not be checked; make sure a DestinationRule elsewhere declares them"
        ]
    described = ", ".join(f"{name_of(rule)!r} (host {_rule_host(rule)!r})" for rule in rules)
    for entries in split_destinations:
        for subset, entry in zip(subsets, entries, strict=True):
            host = destination_host(entry)
            matching = [rule for rule in rules if host is not None and same_host(_rule_host(rule) or "", host)]
            if not matching:
                raise UndeclaredSubset(
                    f"subset {subset!r} (host {host!r}) is not declared: no DestinationRule in this file is for "
                    f"host {host!r}; DestinationRules here: {described}"
                )
            declared = [item.get("name") for rule in matching for item in _rule_subsets(rule)]
            if subset not in declared:
                raise UndeclaredSubset(
                    f"subset {subset!r} is not declared by DestinationRule {name_of(matching[0])!r} "
                    f"(host {host!r}); it declares: {', '.join(map(str, declared)) or 'no subsets'}. "
                    "Add the subset there or pass the right --stable-subset/--canary-subset"
                )
    return []
