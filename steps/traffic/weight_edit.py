"""Set new weights in the manifest text: a splice of the weight digits only, proven by parsing the result again.

A destination without `weight:` (it weighs 0) gets one only when it is set to another value, in the
file's style (weight_sites.py). Every other byte (comments, quoting, key order, indentation, anchors,
the other documents and routes) stays as it was; the edited file is parsed again and compared with
the original structure, so a weight shared through a YAML anchor or written in an unusual way is
refused instead of corrupted.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from rollguard.steps.traffic.manifest_errors import InvalidWeights, ManifestError, ManifestSyntaxError
from rollguard.steps.traffic.manifest_yaml import line_starts, load_documents, plain_documents
from rollguard.steps.traffic.virtualservice import TrafficSplit, find_split
from rollguard.steps.traffic.weight_sites import insertion

_PLAIN_INTEGER = re.compile(r"[0-9]+(?![0-9A-Za-z_.:])")


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


def set_split(
    yaml_text: str,
    virtual_service: str,
    stable_subset: str,
    canary_subset: str,
    canary_weight: int,
    routes: tuple[str, ...] = (),
    found: TrafficSplit | None = None,
) -> SplitEdit:
    """Return the file text with every route of the split at canary `canary_weight`, stable 100 minus it.

    The split is found by route_selection's rule (`routes`: the --route names, if given), unless the
    caller `found` it in this very text already (parsing a large file takes a while).
    Only the weight numbers change; the canary destination stays (with weight 0 on a rollback).
    Raises ManifestError if the file is not a valid split or the new weights would not add up to 100.
    """
    if isinstance(canary_weight, bool) or not isinstance(canary_weight, int) or not 0 <= canary_weight <= 100:
        raise InvalidWeights(f"canary weight {canary_weight!r} is outside 0..100; a weight is a whole percentage")
    stable_weight = 100 - canary_weight
    split = found or find_split(yaml_text, virtual_service, stable_subset, canary_subset, routes)
    for route in split.routes:
        if route.other_weight != 0:
            raise InvalidWeights(
                f"the {route.where} also sends {route.other_weight} % to other "
                f"destinations, so {stable_weight}/{canary_weight} would add up to {100 + route.other_weight}, "
                "not 100; give those destinations weight 0 or remove them"
            )
    starts = line_starts(yaml_text)
    replacements: list[tuple[int, int, str]] = []
    for route in split.routes:
        for site, new_value in ((route.stable, stable_weight), (route.canary, canary_weight)):
            if site.missing:  # no `weight:` in the file: it weighs 0; add one only for another value
                if new_value != 0:
                    offset, added = insertion(site, new_value, yaml_text)
                    replacements.append((offset, offset, added))
                continue
            offset = starts[site.line] + site.column
            match = _PLAIN_INTEGER.match(yaml_text, offset)
            if match is None or int(match.group(0)) != site.value:
                written = yaml_text[offset : offset + 12].split("\n")[0]
                raise InvalidWeights(
                    f"the weight at line {site.line + 1} is written as {written!r}; rollguard only edits a weight "
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
    expected = plain_documents(load_documents(old_text))
    spec = expected[split.document_index]["spec"]
    for route in split.routes:
        for site, position, value in ((route.stable, route.stable_position, stable_weight),
                                      (route.canary, route.canary_position, canary_weight)):  # fmt: skip
            if not (site.missing and value == 0):
                spec[route.kind][route.index]["route"][position]["weight"] = value
    try:
        actual = plain_documents(load_documents(new_text))
    except ManifestSyntaxError as exc:
        raise ManifestError(f"refusing the edit: the changed file would not parse ({exc})") from None
    if actual != expected:
        raise ManifestError(
            "refusing the edit: changing the weight numbers would change more than the weights "
            "(are weights shared through YAML anchors?); edit this file by hand"
        )


def unified_diff(old_text: str, new_text: str, path: str, context: int = 3) -> str:
    """A `git diff`-style unified diff of the file, for --dry-run output: exactly the lines the commit changes.

    difflib.unified_diff cannot be used: on files over 200 lines its "autojunk" heuristic ignores
    frequent lines (`host: reviews`, `- destination:`) when matching, and then shows unchanged lines
    between two weights as removed and added again.
    """
    old_lines, new_lines = _lines(old_text), _lines(new_text)
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    out: list[str] = []
    for group in matcher.get_grouped_opcodes(context):
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n")
        for tag, old_start, old_end, new_start, new_end in group:
            if tag == "equal":
                out.extend(_diff_line(" ", line) for line in old_lines[old_start:old_end])
                continue
            out.extend(_diff_line("-", line) for line in old_lines[old_start:old_end])
            out.extend(_diff_line("+", line) for line in new_lines[new_start:new_end])
    return f"--- a/{path}\n+++ b/{path}\n" + "".join(out) if out else ""


def _lines(text: str) -> list[str]:
    """The file's lines as git counts them: split after each "\\n" only (a CR or a form feed is text)."""
    return [line for line in re.split(r"(?<=\n)", text) if line]


def _range(start: int, end: int) -> str:
    """A hunk's line range as unified diffs write it (1-based start, and the length unless it is 1)."""
    length = end - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def _diff_line(marker: str, line: str) -> str:
    if line.endswith("\n"):
        return marker + line
    return f"{marker}{line}\n\\ No newline at end of file\n"
