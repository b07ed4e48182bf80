"""What the local executor offers in place of a cluster's objects: Secrets and ConfigMaps as local directories
(one file per key, like a mounted Secret), an artifact repository directory, and the directory of mutex locks.

Nothing is taken from the machine implicitly: a step sees a Secret only when it was given here
(`rollguard run-local --secret NAME=DIR`), never an environment variable of the person running it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import substitute


def default_lock_dir() -> Path:
    """Where run-local keeps mutex lock files unless told otherwise: one per user, shared by all their runs."""
    return Path(tempfile.gettempdir()) / f"rollguard-locks-{os.getuid()}"


@dataclass(frozen=True)
class LocalCluster:
    """The stand-ins for cluster objects a run may use; anything not given here does not exist for the steps."""

    secrets: Mapping[str, Path] = field(default_factory=dict)
    config_maps: Mapping[str, Path] = field(default_factory=dict)
    artifact_repository: Path | None = None
    lock_dir: Path = field(default_factory=default_lock_dir)

    def key_value(self, kind: str, name: str, key: str) -> str | None:
        """The value of `key` in Secret/ConfigMap `name` (None when the object or the key is not there)."""
        directory = self._directory(kind, name)
        if directory is None or not (directory / key).is_file():
            return None
        try:
            return (directory / key).read_text()
        except OSError as exc:
            raise ExecutorError(f"{kind} {name!r}: cannot read key {key!r} from {directory / key}: {exc}") from None

    def secret_directory(self, name: str) -> Path | None:
        """The directory standing for Secret `name`, None when it was not given."""
        return self._directory("Secret", name)

    def _directory(self, kind: str, name: str) -> Path | None:
        objects = self.secrets if kind == "Secret" else self.config_maps
        return objects.get(name)


def parse_object_directories(pairs: list[str], flag: str) -> dict[str, Path]:
    """`["git=/path/dir"]` -> {"git": Path("/path/dir")}; ExecutorError naming `flag` and the fix for a bad item."""
    objects: dict[str, Path] = {}
    for pair in pairs:
        name, separator, directory = pair.partition("=")
        if not separator or not name.strip() or not directory:
            raise ExecutorError(f"{flag} {pair!r}: write {flag} NAME=DIR (DIR holds one file per key)")
        path = Path(directory)
        if not path.is_dir():
            raise ExecutorError(f"{flag} {pair!r}: {path} is not a directory; give a directory with one file per key")
        objects[name.strip()] = path
    return objects


def check_required_secrets(templates: list[dict[str, Any]], volumes: list[dict[str, Any]],
                           variables: dict[str, str], cluster: LocalCluster) -> None:
    """Before anything runs: every Secret a non-optional volume or env needs must have been given.

    Kubernetes would leave such a pod waiting for its Secret forever (Argo's node stays Pending);
    locally the run is refused up front. Names that depend on a template's inputs are checked when
    their step starts.
    """
    needed: list[tuple[str, str]] = []  # (secret name, what needs it)
    for volume in volumes + [v for template in templates for v in template.get("volumes") or []]:
        secret = volume.get("secret") or {}
        if secret and not secret.get("optional"):
            needed.append((str(secret.get("secretName", "")), f"volume {volume.get('name')!r}"))
    for template in templates:
        for variable in (template.get("container") or {}).get("env") or []:
            reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if reference and not reference.get("optional"):
                needed.append((str(reference.get("name", "")), f"env {variable.get('name')} of template "
                                                                f"{template.get('name')!r}"))
    for raw, what in needed:
        try:
            name = substitute(raw, variables, what)
        except ExecutorError:
            continue  # depends on inputs: checked when the step starts
        if name not in cluster.secrets:
            raise ExecutorError(f"{what} needs Secret {name!r}, which this run was not given; pass --secret "
                                f"{name}=DIR (a directory with one file per key) or mark it optional")
