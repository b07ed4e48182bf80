"""The local stand-in of one step's pod: a fresh directory, the environment the container would see, its volumes.

A container under Argo sees only its image's environment, the `env` its template declares and the
variables Argo's controller adds to the main container (`workflow/controller/workflowpod.go`,
`createWorkflowPod`: ARGO_CONTAINER_NAME, ARGO_NODE_ID, ARGO_INCLUDE_SCRIPT_OUTPUT, ARGO_DEADLINE).
Locally a step gets the same, and nothing of the machine's: PATH is the one thing taken from the
machine (the image's programs are this machine's), HOME, the working directory and TMPDIR are one
fresh directory per attempt (the step image sets HOME=/tmp and WORKDIR /tmp, each pod's own),
and GIT_CONFIG_NOSYSTEM keeps the machine's /etc/gitconfig out as the image has none. So no
credential, kubeconfig or gitconfig of the person running it leaks into a step.

With a step image (run-local --step-image), the container runs inside it instead: a
`ContainerImage` turns the pod (its directory, what the template and Argo give the container) into
the command that runs it there, where the fresh directory is the container's /tmp — its HOME,
TMPDIR and working directory — and the environment is the image's own plus `container_environment`.

The termination message: the kubelet gives each container an empty file at its
`terminationMessagePath` (default /dev/termination-log) and reads it when the container ends; locally
it is a file in the pod's directory, and that path, wherever it appears in an argument or env value,
is rewritten to it (as a mount is). rollguard.sandbox.executor.container turns it into the node's message.

Secret volumes: a volume `secret: {secretName: NAME}` mounted at `mountPath` is a copy of the
directory given for Secret NAME (one file per key, read-only), and every argument or env value
that starts with the mount path is rewritten to that copy (a local process cannot mount). A
Secret that was not given mounts an empty directory when the volume is `optional: true`, and
stops the step otherwise (Kubernetes would leave the pod waiting for the Secret forever).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import substitute, yaml_text
from rollguard.sandbox.executor.local_cluster import LocalCluster

# What the step image sets besides PATH and HOME (images/build.py ENV, images/Dockerfile ENV; a test checks).
IMAGE_ENVIRONMENT = {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
NO_DEADLINE = "0001-01-01T00:00:00Z"  # Go's zero time.Time in RFC3339: ARGO_DEADLINE without a deadline


@dataclass(frozen=True)
class PodIdentity:
    """What Argo's controller tells the main container about its node."""

    node_id: str
    deadline: str = NO_DEADLINE


@dataclass
class Pod:
    """One attempt of a container step: its directory (working dir, HOME, TMPDIR), environment and mounts."""

    directory: Path
    environment: dict[str, str] = field(default_factory=dict)  # as a local process: the image's stand-in + the next
    container_environment: dict[str, str] = field(default_factory=dict)  # the template's env, Argo's variables
    mounts: list[tuple[str, Path]] = field(default_factory=list)  # (mountPath, local directory)
    termination_file: Path | None = None  # the container's terminationMessagePath, locally

    def localize(self, value: str) -> str:
        """`value` with a mounted path rewritten to its local directory (the longest mount path first)."""
        for mount_path, local in sorted(self.mounts, key=lambda mount: -len(mount[0])):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(local) + value[len(mount_path.rstrip("/")):]
        return value


def prepare_pod(
    container: dict[str, Any], volumes: list[dict[str, Any]], variables: dict[str, str], where: str,
    cluster: LocalCluster, host_environment: dict[str, str], directory: Path, identity: PodIdentity,
) -> Pod:
    """Create the pod's fresh directory and work out what its container sees; ExecutorError when it cannot start."""
    directory.mkdir(parents=True)
    pod = Pod(directory)
    for mount in container.get("volumeMounts") or []:
        pod.mounts.append((str(mount["mountPath"]), _mount(mount, volumes, variables, where, cluster, directory)))
    if container.get("terminationMessagePath"):
        path = substitute(yaml_text(container["terminationMessagePath"]), variables, f"{where} terminationMessagePath")
        pod.termination_file = directory / "termination-log"
        pod.termination_file.touch()  # the kubelet creates it before the container starts
        pod.mounts.append((path, pod.termination_file))
    environment: dict[str, str] = {}
    for variable in container.get("env") or []:
        key = str(variable["name"])
        if "valueFrom" in variable:
            value = _value_from(variable["valueFrom"], key, variables, where, cluster)
            if value is not None:
                environment[key] = value
            continue
        environment[key] = pod.localize(substitute(yaml_text(variable.get("value", "")), variables,
                                                   f"{where} env {key}"))
    environment.update(ARGO_CONTAINER_NAME="main", ARGO_NODE_ID=identity.node_id, ARGO_INCLUDE_SCRIPT_OUTPUT="false",
                       ARGO_DEADLINE=identity.deadline)
    pod.container_environment = environment
    pod.environment = {"PATH": host_environment.get("PATH", os.defpath), **IMAGE_ENVIRONMENT, "HOME": str(directory),
                       "TMPDIR": str(directory), "GIT_CONFIG_NOSYSTEM": "1", **environment}
    return pod


class ContainerImage(Protocol):
    """Runs a pod's container inside an image rather than as a local process (run-local --step-image)."""

    def command(self, argv: list[str], pod: Pod) -> tuple[list[str], dict[str, str]]:
        """The command and environment that run `argv` (command + args, localized) in the pod's container."""
        ...

    def host_path(self, path: Path, pod: Pod) -> Path:
        """Where this machine finds the file the container sees at `path` (raw artifacts, outputs)."""
        ...


def _value_from(source: dict[str, Any], key: str, variables: dict[str, str], where: str,
                cluster: LocalCluster) -> str | None:
    kind, reference = ("Secret", source["secretKeyRef"]) if "secretKeyRef" in source else (
        "ConfigMap", source["configMapKeyRef"])
    name = substitute(yaml_text(reference.get("name", "")), variables, f"{where} env {key}")
    item = substitute(yaml_text(reference.get("key", "")), variables, f"{where} env {key}")
    value = cluster.key_value(kind, name, item)
    if value is None and not reference.get("optional"):
        flag = "--secret" if kind == "Secret" else "--config-map"
        raise ExecutorError(f"{where}: env {key} comes from key {item!r} of {kind} {name!r}, which this run was not "
                            f"given; pass {flag} {name}=DIR (a directory with a file {item}) or mark it optional")
    return value


def _mount(mount: dict[str, Any], volumes: list[dict[str, Any]], variables: dict[str, str], where: str,
           cluster: LocalCluster, pod_directory: Path) -> Path:
    name = str(mount["name"])
    volume = next((v for v in volumes if v.get("name") == name), None)
    if volume is None:
        raise ExecutorError(f"{where}: volumeMount {name!r} names no volume of the template or the workflow "
                            f"(volumes: {', '.join(str(v.get('name')) for v in volumes) or 'none'})")
    secret = volume["secret"]
    secret_name = substitute(yaml_text(secret.get("secretName", "")), variables, f"{where} volume {name!r}")
    local = pod_directory / "volumes" / name
    local.mkdir(parents=True)
    given = cluster.secret_directory(secret_name)
    if given is None:
        if secret.get("optional"):
            return local  # Kubernetes mounts an empty directory for a missing optional Secret
        raise ExecutorError(f"{where}: volume {name!r} mounts Secret {secret_name!r}, which this run was not given; "
                            f"pass --secret {secret_name}=DIR (one file per key) or mark the volume optional: true")
    items = secret.get("items")
    wanted = [(str(i["key"]), str(i["path"])) for i in items] if items else [
        (p.name, p.name) for p in sorted(given.iterdir()) if p.is_file()]
    for key, path in wanted:
        if not (given / key).is_file():
            if secret.get("optional"):
                continue
            raise ExecutorError(f"{where}: volume {name!r}: Secret {secret_name!r} ({given}) has no key {key!r}")
        target = local / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(given / key, target)
        target.chmod(int(secret.get("defaultMode", 0o644)) & ~0o222)  # read-only, as Kubernetes mounts it
    return local
