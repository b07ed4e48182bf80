"""Where a destination's weight is in the manifest text, or where a `weight:` goes when the destination has none.

kubectl writes no `weight:` for a destination of weight 0 (Istio reads a missing weight as 0), so
setting such a destination to, say, 10 inserts a `weight:` in the file's own style: a new line at
the indentation of `destination:` in a block mapping, `, weight: 10` in a flow mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollguard.steps.traffic.manifest_errors import InvalidWeights
from rollguard.steps.traffic.manifest_yaml import human_line, line_of, line_starts
from rollguard.steps.traffic.route_selection import destination_weight


@dataclass(frozen=True)
class WeightSite:
    """A destination's weight in the text: the scalar's 0-based line and column and its value; for a destination
    without `weight:` (value 0), where one is inserted: a new line before `line` at indentation `column`
    (block mapping), or `, weight: N` at `line`/`column` (the closing brace of a flow mapping)."""

    line: int
    column: int
    value: int
    missing: bool = False
    flow: bool = False


def weight_site(entry: Any, subset: str, route_line: int, text: str) -> WeightSite:
    """The WeightSite of one destination entry of the split; InvalidWeights if its weight cannot be edited."""
    value = destination_weight(entry, subset, route_line)
    if "weight" in entry.lc.data:
        line, column = entry.lc.value("weight")
        return WeightSite(line=int(line), column=int(column), value=value)
    if "weight" in entry or "destination" not in entry.lc.data:  # given through a YAML merge key (<<)
        raise InvalidWeights(
            f"the weight of subset {subset!r} at {human_line(line_of(entry))} comes from a YAML merge key (<<); "
            "write `weight:` and `destination:` explicitly in the destination so rollguard can change them"
        )
    if entry.fa.flow_style():
        starts = line_starts(text)
        end = _closing_brace(text, starts[entry.lc.line] + entry.lc.col)
        while end > 0 and text[end - 1] in " \t":
            end -= 1
        line = max(index for index, start in enumerate(starts) if start <= end)
        return WeightSite(line=line, column=end - starts[line], value=0, missing=True, flow=True)
    _key_line, key_column = entry.lc.key("destination")
    return WeightSite(line=_last_line(entry["destination"], int(_key_line)) + 1, column=int(key_column), value=0,
                      missing=True)  # fmt: skip


def insertion(site: WeightSite, value: int, text: str) -> tuple[int, str]:
    """(offset, text) that adds `weight: value` at a missing site."""
    starts = line_starts(text)
    if site.flow:
        return starts[site.line] + site.column, f", weight: {value}"
    new_line = " " * site.column + f"weight: {value}"
    if site.line >= len(starts):  # the destination ends the file, without a final line break
        return len(text), _line_break(text) + new_line
    return starts[site.line], new_line + _line_break(text)


def _line_break(text: str) -> str:
    """The file's line break ("\r\n" in a CRLF file)."""
    match = re.search(r"\r\n|\n|\r", text)
    return match.group(0) if match else "\n"


def _last_line(node: Any, at_least: int, seen: set[int] | None = None) -> int:
    """The last line any key or value inside `node` (parsed YAML) starts on; an aliased node is visited once."""
    seen = seen if seen is not None else set()
    if id(node) in seen:
        return at_least
    seen.add(id(node))
    last = at_least
    if isinstance(node, Mapping) and hasattr(node, "lc"):
        for key in node:
            last = max(last, int(node.lc.key(key)[0]), int(node.lc.value(key)[0]), _last_line(node[key], last, seen))
    elif isinstance(node, Sequence) and not isinstance(node, str) and hasattr(node, "lc"):
        for index, item in enumerate(node):
            last = max(last, int(node.lc.item(index)[0]), _last_line(item, last, seen))
    return last


def _closing_brace(text: str, start: int) -> int:
    """Offset of the `}` that closes the flow mapping opening at `start` (quotes and nesting respected)."""
    depth, index, quote = 0, start, ""
    while index < len(text):
        char = text[index]
        if quote == "'":
            if char == "'" and text.startswith("''", index):
                index += 1
            elif char == "'":
                quote = ""
        elif quote == '"':
            if char == "\\":
                index += 1
            elif char == '"':
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and index > start and text[index - 1] in " \t":
            index = text.find("\n", index)
            if index < 0:
                break
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise InvalidWeights(f"the flow mapping at offset {start} does not close; add the destination's `weight:` by hand")
