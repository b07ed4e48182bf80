"""Read and change the weighted stable/canary split of an Istio VirtualService inside a manifest file.

The edit is a text splice: ruamel.yaml parses every document of the file to learn where each weight
scalar sits (line, column), and only those characters are replaced. Every other byte (comments,
quoting, key order, indentation, anchors, the other documents and routes) stays as it was, and the
result is parsed again and compared with the original structure to prove that only weights changed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

ISTIO_GROUP = "networking.istio.io"

# Line breaks as ruamel.yaml's reader counts them ("\r\n" is one break).
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
_PLAIN_INTEGER = re.compile(r"[0-9]+(?![0-9A-Za-z_.:])")


class ManifestError(ValueError):
    """The manifest cannot be read or edited as asked; the message names the problem and the fix."""


class ManifestSyntaxError(ManifestError):
    """The file is not valid YAML."""


class VirtualServiceNotFound(ManifestError):
    """No VirtualService with the given metadata.name is in the file."""


class WeightedRouteNotFound(ManifestError):
    """The VirtualService has no HTTP route whose destinations include both subsets."""


class UndeclaredSubset(ManifestError):
    """A subset is not declared by a DestinationRule in the same file."""


class InvalidWeights(ManifestError):
    """Weights are missing, not whole numbers, outside 0..100, or would not add up to 100."""


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
        """Stable weight of the first weighted route (read_split checks that all routes agree)."""
        return self.routes[0].stable.value

    @property
    def canary_weight(self) -> int:
        """Canary weight of the first weighted route."""
        return self.routes[0].canary.value


@dataclass(frozen=True)
class SplitEdit:
    """The outcome of setting a split: the new text, the weights before and after, and warnings."""

    text: str
    changed: bool
    before_stable_weight: int
    before_canary_weight: int
    stable_weight: int
    canary_weight: int
    routes_changed: int
    warnings: tuple[str, ...]
    namespace: str | None = None  # the VirtualService's metadata.namespace, when the file says it


def _yaml() -> YAML:
    return YAML(typ="rt")


def load_documents(yaml_text: str) -> list[Any]:
    """Parse every YAML document of the file (round-trip types, with positions)."""
    try:
        return list(_yaml().load_all(yaml_text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestSyntaxError(f"the file is not valid YAML{where}: {problem}") from None


def _is_istio(document: Any, kind: str) -> bool:
    if not isinstance(document, Mapping) or document.get("kind") != kind:
        return False
    api_version = document.get("apiVersion")
    return isinstance(api_version, str) and api_version.split("/")[0] == ISTIO_GROUP


def _name_of(document: Mapping[str, Any]) -> str | None:
    metadata = document.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
        return metadata["name"]
    return None


def _line_of(node: Any) -> int:
    lc = getattr(node, "lc", None)
    return int(lc.line) if lc is not None and lc.line is not None else -1


def _human_line(line: int) -> str:
    return f"line {line + 1}" if line >= 0 else "an unknown line"


def _destination_subset(entry: Any) -> str | None:
    if not isinstance(entry, Mapping):
        return None
    destination = entry.get("destination")
    if isinstance(destination, Mapping) and isinstance(destination.get("subset"), str):
        return destination["subset"]
    return None


def _destination_host(entry: Any) -> str | None:
    destination = entry.get("destination") if isinstance(entry, Mapping) else None
    if isinstance(destination, Mapping) and isinstance(destination.get("host"), str):
        return destination["host"]
    return None


def _http_routes(virtual_service: Mapping[str, Any]) -> list[Any]:
    spec = virtual_service.get("spec")
    if not isinstance(spec, Mapping):
        return []
    http = spec.get("http")
    return list(http) if isinstance(http, Sequence) and not isinstance(http, str) else []


def _destinations(route: Any) -> list[Any]:
    if not isinstance(route, Mapping):
        return []
    entries = route.get("route")
    return list(entries) if isinstance(entries, Sequence) and not isinstance(entries, str) else []


def weighted_route_positions(route: Any, stable_subset: str, canary_subset: str) -> tuple[int, int] | None:
    """Indexes of the stable and canary destinations if `route` splits between both, else None.

    Works on plain dicts (a live object from the API) and on parsed YAML alike. A route that names a
    subset twice is ambiguous and refused, since rollguard would not know which weight to move.
    """
    entries = _destinations(route)
    subsets = [_destination_subset(entry) for entry in entries]
    if stable_subset not in subsets or canary_subset not in subsets:
        return None
    for subset in (stable_subset, canary_subset):
        if subsets.count(subset) > 1:
            raise WeightedRouteNotFound(
                f"HTTP route at {_human_line(_line_of(route))} has {subsets.count(subset)} destinations with "
                f"subset {subset!r}; rollguard moves weight between exactly one stable and one canary destination"
            )
    return subsets.index(stable_subset), subsets.index(canary_subset)


def _integer_weight(entry: Any, subset: str | None, route_line: int) -> int:
    line = _line_of(entry)
    where = _human_line(line if line >= 0 else route_line)
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
            f"the weight of subset {subset!r} at {_human_line(_line_of(entry))} comes from a YAML merge key (<<); "
            "write `weight:` explicitly in the destination so rollguard can change it"
        )
    line, column = entry.lc.value("weight")
    return WeightSite(line=int(line), column=int(column), value=value)


def _short_host(host: str) -> str:
    for suffix in (".svc.cluster.local", ".svc"):
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


def _same_host(first: str, second: str) -> bool:
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
    subsets = spec.get("subsets") if isinstance(spec, Mapping) else None
    if not isinstance(subsets, Sequence) or isinstance(subsets, str):
        return []
    return [item for item in subsets if isinstance(item, Mapping)]


def _check_subsets_declared(
    documents: list[Any], virtual_service: str, routes: list[tuple[Any, int, int]], subsets: tuple[str, str]
) -> list[str]:
    """Refuse subsets that no DestinationRule in the file declares; warn if the file has no DestinationRule."""
    rules = [doc for doc in documents if _is_istio(doc, "DestinationRule")]
    if not rules:
        return [
            f"no DestinationRule in this file, so subsets {subsets[0]!r} and {subsets[1]!r} of VirtualService "
            f"{virtual_service!r} could not be checked; make sure a DestinationRule elsewhere declares them"
        ]
    described = ", ".join(f"{_name_of(rule)!r} (host {_rule_host(rule)!r})" for rule in rules)
    for route, stable_position, canary_position in routes:
        entries = _destinations(route)
        for subset, position in zip(subsets, (stable_position, canary_position), strict=True):
            host = _destination_host(entries[position])
            matching = [rule for rule in rules if host is not None and _same_host(_rule_host(rule) or "", host)]
            if not matching:
                raise UndeclaredSubset(
                    f"subset {subset!r} (host {host!r}) is not declared: no DestinationRule in this file is for "
                    f"host {host!r}; DestinationRules here: {described}"
                )
            declared = [item.get("name") for rule in matching for item in _rule_subsets(rule)]
            if subset not in declared:
                raise UndeclaredSubset(
                    f"subset {subset!r} is not declared by DestinationRule {_name_of(matching[0])!r} "
                    f"(host {host!r}); it declares: {', '.join(map(str, declared)) or 'no subsets'}. "
                    "Add the subset there or pass the right --stable-subset/--canary-subset"
                )
    return []


def find_split(yaml_text: str, virtual_service: str, stable_subset: str, canary_subset: str) -> TrafficSplit:
    """Locate the weighted route(s) of the named VirtualService and validate them; raise ManifestError if bad."""
    if stable_subset == canary_subset:
        raise WeightedRouteNotFound(f"stable and canary subset are both {stable_subset!r}; they must differ")
    documents = load_documents(yaml_text)
    found = [
        (index, doc)
        for index, doc in enumerate(documents)
        if _is_istio(doc, "VirtualService") and _name_of(doc) == virtual_service
    ]
    if not found:
        names = [_name_of(doc) or "(no name)" for doc in documents if _is_istio(doc, "VirtualService")]
        there = f"VirtualServices in this file: {', '.join(names)}" if names else "there is no VirtualService in it"
        raise VirtualServiceNotFound(f"no VirtualService named {virtual_service!r} in the file; {there}")
    if len(found) > 1:
        lines = ", ".join(_human_line(_line_of(doc)) for _index, doc in found)
        raise VirtualServiceNotFound(
            f"{len(found)} VirtualServices are named {virtual_service!r} (at {lines}); rollguard edits exactly one"
        )
    document_index, document = found[0]
    matched: list[tuple[Any, int, int, int]] = []
    summaries: list[str] = []
    for http_index, route in enumerate(_http_routes(document)):
        positions = weighted_route_positions(route, stable_subset, canary_subset)
        subsets = [str(_destination_subset(entry)) for entry in _destinations(route)]
        summaries.append(f"#{http_index + 1} at {_human_line(_line_of(route))} -> {', '.join(subsets) or 'nothing'}")
        if positions is not None:
            matched.append((route, http_index, positions[0], positions[1]))
    if not matched:
        listing = "; ".join(summaries) if summaries else "it has no HTTP routes"
        raise WeightedRouteNotFound(
            f"VirtualService {virtual_service!r} has no HTTP route whose destinations include both subset "
            f"{stable_subset!r} and {canary_subset!r}; its routes: {listing}"
        )
    warnings = _check_subsets_declared(
        documents, virtual_service, [(route, s, c) for route, _i, s, c in matched], (stable_subset, canary_subset)
    )
    routes: list[WeightedRoute] = []
    for route, http_index, stable_position, canary_position in matched:
        entries = _destinations(route)
        route_line = _line_of(route)
        others = [
            _integer_weight(entry, _destination_subset(entry), route_line)
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
    namespace = (document.get("metadata") or {}).get("namespace")
    return TrafficSplit(document_index=document_index, routes=tuple(routes), warnings=tuple(warnings),
                        namespace=namespace if isinstance(namespace, str) else None)


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
                f"the weights of the HTTP route at {_human_line(route.line)} add up to {total}, not 100"
            )
    pairs = {(route.stable.value, route.canary.value) for route in split.routes}
    if len(pairs) > 1:
        listing = ", ".join(f"{_human_line(r.line)}: {r.stable.value}/{r.canary.value}" for r in split.routes)
        raise InvalidWeights(f"the weighted routes of {virtual_service!r} disagree on the split ({listing})")
    return split.stable_weight, split.canary_weight


def _line_starts(text: str) -> list[int]:
    return [0] + [match.end() for match in _LINE_BREAK.finditer(text)]


def _plain(node: Any) -> Any:
    """Plain Python data of a parsed document (for comparing structures, ignoring formatting)."""
    if isinstance(node, Mapping):
        return {_plain(key): _plain(value) for key, value in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, str):
        return [_plain(item) for item in node]
    return node


def set_split(
    yaml_text: str, virtual_service: str, stable_subset: str, canary_subset: str, canary_weight: int
) -> SplitEdit:
    """Return the file text with every weighted route at canary `canary_weight`, stable 100 minus it.

    Only the weight numbers change; the canary destination stays (with weight 0 on a rollback).
    Raises ManifestError if the file is not a valid split or the new weights would not add up to 100.
    """
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int) or not 0 <= canary_weight <= 100:
        raise InvalidWeights(f"canary weight {canary_weight!r} is outside 0..100; a weight is a whole percentage")
    stable_weight = 100 - canary_weight
    split = find_split(yaml_text, virtual_service, stable_subset, canary_subset)
    for route in split.routes:
        if route.other_weight != 0:
            raise InvalidWeights(
                f"the HTTP route at {_human_line(route.line)} also sends {route.other_weight} % to other "
                f"destinations, so {stable_weight}/{canary_weight} would add up to {100 + route.other_weight}, "
                "not 100; give those destinations weight 0 or remove them"
            )
    starts = _line_starts(yaml_text)
    replacements: list[tuple[int, int, str]] = []
    for route in split.routes:
        for site, new_value in ((route.stable, stable_weight), (route.canary, canary_weight)):
            offset = starts[site.line] + site.column
            match = _PLAIN_INTEGER.match(yaml_text, offset)
            if match is None or int(match.group(0)) != site.value:
                found = yaml_text[offset : offset + 12].split("\n")[0]
                raise InvalidWeights(
                    f"the weight at line {site.line + 1} is written as {found!r}; rollguard only edits a weight "
                    "written as a plain number (no anchor, alias, quotes or sign)"
                )
            if site.value != new_value:
                replacements.append((match.start(), match.end(), str(new_value)))
    new_text = yaml_text
    for start, end, value in sorted(replacements, reverse=True):
        new_text = new_text[:start] + value + new_text[end:]
    if replacements:
        _verify_only_weights_changed(yaml_text, new_text, split, stable_weight, canary_weight)
    first = split.routes[0]
    return SplitEdit(
        text=new_text,
        changed=bool(replacements),
        before_stable_weight=first.stable.value,
        before_canary_weight=first.canary.value,
        stable_weight=stable_weight,
        canary_weight=canary_weight,
        routes_changed=sum(
            1 for r in split.routes if (r.stable.value, r.canary.value) != (stable_weight, canary_weight)
        ),
        warnings=split.warnings,
        namespace=split.namespace,
    )


def _verify_only_weights_changed(
    old_text: str, new_text: str, split: TrafficSplit, stable_weight: int, canary_weight: int
) -> None:
    expected = [_plain(doc) for doc in load_documents(old_text)]
    http = expected[split.document_index]["spec"]["http"]
    for route in split.routes:
        http[route.http_index]["route"][route.stable_position]["weight"] = stable_weight
        http[route.http_index]["route"][route.canary_position]["weight"] = canary_weight
    try:
        actual = [_plain(doc) for doc in load_documents(new_text)]
    except ManifestSyntaxError as exc:
        raise ManifestError(f"refusing the edit: the changed file would not parse ({exc})") from None
    if actual != expected:
        raise ManifestError(
            "refusing the edit: changing the weight numbers would change more than the weights "
            "(are weights shared through YAML anchors?); edit this file by hand"
        )


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


def unified_diff(old_text: str, new_text: str, path: str) -> str:
    """A `git diff`-style unified diff of the file, for --dry-run output."""
    return "".join(
        difflib.unified_diff(
            old_text.splitlines(keepends=True), new_text.splitlines(keepends=True), f"a/{path}", f"b/{path}"
        )
    )
