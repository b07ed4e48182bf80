"""A container template run locally: its command, raw input artifacts, timeout, retries, output parameters.

The image is not used: `command + args` run as a local process, each attempt in a fresh Pod stand-in
(rollguard.sandbox.executor.pod: only the declared environment, its own working directory and HOME).
With a pod start delay (run-local --pod-start-delay) every attempt's main waits that long first, as a
pod's scheduling, image pull and container creation would make it.
With a ContainerImage (run-local --step-image) they run inside that image instead, and the paths of
raw artifacts and outputs are the container's, which it maps to this machine's.
"""

from __future__ import annotations

import itertools
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

from rollguard.sandbox.executor.artifacts import save_output_artifacts
from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import substitute, yaml_text
from rollguard.sandbox.executor.local_cluster import LocalCluster
from rollguard.sandbox.executor.nodes import Event, EventKind, EventSink, NodeResult, Phase
from rollguard.sandbox.executor.pod import NO_DEADLINE, ContainerImage, Pod, PodIdentity, prepare_pod
from rollguard.sandbox.executor.retry import RetryStrategy
from rollguard.sandbox.executor.step_process import StepProcesses
from rollguard.steps.options import parse_duration
from rollguard.steps.output_files import write_atomically


class ContainerRunner:
    """Runs container templates through `processes`; each attempt in a fresh Pod (rollguard.sandbox.executor.pod)."""

    def __init__(
        self, processes: StepProcesses, cluster: LocalCluster, host_environment: dict[str, str], work_dir: Path,
        on_event: EventSink, image: ContainerImage | None = None, pod_start_delay_s: float = 0.0,
    ) -> None:
        self.processes = processes
        self.image = image
        self.cluster = cluster
        self.host_environment = host_environment
        self.work_dir = work_dir.absolute()  # a step's paths into its pod directory hold from its own working dir
        self.on_event = on_event
        self.workflow_deadline: float | None = None  # Unix time of the workflow's activeDeadlineSeconds
        self._pods = itertools.count(1)
        self.pod_start_delay_s = pod_start_delay_s  # each attempt's pod takes this long to start (its node Pending)

    def run(
        self, template: dict[str, Any], variables: dict[str, str], volumes: list[dict[str, Any]], display: str,
        node_id: str, where: str, exit_handler: bool = False,
    ) -> NodeResult:
        """Run the container template (with its retries); the node carries its phase and output parameters.

        `volumes` are the template's and the workflow's volumes, for the container's volumeMounts.
        """
        container = template["container"]
        timeout_s = _timeout(template, variables, where)
        strategy = RetryStrategy.of(template, variables, where)
        attempts: list[NodeResult] = []
        while True:
            # each attempt is a new pod: its own directory, init (raw artifacts), main, wait (outputs)
            attempt_variables = {**variables, "retries": str(len(attempts))} if strategy else variables
            command = [substitute(yaml_text(part), attempt_variables, f"{where} container command")
                       for part in (container.get("command") or []) + (container.get("args") or [])]
            pod_directory = self.work_dir / f"{next(self._pods):03d}-{_file_name(display)}"
            pod = prepare_pod(container, volumes, attempt_variables, where, self.cluster, self.host_environment,
                              pod_directory, PodIdentity(node_id, self._deadline_text(exit_handler)))
            self._write_raw_artifacts(template, attempt_variables, where, pod)
            argv = [pod.localize(part) for part in command]
            spawn, environment = (None, pod.environment) if self.image is None else self.image.command(argv, pod)
            node = self.processes.run(argv, environment, pod.directory, display, str(template["name"]), timeout_s,
                                      len(attempts), exit_handler, command=spawn,
                                      pod_start_s=self.pod_start_delay_s)
            _add_termination_message(node, container, pod.termination_file)
            self._read_outputs(node, template, attempt_variables, where, pod)  # the wait container: parameters, ...
            save_output_artifacts(node, template, attempt_variables, self.cluster.artifact_repository, where,
                                  partial(self._host_path, pod=pod))
            attempts.append(node)
            if strategy is None:
                return node
            decision = strategy.after(attempts, None if exit_handler else self.workflow_deadline,
                                      self.processes.shutdown_strategy)
            if not decision.retry:
                if decision.message is not None:
                    node.message = decision.message
                return node
            limit = "no limit" if strategy.limit is None else f"{strategy.limit}"
            self.on_event(Event(EventKind.NOTE, display, f"retry {len(attempts)} of {limit} in {decision.wait_s:.1f} s "
                                f"(lastRetry.exitCode {RetryStrategy.scope(attempts)['lastRetry.exitCode']})"))
            self.processes.sleep(decision.wait_s)

    def _deadline_text(self, exit_handler: bool) -> str:
        """ARGO_DEADLINE (workflowpod.go getDeadline): the workflow's deadline, none for the exit handler's pods."""
        if self.workflow_deadline is None or exit_handler:
            return NO_DEADLINE
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.workflow_deadline))

    def _host_path(self, path: Path, pod: Pod) -> Path:
        """Where this machine finds the file the container sees at `path` (the same path without an image)."""
        return path if self.image is None else self.image.host_path(path, pod)

    def _write_raw_artifacts(self, template: dict[str, Any], variables: dict[str, str], where: str, pod: Pod) -> None:
        """Input artifacts with `raw.data` are written to their (substituted) path, as Argo does in the pod."""
        for artifact in (template.get("inputs") or {}).get("artifacts") or []:
            if "raw" not in artifact:
                continue
            name = artifact.get("name")
            path = Path(substitute(yaml_text(artifact["path"]), variables, f"{where} artifact {name!r} path"))
            path = self._host_path(path, pod)
            data = substitute(yaml_text(artifact["raw"].get("data", "")), variables, f"{where} artifact {name!r}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(path, data)
            except OSError as exc:
                raise ExecutorError(f"{where}: cannot write raw artifact {name!r} to {path}: {exc}") from None

    def _read_outputs(
        self, node: NodeResult, template: dict[str, Any], variables: dict[str, str], where: str, pod: Pod
    ) -> None:
        for parameter in (template.get("outputs") or {}).get("parameters") or []:
            key = str(parameter["name"])
            source = parameter.get("valueFrom") or {}
            default = source.get("default")
            if "path" not in source:
                raise ExecutorError(f"{where}: output {key!r} of a container must come from valueFrom.path")
            path = Path(substitute(yaml_text(source["path"]), variables, f"{where} output {key!r}"))
            # workflow/executor/executor.go SaveParameters: the file's text less one trailing newline; a missing
            # file takes valueFrom.default, else the wait container fails (and saves no later parameter): the
            # node is Error when main exited 0, Failed (main's message) otherwise
            try:
                node.outputs[key] = self._host_path(path, pod).read_text().removesuffix("\n")
            except OSError:
                if default is not None:
                    node.outputs[key] = yaml_text(default)
                    continue
                if node.phase is Phase.SUCCEEDED:
                    node.phase = Phase.ERROR
                    node.message = (f"Error (exit code 1): open /var/run/argo/outputs/parameters{path}: no such file "
                                    f"or directory")
                return


def _add_termination_message(node: NodeResult, container: dict[str, Any], termination_file: Path | None) -> None:
    """A main container that exited non-zero: Argo's node message is `Error (exit code N): <termination message>`
    (operator.go inferFailedReason). The kubelet reads the message from the terminationMessagePath file, or,
    with FallbackToLogsOnError and an empty file, from the log's last 80 lines / 2048 bytes."""
    if node.phase is not Phase.FAILED or node.message != f"Error (exit code {node.exit_code})":
        return
    text = ""
    if termination_file is not None and termination_file.is_file():
        text = termination_file.read_text(errors="replace")[:4096]  # the kubelet keeps 4096 bytes
    if not text and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        text = "\n".join(node.log_tail).encode()[-2048:].decode(errors="ignore")
    if text:
        node.message = f"{node.message}: {text}"


def _timeout(template: dict[str, Any], variables: dict[str, str], where: str) -> float | None:
    raw = template.get("timeout", template.get("activeDeadlineSeconds"))
    if raw is None:
        return None
    text = substitute(yaml_text(raw), variables, f"{where} timeout")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ExecutorError(f"{where}: timeout {text!r}: {exc}") from None


def _file_name(display: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", display)[-80:]
