"""Parsing a manifest file with positions: every YAML document round-trip, line numbers, plain data for comparing.

The work is bounded, so a hostile or broken file ends in a clear refusal, not a hung step: a file over
MAX_MANIFEST_BYTES is not parsed (ruamel.yaml's round-trip parser takes seconds per megabyte), and
expanding YAML aliases into plain data stops at MAX_EXPANDED_NODES (a 2.6 kB "billion laughs" file
expands to billions of nodes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from rollguard.steps.traffic.manifest_errors import ManifestSyntaxError, ManifestTooLarge

MAX_MANIFEST_BYTES = 1024 * 1024  # a file holding VirtualServices is kilobytes
MAX_EXPANDED_NODES = 500_000  # five times the nodes of a 1 MiB manifest without aliases

# Line breaks as ruamel.yaml's reader counts them ("\r\n" is one break).
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


def load_documents(yaml_text: str) -> list[Any]:
    """Parse every YAML document of the file (round-trip types, with positions); ManifestSyntaxError if bad."""
    size = len(yaml_text.encode("utf-8"))
    if size > MAX_MANIFEST_BYTES:
        raise ManifestTooLarge(
            f"the file is {size / 1024 / 1024:.1f} MiB; rollguard edits manifests up to "
            f"{MAX_MANIFEST_BYTES // 1024 // 1024} MiB: keep the VirtualService in a smaller file and point --path "
            "at it"
        )
    try:
        return list(YAML(typ="rt").load_all(yaml_text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestSyntaxError(f"the file is not valid YAML{where}: {problem}") from None


def line_of(node: Any) -> int:
    """0-based line where a parsed mapping or sequence starts; -1 for plain data without positions."""
    lc = getattr(node, "lc", None)
    return int(lc.line) if lc is not None and lc.line is not None else -1


def human_line(line: int) -> str:
    """`line 12` for a 0-based line, as an error message says it."""
    return f"line {line + 1}" if line >= 0 else "an unknown line"


def line_starts(text: str) -> list[int]:
    """Offset of the first character of each line, counting line breaks as the YAML reader does."""
    return [0] + [match.end() for match in _LINE_BREAK.finditer(text)]


def plain(node: Any, budget: list[int] | None = None) -> Any:
    """Plain Python data of a parsed document (for comparing structures, ignoring formatting).

    Aliases are expanded, at most MAX_EXPANDED_NODES nodes in all (`budget` carries the count across
    the documents of one file); ManifestTooLarge beyond.
    """
    budget = budget if budget is not None else [MAX_EXPANDED_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise ManifestTooLarge(
            f"the file's YAML aliases (*name) expand to more than {MAX_EXPANDED_NODES:,} values (an alias bomb?); "
            "rollguard refuses to check such a file: write the repeated parts out or remove the aliases"
        )
    if isinstance(node, Mapping):
        return {plain(key, budget): plain(value, budget) for key, value in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, str):
        return [plain(item, budget) for item in node]
    return node


def plain_documents(documents: list[Any]) -> list[Any]:
    """plain() of every document of one file, within one budget."""
    budget = [MAX_EXPANDED_NODES]
    return [plain(document, budget) for document in documents]
