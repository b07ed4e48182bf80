"""Where a patch file sits in a Kustomize tree: the kustomization that applies it, its target, and its base.

Pure but for `read` (a repository path -> its text, None when there is no such file), so the same
lookup runs on every head a push race brings. Remote bases (URLs) are not fetched: they are named
as what could not be read.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rollguard.steps.traffic.istio_objects import is_istio, name_of
from rollguard.steps.traffic.manifest_errors import ManifestError
from rollguard.steps.traffic.manifest_yaml import load_documents, plain_documents

ReadFile = Callable[[str], str | None]
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_BASE_DEPTH = 8  # overlays of overlays of bases; a cycle ends here too


@dataclass(frozen=True)
class PatchReference:
    """The kustomization that applies a patch file, how (`patches`, `patchesJson6902`, `patchesStrategicMerge`),
    its target, and the base it is applied to."""

    kustomization: str  # repository path of the kustomization file
    how: str  # patches, patchesJson6902 or patchesStrategicMerge
    target: Mapping[str, Any]
    base_documents: tuple[Any, ...] = ()  # plain data of every resource document the base holds
    base_files: tuple[str, ...] = ()  # the resource files they came from
    unread: tuple[str, ...] = ()  # resources that could not be read (remote, missing)
    namespace: str | None = None  # the kustomization's `namespace:`, which it sets on every object

    def base_virtual_service(self, name: str) -> Any | None:
        """The base's VirtualService `name` (plain data), or None."""
        found = [doc for doc in self.base_documents if is_istio(doc, "VirtualService") and name_of(doc) == name]
        return found[0] if len(found) == 1 else None

    @property
    def where_base(self) -> str:
        """`base/istio.yaml` or `the resources of overlays/prod/kustomization.yaml`, for messages."""
        return ", ".join(self.base_files) if self.base_files else f"the resources of {self.kustomization}"


def _kustomization_in(directory: str, read: ReadFile) -> tuple[str, Any] | None:
    for name in KUSTOMIZATION_NAMES:
        path = posixpath.normpath(posixpath.join(directory, name)) if directory else name
        text = read(path)
        if text is not None:
            documents = plain_documents(load_documents(text))
            document = documents[0] if documents else None
            # An empty or odd file applies no patch: a plain manifest beside it is read as before.
            return (path, document) if isinstance(document, Mapping) else None
    return None


def _list(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def _inside(directory: str, relative: str) -> str | None:
    """`directory/relative` as a repository path, or None when it leaves the repository or is a URL."""
    if "://" in relative or relative.startswith(("github.com/", "git@")):
        return None
    joined = posixpath.normpath(posixpath.join(directory, relative))
    return None if joined.startswith("../") or joined == ".." or joined.startswith("/") else joined


def find_patch_reference(patch_path: str, read: ReadFile) -> PatchReference | None:
    """The kustomization beside `patch_path` that applies it as a patch, with its base; None when there is none."""
    directory = posixpath.dirname(patch_path)
    found = _kustomization_in(directory, read)
    if found is None:
        return None
    kustomization_path, document = found
    reference: tuple[str, Mapping[str, Any]] | None = None
    for key in ("patches", "patchesJson6902"):
        for entry in _list(document, key):
            if isinstance(entry, Mapping) and isinstance(entry.get("path"), str) \
                    and _inside(directory, entry["path"]) == posixpath.normpath(patch_path):  # fmt: skip
                target = entry.get("target")
                reference = (key, target if isinstance(target, Mapping) else {})
    for entry in _list(document, "patchesStrategicMerge"):
        if isinstance(entry, str) and _inside(directory, entry) == posixpath.normpath(patch_path):
            reference = ("patchesStrategicMerge", {})
    if reference is None:
        return None
    documents: list[Any] = []
    files: list[str] = []
    unread: list[str] = []
    _collect_resources(directory, document, read, documents, files, unread, depth=0)
    namespace = document.get("namespace")
    return PatchReference(
        kustomization_path, reference[0], reference[1], tuple(documents), tuple(files), tuple(unread),
        namespace if isinstance(namespace, str) else None,
    )  # fmt: skip


def _collect_resources(
    directory: str, document: Mapping[str, Any], read: ReadFile, documents: list[Any], files: list[str],
    unread: list[str], depth: int,
) -> None:  # fmt: skip
    """Every document of the kustomization's resources (and older `bases`), following base directories."""
    if depth > MAX_BASE_DEPTH:
        unread.append(f"bases nested deeper than {MAX_BASE_DEPTH} under {directory or '.'}")
        return
    for entry in _list(document, "resources") + _list(document, "bases"):
        if not isinstance(entry, str):
            continue
        path = _inside(directory, entry)
        if path is None:
            unread.append(entry)
            continue
        text = read(path)
        if text is not None:
            files.append(path)
            documents.extend(plain_documents(load_documents(text)))
            continue
        nested = _kustomization_in(path, read)
        if nested is None:
            unread.append(path)
            continue
        _collect_resources(path, nested[1], read, documents, files, unread, depth + 1)


def check_target(reference: PatchReference, virtual_service: str, patch_path: str) -> None:
    """Refuse a patch whose kustomization target is another object than the VirtualService named."""
    target = reference.target
    kind, name = target.get("kind"), target.get("name")
    if (kind is not None and kind != "VirtualService") or (name is not None and name != virtual_service):
        raise ManifestError(
            f"{reference.kustomization} applies {patch_path} to {kind or 'any kind'} {name or '(any name)'}, "
            f"not to VirtualService {virtual_service!r}; check --path and --virtual-service"
        )
