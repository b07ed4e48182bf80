"""The canary weight in a Helm values file (`--values-key canary.weight`), and the edit of that one scalar.

Only the digits of the value (and of `--stable-values-key`, when the chart wants both) change:
comments, anchors, quoting and every other key stay byte for byte; the edited file is parsed again
to prove that nothing else moved (a weight shared through an anchor is refused, not corrupted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rollguard.steps.traffic.manifest_errors import (
    InvalidWeights,
    ManifestError,
    ManifestSyntaxError,
    WeightedRouteNotFound,
)
from rollguard.steps.traffic.manifest_yaml import line_starts, load_documents, plain_documents

_PLAIN_INTEGER = re.compile(r"[0-9]+(?![0-9A-Za-z_.:])")


@dataclass(frozen=True)
class ValuesWeight:
    """One weight in the values file: its dotted key, value and position."""

    key: str
    value: int
    line: int
    column: int


@dataclass(frozen=True)
class ValuesSplit:
    """The canary weight, and the stable one when a key holds it (else the chart derives it)."""

    canary: ValuesWeight
    stable: ValuesWeight | None

    @property
    def weights(self) -> tuple[int, int]:
        """(stable, canary); stable is 100 minus canary when no key holds it."""
        return (self.stable.value if self.stable else 100 - self.canary.value), self.canary.value


def _keys(dotted: str) -> list[str]:
    keys = dotted.split(".")
    if not dotted or not all(keys):
        raise ManifestError(f"values key {dotted!r} is not a dotted path such as reviews.canary.weight")
    return keys


def _locate(document: Any, dotted: str, name: str) -> ValuesWeight:
    node = document
    keys = _keys(dotted)
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            have = ", ".join(map(str, node)) if isinstance(node, Mapping) else f"a {type(node).__name__}"
            where = ".".join(keys[:depth]) or "the top level"
            raise WeightedRouteNotFound(
                f"values key {dotted!r} does not exist in {name}: {where} has no {key!r} (it has: {have or 'nothing'})"
            )
        if depth < len(keys) - 1:
            node = node[key]
    value = node[keys[-1]]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidWeights(
            f"values key {dotted!r} in {name} is {value!r}, not a number; rollguard sets it to a whole percent"
        )
    if not 0 <= value <= 100:
        raise InvalidWeights(f"values key {dotted!r} in {name} is {value}; a weight must be 0 to 100")
    if keys[-1] not in getattr(node, "lc").data:  # noqa: B009 - ruamel's position data
        raise InvalidWeights(
            f"values key {dotted!r} in {name} comes from a YAML merge key (<<); write it out so rollguard can set it"
        )
    line, column = node.lc.value(keys[-1])
    return ValuesWeight(dotted, int(value), int(line), int(column))


def find_values_split(text: str, canary_key: str, stable_key: str | None, name: str) -> ValuesSplit:
    """The weights at the keys; ManifestError naming the file and the key that is missing or not a number."""
    documents = load_documents(text)
    if len(documents) != 1 or not isinstance(documents[0], Mapping):
        raise ManifestError(f"{name} is not a Helm values file (one YAML mapping)")
    plain_documents(documents)  # bounds the alias expansion as for every manifest
    canary = _locate(documents[0], canary_key, name)
    stable = _locate(documents[0], stable_key, name) if stable_key else None
    if stable is not None and (stable.line, stable.column) == (canary.line, canary.column):
        raise ManifestError(f"--values-key and --stable-values-key name the same value in {name}")
    return ValuesSplit(canary, stable)


def agreed_values_weights(split: ValuesSplit, name: str) -> tuple[int, int]:
    """(stable, canary), after checking that both keys add up to 100."""
    stable, canary = split.weights
    if stable + canary != 100:
        raise InvalidWeights(
            f"{name}: {split.stable.key if split.stable else 'stable'} {stable} and {split.canary.key} {canary} add "
            "up to " + str(stable + canary) + ", not 100; rollguard reads weights as percent"
        )
    return stable, canary


def set_values_split(text: str, split: ValuesSplit, canary_weight: int) -> str:
    """The values text with the canary key at `canary_weight` (and the stable key at the rest)."""
    starts = line_starts(text)
    replacements: list[tuple[int, int, str]] = []
    expected = plain_documents(load_documents(text))
    for weight, value in ((split.canary, canary_weight), (split.stable, 100 - canary_weight)):
        if weight is None:
            continue
        offset = starts[weight.line] + weight.column
        match = _PLAIN_INTEGER.match(text, offset)
        if match is None or int(match.group(0)) != weight.value:
            written = text[offset : offset + 12].split("\n")[0]
            raise InvalidWeights(
                f"the value of {weight.key!r} at line {weight.line + 1} is written as {written!r}; rollguard only "
                "edits a value written as a plain number (no anchor, alias, quotes or sign)"
            )
        if weight.value != value:
            replacements.append((match.start(), match.end(), str(value)))
            node = expected[0]
            keys = _keys(weight.key)
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = value
    new_text = text
    for start, end, value_text in sorted(replacements, reverse=True):
        new_text = new_text[:start] + value_text + new_text[end:]
    if replacements:
        try:
            actual = plain_documents(load_documents(new_text))
        except ManifestSyntaxError as exc:
            raise ManifestError(f"refusing the edit: the changed values file would not parse ({exc})") from None
        if actual != expected:
            raise ManifestError(
                "refusing the edit: changing the value would change more than that key (is it shared through a "
                "YAML anchor?); edit this values file by hand"
            )
    return new_text
