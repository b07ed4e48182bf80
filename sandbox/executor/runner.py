"""Run a loaded WorkflowTemplate the way Argo would: workflow arguments, steps, `when`, `continueOn`, onExit.

The run: submission checks (validation), the workflow's mutexes (mutex), its deadline (deadline),
then the entrypoint — steps in order, the items of a group in parallel, each container step in
its own pod stand-in (container, pod, retry, artifacts) — and the exit handler with Argo's
`{{workflow.status}}` and `{{workflow.failures}}` (workflow/controller/operator.go operate(),
steps.go executeStepGroup). Node phases and messages are Argo's: a steps node with an uncovered
Failed or Error child is Failed, "child '<node id>' failed".

Also: `suspend` steps (waiting as rollguard.sandbox.executor.control describes), `argo stop` and
`argo terminate` (RunControl: running steps stopped and Failed "workflow shutdown with strategy:  Stop",
no new step started, the exit handler run after a stop and not after a terminate, the workflow
Failed "Stopped with strategy '<strategy>'"), global outputs (`globalName`, read as
`{{workflow.outputs.parameters.NAME}}`; one never set stays its literal text, as Argo leaves an
unresolved global), and template metrics (rollguard.sandbox.executor.metrics) when a node completes.
The workflow's arguments are the entrypoint's and the exit handler's arguments (operator.go
operate: executeTemplate(..., execWf.Spec.Arguments)).

Ctrl-C stops the running steps' process groups (every step of a parallel group too) and ends the
run without the exit handler, like `argo terminate`. sandbox/README.md lists what is implemented.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollguard.sandbox.executor.container import ContainerRunner
from rollguard.sandbox.executor.control import RunControl, Shutdown, WaitOutcome
from rollguard.sandbox.executor.deadline import workflow_deadline
from rollguard.sandbox.executor.errors import ExecutorError, SubmissionRefused
from rollguard.sandbox.executor.expressions import evaluate_when, substitute, yaml_text
from rollguard.sandbox.executor.loader import Library, WorkflowDefinition
from rollguard.sandbox.executor.local_cluster import LocalCluster, check_required_secrets
from rollguard.sandbox.executor.metrics import MetricsSink, compute, metric_scope
from rollguard.sandbox.executor.mutex import WorkflowLocks, mutex_keys
from rollguard.sandbox.executor.nodes import (
    Event,
    EventKind,
    EventSink,
    NodeResult,
    Phase,
    WorkflowResult,
    failures_json,
    node_id,
    print_events,
)
from rollguard.sandbox.executor.pod import ContainerImage
from rollguard.sandbox.executor.step_process import StepProcesses
from rollguard.sandbox.executor.validation import check_submission
from rollguard.sandbox.executor.workflow_spec import check_enum, resolve_workflow, workflow_parameters
from rollguard.steps.options import parse_duration


@dataclass
class _Scope:
    """Where a template runs: the definition that resolves its `template:` names, and the variables."""

    definition: WorkflowDefinition
    variables: dict[str, str]
    exit_handler: bool = False  # inside onExit: not subject to the workflow deadline


class LocalExecutor:
    """Runs WorkflowTemplates from `library`; see the module docstring for what is implemented.

    `cluster` gives the Secrets, ConfigMaps, artifact repository and lock directory the steps may use;
    `environment` is the machine's environment, of which the steps get PATH only; each step attempt
    runs in a fresh directory under `work_dir` (default: a temporary directory removed after the run).
    With `image` (run-local --step-image) every container step runs inside that image.
    """

    def __init__(
        self,
        library: Library,
        *,
        on_event: EventSink = print_events,
        cluster: LocalCluster | None = None,
        environment: dict[str, str] | None = None,
        work_dir: Path | None = None,
        image: ContainerImage | None = None,
        control: RunControl | None = None,
        metrics: MetricsSink | None = None,
    ) -> None:
        self.library = library
        self.image = image
        self.on_event = on_event
        self.cluster = cluster or LocalCluster()
        self.host_environment = dict(os.environ if environment is None else environment)
        self.work_dir = work_dir
        self.nodes: list[NodeResult] = []
        self._lock = threading.Lock()
        self._processes = StepProcesses(on_event)
        self._containers: ContainerRunner | None = None
        self._workflow_name = ""
        self._workflow_volumes: list[dict[str, Any]] = []
        self.control = control or RunControl()
        self.control.on_shutdown(self._shut_down)
        self.metrics = metrics
        self._globals: dict[str, str] = {}  # workflow.outputs.parameters.* (globalName)

    def abort(self, reason: str) -> None:
        """Stop the running steps and start no more (from another thread, e.g. when the sandbox breaks)."""
        self._processes.abort(reason)

    def _shut_down(self, strategy: Shutdown) -> None:
        what = "the exit handler still runs" if strategy is Shutdown.STOP else "no exit handler"
        verb = "stopped" if strategy is Shutdown.STOP else "terminated"
        self.on_event(Event(EventKind.NOTE, "", f"workflow {verb} (argo {strategy.value.lower()}): running steps "
                            f"stopped, none started; {what}"))
        self._processes.shutdown(strategy.value)

    # ----- the workflow ---------------------------------------------------------------------------

    def run(self, name: str, parameters: dict[str, str]) -> WorkflowResult:
        """Run WorkflowTemplate (or Workflow) `name` with workflow parameters `parameters`."""
        definition, spec = resolve_workflow(self.library, name)
        where = f"{definition.kind} {definition.name}"
        entrypoint = spec.get("entrypoint")
        if not entrypoint:
            raise SubmissionRefused("spec.entrypoint is required")
        values = workflow_parameters(spec, parameters, where)
        check_submission(self.library, definition, spec, list(values))
        repository_reference = spec.get("artifactRepositoryRef")
        if repository_reference and self.cluster.artifact_repository is None:
            # operator.go operate(): artifactRepositories.Resolve fails, the workflow is Error before anything runs
            config_map = repository_reference.get("configMap", "artifact-repositories")
            raise SubmissionRefused(f'failed to resolve artifact repository: configmaps "{config_map}" not found; '
                                    "locally run-local --artifact-repository DIR stands for it")
        workflow_name = f"{definition.name}-local-{uuid.uuid4().hex[:5]}"
        variables = {f"workflow.parameters.{key}": value for key, value in values.items()}
        variables.update({
            "workflow.name": workflow_name,
            "workflow.namespace": "local",
            "workflow.uid": str(uuid.uuid4()),
            "workflow.serviceAccountName": "local",
            "workflow.status": "Running",  # until the entrypoint ends; the exit handler sees the outcome
        })
        self.on_event(Event(EventKind.NOTE, "", f"workflow {workflow_name} ({where})"))
        for note in self.library.ignored_fields:
            self.on_event(Event(EventKind.NOTE, "", f"no local meaning, not used: {note}"))
        self._workflow_name = workflow_name
        self._workflow_volumes = list(spec.get("volumes") or [])
        in_reach = self._templates_in_reach(definition)
        # A global output nobody has set yet stays its own text when substituted (Argo: allowUnresolved).
        self._globals = {f"workflow.outputs.parameters.{g}": "{{workflow.outputs.parameters." + g + "}}"
                         for g in _global_names(in_reach)}
        check_required_secrets(in_reach, self._workflow_volumes, variables, self.cluster)
        locks = WorkflowLocks(mutex_keys(spec, variables, variables["workflow.namespace"]), self.cluster.lock_dir,
                              workflow_name, self.on_event, self._processes.abort_reason)
        with locks, self.control.watching(workflow_name), self._pods_directory() as pods_directory:
            self._containers = ContainerRunner(self._processes, self.cluster, self.host_environment, pods_directory,
                                               self.on_event, self.image)
            with workflow_deadline(spec, variables, where, self._containers, self._processes, self.on_event):
                return self._run_workflow(definition, spec, variables, entrypoint, workflow_name, where, values)

    def _run_workflow(
        self, definition: WorkflowDefinition, spec: dict[str, Any], variables: dict[str, str], entrypoint: str,
        workflow_name: str, where: str, arguments: dict[str, str],
    ) -> WorkflowResult:
        scope = _Scope(definition, variables)
        try:
            entry = self._execute(scope, entrypoint, arguments, entrypoint, workflow_name, f"{where} entrypoint")
        except ExecutorError as exc:
            entry = NodeResult(entrypoint, entrypoint, Phase.ERROR, message=str(exc), node_id=workflow_name)
            self._finish(entry)
        phase, message = entry.phase, entry.message
        shutdown = self.control.shutdown
        if shutdown is not None and phase in (Phase.FAILED, Phase.ERROR):
            message = f"Stopped with strategy '{shutdown.value}'"  # operator.go operate(): the workflow's message
        exit_node: NodeResult | None = None
        exit_template = spec.get("onExit")
        if exit_template and self.control.shutdown is Shutdown.TERMINATE:
            self.on_event(Event(EventKind.NOTE, "", f"exit handler {exit_template} not run: the workflow was "
                                "terminated (argo terminate skips exit handlers)"))
        elif exit_template:
            # workflow/controller/operator.go operate(): status from the entry node's phase, failures = every
            # Failed or Error node, both set before the exit handler runs
            exit_variables = {**variables, "workflow.status": phase.value,
                              "workflow.failures": failures_json(self.nodes, workflow_name)}
            self.on_event(Event(EventKind.NOTE, "", f"running exit handler {exit_template} (workflow.status="
                                f"{phase.value})"))
            try:
                exit_node = self._execute(_Scope(definition, exit_variables, True), exit_template, arguments, "onExit",
                                          f"{workflow_name}.onExit", f"{where} onExit")
            except ExecutorError as exc:
                exit_node = NodeResult("onExit", exit_template, Phase.ERROR, message=str(exc),
                                       node_id=self.node_id(f"{workflow_name}.onExit"))
                self._finish(exit_node)
            if exit_node.phase in (Phase.FAILED, Phase.ERROR) and phase is Phase.SUCCEEDED:
                # operator.go: a succeeded workflow whose exit handler failed takes the exit node's phase and message
                phase, message = exit_node.phase, exit_node.message
        return WorkflowResult(workflow_name, phase, list(self.nodes), exit_node, message)

    def _templates_in_reach(self, definition: WorkflowDefinition) -> list[dict[str, Any]]:
        """The definition's templates and those of the WorkflowTemplates its steps refer to."""
        templates = list(definition.spec.get("templates") or [])
        referred = {str(step["templateRef"].get("name")) for template in templates
                    for group in template.get("steps") or [] for step in (group if isinstance(group, list) else [group])
                    if step.get("templateRef")}
        for name in sorted(referred & set(self.library.definitions)):
            templates.extend(self.library.definitions[name].spec.get("templates") or [])
        return templates

    @contextmanager
    def _pods_directory(self) -> Iterator[Path]:
        if self.work_dir is not None:
            directory = self.work_dir / self._workflow_name  # one directory per run: a second run starts fresh
            directory.mkdir(parents=True)
            yield directory
            return
        with tempfile.TemporaryDirectory(prefix="rollguard-pods-") as temporary:
            yield Path(temporary)

    def node_id(self, node_name: str) -> str:
        """Argo's id of the node called `node_name` (`Workflow.NodeID`: the workflow's name, FNV-32a of the node's)."""
        return node_id(self._workflow_name, node_name)

    # ----- templates ------------------------------------------------------------------------------

    def _execute(
        self, scope: _Scope, template_name: str, arguments: dict[str, str], display: str, node_name: str, where: str
    ) -> NodeResult:
        template = scope.definition.template(template_name, where)
        where = f"{scope.definition.kind} {scope.definition.name} template {template_name!r}"
        variables = dict(scope.variables)
        with self._lock:
            variables.update(self._globals)
        for parameter in (template.get("inputs") or {}).get("parameters") or []:
            key = str(parameter["name"])
            if key in arguments:
                value = arguments[key]
            elif parameter.get("value") is not None:
                value = substitute(yaml_text(parameter["value"]), variables, f"{where} input {key!r}")
            elif parameter.get("default") is not None:
                value = substitute(yaml_text(parameter["default"]), variables, f"{where} input {key!r}")
            else:
                raise ExecutorError(f"{where}: input parameter {key!r} was not passed and has no default")
            check_enum(parameter, value, f"{where} input {key!r}")
            variables[f"inputs.parameters.{key}"] = value
        local = _Scope(scope.definition, variables, scope.exit_handler)
        if "container" in template:
            node = self._run_container(local, template, display, node_name, where)
        elif "suspend" in template:
            node = self._run_suspend(local, template, display, node_name, where)
        else:
            node = self._run_steps(local, template, display, node_name, where)
            node.node_id = self.node_id(node_name)
        self._completed(template, variables, node, where)
        return node

    def _completed(self, template: dict[str, Any], variables: dict[str, str], node: NodeResult, where: str) -> None:
        """A node is done: its global outputs are exported (whatever its phase, operator.go podReconciliation
        addOutputsToGlobalScope) and its template's metrics emitted."""
        for parameter in (template.get("outputs") or {}).get("parameters") or []:
            if parameter.get("globalName") and str(parameter["name"]) in node.outputs:
                with self._lock:
                    self._globals[f"workflow.outputs.parameters.{parameter['globalName']}"] = node.outputs[
                        str(parameter["name"])]
        if not template.get("metrics"):
            return
        emissions, problems = compute(template, metric_scope(variables, node), where)
        if self.metrics is not None:
            problems += self.metrics.record(emissions)
        for problem in problems:  # Argo: the workflow condition MetricsError; the workflow goes on
            self.on_event(Event(EventKind.NOTE, node.display_name, f"metric not emitted: {problem}"))

    def _run_suspend(
        self, scope: _Scope, template: dict[str, Any], display: str, node_name: str, where: str
    ) -> NodeResult:
        """A `suspend` step: wait for a resume, its duration, a stop or the deadline (operator.go executeSuspend)."""
        started = time.time()
        raw = (template.get("suspend") or {}).get("duration")
        duration_s = None
        if raw is not None:
            text = substitute(yaml_text(raw), scope.variables, f"{where} suspend.duration")
            try:
                duration_s = parse_duration(text)
            except ValueError as exc:
                raise ExecutorError(f"{where}: suspend.duration {text!r}: {exc}") from None
        how = (f"run-local --resume {self._workflow_name} (or --stop, --terminate), or SIGUSR1 to run-local"
               if self.control.approve_after_s is None else f"resumed after {self.control.approve_after_s:g} s")
        self.on_event(Event(EventKind.STARTED, display, f"suspended, waiting for `argo resume`: {how}"))
        outcome = self.control.wait_suspended(duration_s, self._processes.deadline_passed,
                                              self._processes.abort_reason, scope.exit_handler)
        phase, message = Phase.SUCCEEDED, ""  # util.ResumeWorkflow: "Resumed by: <user>" only with a user's identity
        if outcome in (WaitOutcome.RESUMED, WaitOutcome.DURATION):
            why = "resumed (argo resume)" if outcome is WaitOutcome.RESUMED else "its suspend.duration passed"
            self.on_event(Event(EventKind.NOTE, display, why))
        elif outcome is WaitOutcome.STOPPED:
            strategy = self.control.shutdown.value if self.control.shutdown else "Stop"
            phase, message = Phase.FAILED, f"Stopped with strategy '{strategy}'"
        elif outcome is WaitOutcome.DEADLINE:
            phase, message = Phase.FAILED, "Step exceeded its deadline"
        node = NodeResult(display, str(template["name"]), phase, message=message, started_at=started,
                          finished_at=time.time(), node_id=self.node_id(node_name))
        self._finish(node)
        return node

    def _run_steps(
        self, scope: _Scope, template: dict[str, Any], display: str, node_name: str, where: str
    ) -> NodeResult:
        started = time.time()
        step_variables = dict(scope.variables)
        failure = ""
        for index, group in enumerate(template["steps"]):
            items = group if isinstance(group, list) else [group]
            group_name = f"{node_name}[{index}]"
            if len(items) == 1:
                results = [self._run_step(scope, items[0], step_variables, display, group_name, where)]
            else:
                with ThreadPoolExecutor(max_workers=len(items)) as pool:
                    futures = [pool.submit(self._run_step, scope, item, dict(step_variables), display, group_name,
                                           where) for item in items]
                    try:
                        results = [future.result() for future in futures]
                    except BaseException:  # Ctrl-C lands here: stop the group's processes, or the pool waits
                        self.abort("interrupted")
                        raise
            for item, (node, tolerated) in zip(items, results, strict=True):
                step_name = str(item["name"])
                prefix = f"steps.{step_name}"
                step_variables[f"{prefix}.status"] = node.phase.value
                if node.exit_code is not None:
                    step_variables[f"{prefix}.exitCode"] = str(node.exit_code)
                for key, value in node.outputs.items():
                    step_variables[f"{prefix}.outputs.parameters.{key}"] = value
                if node.phase in (Phase.FAILED, Phase.ERROR) and not tolerated and not failure:
                    # workflow/controller/steps.go executeStepGroup: the group (and so this steps node) is Failed
                    # for a Failed or an Error child that continueOn does not cover
                    failure = f"child '{node.node_id}' failed"
            if failure:
                break
        node = NodeResult(display, str(template["name"]), Phase.FAILED if failure else Phase.SUCCEEDED,
                          message=failure, started_at=started)
        if not failure:
            node.outputs = self._outputs_from_parameters(template, step_variables, where)
        node.finished_at = time.time()
        return node

    def _run_step(
        self, scope: _Scope, step: dict[str, Any], variables: dict[str, str], parent: str, group_name: str, where: str
    ) -> tuple[NodeResult, bool]:
        step_name = str(step["name"])
        display = f"{parent}.{step_name}" if parent else step_name
        node_name = f"{group_name}.{step_name}"
        step_where = f"{where} step {step_name!r}"
        continue_on = step.get("continueOn") or {}
        if step.get("when") is not None:
            condition = substitute(yaml_text(step["when"]), variables, f"{step_where} when")
            if not evaluate_when(condition, f"{step_where} when"):
                node = NodeResult(display, str(step.get("template") or step.get("templateRef")), Phase.SKIPPED,
                                  message=f"when '{condition}' evaluated false", node_id=self.node_id(node_name))
                self._finish(node, EventKind.SKIPPED)
                return node, True
        arguments = {
            str(p["name"]): substitute(yaml_text(p.get("value", "")), variables, f"{step_where} argument {p['name']!r}")
            for p in (step.get("arguments") or {}).get("parameters") or []
        }
        if "templateRef" in step:
            reference = step["templateRef"]
            target = self.library.get(str(reference.get("name")), f"{step_where} templateRef")
            child_scope = _Scope(target, {k: v for k, v in scope.variables.items() if k.startswith("workflow.")},
                                 scope.exit_handler)
            template_name = str(reference.get("template"))
        else:
            child_scope = _Scope(scope.definition, {k: v for k, v in scope.variables.items()
                                                    if k.startswith("workflow.")}, scope.exit_handler)
            template_name = str(step["template"])
        try:
            node = self._execute(child_scope, template_name, arguments, display, node_name, step_where)
        except ExecutorError as exc:
            node = NodeResult(display, template_name, Phase.ERROR, message=str(exc), node_id=self.node_id(node_name))
            self._finish(node)
        tolerated = (node.phase is Phase.FAILED and bool(continue_on.get("failed"))) or (
            node.phase is Phase.ERROR and bool(continue_on.get("error")))
        return node, tolerated

    def _outputs_from_parameters(
        self, template: dict[str, Any], variables: dict[str, str], where: str
    ) -> dict[str, str]:
        outputs: dict[str, str] = {}
        for parameter in (template.get("outputs") or {}).get("parameters") or []:
            key = str(parameter["name"])
            source = parameter.get("valueFrom") or {}
            if "parameter" in source:
                try:
                    outputs[key] = substitute(yaml_text(source["parameter"]), variables, f"{where} output {key!r}")
                    continue
                except ExecutorError:
                    if source.get("default") is None:
                        raise
                outputs[key] = yaml_text(source["default"])
            elif "path" in source:
                raise ExecutorError(f"{where}: output {key!r} reads a file, but a steps template has no container")
        return outputs

    def _run_container(
        self, scope: _Scope, template: dict[str, Any], display: str, node_name: str, where: str
    ) -> NodeResult:
        assert self._containers is not None  # set by run()
        volumes = list(template.get("volumes") or []) + self._workflow_volumes
        identity = self.node_id(node_name)
        # Argo's v2 pod name (util/workflow GeneratePodName): <workflow>-<template>-<FNV-32a of the node name>
        pod_name = f"{self._workflow_name}-{template['name']}-{identity.rsplit('-', 1)[-1]}"
        variables = {**scope.variables, "pod.name": pod_name}
        node = self._containers.run(template, variables, volumes, display, identity, where, scope.exit_handler)
        node.node_id = identity
        self._finish(node)
        return node

    def _finish(self, node: NodeResult, kind: EventKind = EventKind.FINISHED) -> None:
        with self._lock:
            self.nodes.append(node)
        if kind is EventKind.SKIPPED:
            text = f"skipped ({node.message})"
        else:
            text = node.phase.value + (f" ({node.message})" if node.message else "")
            shown = {k: v for k, v in node.outputs.items() if "\n" not in v and len(v) <= 60}
            if shown:
                text += " outputs " + ", ".join(f"{k}={v!r}" for k, v in shown.items())
        self.on_event(Event(kind, node.display_name, text, node))


def _global_names(templates: list[dict[str, Any]]) -> list[str]:
    """Every globalName the templates' output parameters export."""
    return [str(parameter["globalName"]) for template in templates
            for parameter in (template.get("outputs") or {}).get("parameters") or [] if parameter.get("globalName")]
