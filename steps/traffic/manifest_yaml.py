"""Parsing a manifest file with positions: every YAML document round-trip, line numbers, plain data for comparing."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from rollguard.steps.traffic.manifest_errors import ManifestSyntaxError

# Line breaks as ruamel.yaml's reader counts them ("\r\n" is one break).
_LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


def load_documents(yaml_text: str) -> list[Any]:
    """Parse every YAML document of the file (round-trip types, with positions); ManifestSyntaxError if bad."""
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


def plain(node: Any) -> Any:
    """Plain Python data of a parsed document (for comparing structures, ignoring formatting)."""
    if isinstance(node, Mapping):
        return {plain(key): plain(value) for key, value in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, str):
        return [plain(item) for item in node]
    return node
