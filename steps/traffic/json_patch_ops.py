"""A JSON 6902 patch file (YAML or JSON) read with positions, and applied to plain data to see what it sets.

Applying the patch to the base VirtualService tells, for every destination of the result, which
operation of the file last gave it its `weight` (a `replace`/`add` of `.../route/J/weight`, or an
`add`/`replace` whose value holds the destination with its weight): that is the number rollguard
edits, and the only one.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollguard.steps.traffic.manifest_errors import ManifestError
from rollguard.steps.traffic.manifest_yaml import load_documents, plain_documents

WEIGHT_SETTING_OPS = ("add", "replace")


class PatchNotApplicable(ManifestError):
    """An operation of the patch does not apply to the base (a path that is not there)."""


@dataclass(frozen=True)
class PatchOperation:
    """One operation: its index in the file, op, decoded path tokens, the parsed node (with positions)."""

    index: int
    op: str
    path: str
    tokens: tuple[str, ...]
    node: Any  # the ruamel mapping of the operation, for positions
    value: Any  # plain data of `value`

    @property
    def label(self) -> str:
        """`operation #2 (replace /spec/http/0/route/1/weight)`."""
        return f"operation #{self.index + 1} ({self.op} {self.path})"


@dataclass(frozen=True)
class WeightSource:
    """Where a destination's weight is written in the patch: the operation and the keys inside its `value`."""

    operation: PatchOperation
    inside_value: tuple[Any, ...]  # () when `value` is the weight itself, ("weight",) for a destination, ...


def decode_pointer(path: str) -> tuple[str, ...]:
    """The reference tokens of a JSON pointer (RFC 6901): `/a~1b/0` -> ("a/b", "0")."""
    if path == "":
        return ()
    if not path.startswith("/"):
        raise ManifestError(f"the JSON patch path {path!r} does not start with '/'")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/"))


def encode_pointer(tokens: Sequence[Any]) -> str:
    """A JSON pointer from tokens: ("spec", "http", 0) -> `/spec/http/0`."""
    return "".join("/" + str(token).replace("~", "~0").replace("/", "~1") for token in tokens)


def is_json_patch(documents: list[Any]) -> bool:
    """True if the parsed file is one JSON 6902 patch: a list of mappings with `op` and `path`."""
    if len(documents) != 1 or not isinstance(documents[0], Sequence) or isinstance(documents[0], str):
        return False
    items = list(documents[0])
    return bool(items) and all(isinstance(item, Mapping) and "op" in item and "path" in item for item in items)


def parse_operations(text: str) -> list[PatchOperation]:
    """The operations of a JSON 6902 patch file; ManifestError if it is not one."""
    documents = load_documents(text)
    if not is_json_patch(documents):
        raise ManifestError("the file is not a JSON 6902 patch (a list of operations with `op` and `path`)")
    plain = plain_documents(documents)[0]
    operations = []
    for index, (node, item) in enumerate(zip(documents[0], plain, strict=True)):
        op, path = item.get("op"), item.get("path")
        if not isinstance(op, str) or not isinstance(path, str):
            raise ManifestError(f"operation #{index + 1} has no string `op` and `path`")
        operations.append(PatchOperation(index, op, path, decode_pointer(path), node, item.get("value")))
    return operations


def _index(container: list[Any], token: str, operation: PatchOperation, appending: bool) -> int:
    if token == "-" and appending:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchNotApplicable(f"{operation.label}: {token!r} is not an array index")
    index = int(token)
    if index > len(container) or (index == len(container) and not appending):
        raise PatchNotApplicable(
            f"{operation.label} does not apply: the list there has {len(container)} item(s), no index {index}"
        )
    return index


def _parent(document: Any, tokens: tuple[str, ...], operation: PatchOperation) -> Any:
    node = document
    for depth, token in enumerate(tokens):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, operation, appending=False)]
        else:
            where = encode_pointer(tokens[: depth + 1])
            raise PatchNotApplicable(f"{operation.label} does not apply: the base has nothing at {where}")
    return node


def _record(value: Any, operation: PatchOperation, sources: dict[int, WeightSource], inside: tuple[Any, ...]) -> None:
    """Remember every mapping with a `weight` inside an inserted value as set by `operation`."""
    if isinstance(value, dict):
        if "weight" in value:
            sources[id(value)] = WeightSource(operation, (*inside, "weight"))
        for key, item in value.items():
            _record(item, operation, sources, (*inside, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            _record(item, operation, sources, (*inside, position))


def apply_operations(document: Any, operations: list[PatchOperation]) -> tuple[Any, dict[int, WeightSource]]:
    """The document (plain data, not changed) with the patch applied, and {id(destination mapping): where
    the patch sets its weight}. `test` checks nothing here; `move`/`copy` move data (sources follow)."""
    result = copy.deepcopy(document)
    sources: dict[int, WeightSource] = {}
    for operation in operations:
        if not operation.tokens:
            raise PatchNotApplicable(f"{operation.label}: rollguard does not follow a patch of the whole object")
        parent = _parent(result, operation.tokens[:-1], operation)
        last = operation.tokens[-1]
        if operation.op in WEIGHT_SETTING_OPS:
            value = copy.deepcopy(operation.value)
            _record(value, operation, sources, ())
            if isinstance(parent, list):
                position = _index(parent, last, operation, appending=operation.op == "add")
                if operation.op == "add":
                    parent.insert(position, value)
                else:
                    parent[position] = value
            elif isinstance(parent, dict):
                if operation.op == "replace" and last not in parent:
                    raise PatchNotApplicable(f"{operation.label} does not apply: the base has no {last!r} there")
                parent[last] = value
                if last == "weight":
                    sources[id(parent)] = WeightSource(operation, ())
            else:
                raise PatchNotApplicable(f"{operation.label} does not apply: its parent is not a list or mapping")
        elif operation.op == "remove":
            _remove(parent, last, operation)
        elif operation.op in ("move", "copy"):
            raise ManifestError(
                f"{operation.label}: rollguard does not follow `{operation.op}` operations in a patch it edits; "
                "write the weights with `replace` or `add`"
            )
        elif operation.op != "test":
            raise ManifestError(f"{operation.label}: {operation.op!r} is not a JSON patch operation")
    return result, sources


def _remove(parent: Any, last: str, operation: PatchOperation) -> None:
    if isinstance(parent, list):
        parent.pop(_index(parent, last, operation, appending=False))
    elif isinstance(parent, dict) and last in parent:
        del parent[last]
    else:
        raise PatchNotApplicable(f"{operation.label} does not apply: the base has nothing there")


def value_position(source: WeightSource) -> tuple[int, int]:
    """(0-based line, column) of the weight scalar in the patch file."""
    node: Any = source.operation.node
    key: Any = "value"
    for inner in source.inside_value:
        node, key = node[key], inner
    if isinstance(key, int):
        line, column = node.lc.item(key)
    else:
        line, column = node.lc.value(key)
    return int(line), int(column)
