"""Output artifacts as Argo's wait container saves them: to the artifact repository, or the node fails.

With no artifact repository configured (Argo's default install), Argo resolves an empty default
repository and still starts the pod; after main exits, the wait container's upload fails with
"You need to configure artifact storage..." (pkg/apis/workflow/v1alpha1/workflow_types.go,
ArtifactLocation.Get; workflow/executor/executor.go SaveArtifacts/saveArtifact), so the node is
**Error** although main exited 0 (workflow/controller/operator.go inferFailedReason: a failed
wait container is Error). `optional: true` helps only when the file is missing; a file that
exists is uploaded, or fails. When main itself failed, the node stays Failed with main's message.
`continueOn.failed` does not cover Error.

Locally an artifact repository is a directory: `run-local --artifact-repository DIR` (or the
LocalCluster's artifact_repository). It also stands for a declared `spec.artifactRepositoryRef`,
which without it is refused before the run (Argo: "failed to resolve artifact repository").
Artifacts are stored as Argo keys them by default, DIR/<workflow name>/<pod name>/<file>:
the file itself with `archive: {none: {}}`, else `<artifact name>.tgz`.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import substitute, yaml_text
from rollguard.sandbox.executor.nodes import NodeResult, Phase
from rollguard.steps.output_files import write_atomically

# ArtifactLocation.Get() without a driver, v3.6/v3.7 (v4 words it "artifact storage is not configured; see ...")
NO_ARTIFACT_STORAGE = ("You need to configure artifact storage. More information on how to do this can be found in "
                       "the docs: https://argo-workflows.readthedocs.io/en/latest/configure-artifact-repository/")


def save_output_artifacts(
    node: NodeResult, template: dict[str, Any], variables: dict[str, str], repository: Path | None, where: str,
    host_path: Callable[[Path], Path] = lambda path: path,
) -> None:
    """Store the template's output artifacts in `repository`; on failure make a succeeded node Error, as Argo.

    `host_path` tells where this machine finds the file the container sees at an artifact's path.
    """
    errors: list[str] = []
    for artifact in (template.get("outputs") or {}).get("artifacts") or []:
        name = str(artifact.get("name"))
        seen = Path(substitute(yaml_text(artifact["path"]), variables, f"{where} output artifact {name!r}"))
        path = host_path(seen)
        if not path.exists():
            if not artifact.get("optional"):  # executor.go stageArchiveFile, CodeNotFound
                errors.append(f"{seen} no such file or directory")
            continue
        if repository is None:
            errors.append(NO_ARTIFACT_STORAGE)
            continue
        key = repository / variables["workflow.name"] / variables["pod.name"]
        try:
            _store(path, seen.name, key, name, "none" in (artifact.get("archive") or {}))
        except OSError as exc:
            raise ExecutorError(f"{where}: cannot store output artifact {name!r} in {key}: {exc}") from None
    if errors and node.phase is Phase.SUCCEEDED:  # main's failure wins over the wait container's
        node.phase = Phase.ERROR
        node.message = "Error (exit code 1): " + "".join(f"{error}; " for error in errors).rstrip()


def _store(path: Path, file_name: str, key: Path, name: str, unarchived: bool) -> None:
    key.mkdir(parents=True, exist_ok=True)
    if unarchived and path.is_dir():
        shutil.copytree(path, key / file_name, dirs_exist_ok=True)
    elif unarchived:
        write_atomically(key / file_name, path.read_bytes())
    else:
        buffer = BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(path, arcname=file_name)
        write_atomically(key / f"{name}.tgz", buffer.getvalue())
