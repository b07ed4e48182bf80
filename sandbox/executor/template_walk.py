"""Walk a template as Argo does: input parameters, then a container step, a `suspend` step or a steps
template — its groups in order, the items of a group in parallel, `when` and `continueOn` (steps.go
executeStepGroup) — with global outputs and template metrics when a node completes.

TemplateWalker holds what a walk shares (the library, the recorded nodes, the global outputs, the step
processes); rollguard.sandbox.executor.runner's LocalExecutor builds on it with the workflow-level run.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rollguard.sandbox.executor.container import ContainerRunner
from rollguard.sandbox.executor.control import RunControl
from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import evaluate_when, substitute, yaml_text
from rollguard.sandbox.executor.loader import Library, WorkflowDefinition
from rollguard.sandbox.executor.metrics import MetricsSink, compute, metric_scope
from rollguard.sandbox.executor.nodes import Event, EventKind, EventSink, NodeResult, Phase, node_id
from rollguard.sandbox.executor.step_process import StepProcesses
from rollguard.sandbox.executor.suspend_step import run_suspend
from rollguard.sandbox.executor.workflow_spec import check_enum


@dataclass
class TemplateScope:
    """Where a template runs: the definition that resolves its `template:` names, and the variables."""

    definition: WorkflowDefinition
    variables: dict[str, str]
    exit_handler: bool = False  # inside onExit: not subject to the workflow deadline


class TemplateWalker:
    """Runs templates of `library` and records every node; the workflow-level run sets `_workflow_name`,
    `_workflow_volumes`, `_globals` and `_containers` before the first template."""

    def __init__(
        self, library: Library, on_event: EventSink, control: RunControl | None, metrics: MetricsSink | None
    ) -> None:
        self.library = library
        self.on_event = on_event
        self.nodes: list[NodeResult] = []
        self._lock = threading.Lock()
        self._processes = StepProcesses(on_event)
        self._containers: ContainerRunner | None = None
        self._workflow_name = ""
        self._workflow_volumes: list[dict[str, Any]] = []
        self.control = control or RunControl()
        self.metrics = metrics
        self._globals: dict[str, str] = {}  # workflow.outputs.parameters.* (globalName)

    def abort(self, reason: str) -> None:
        """Stop the running steps and start no more (from another thread, e.g. when the sandbox breaks)."""
        self._processes.abort(reason)

    def node_id(self, node_name: str) -> str:
        """Argo's id of the node called `node_name` (`Workflow.NodeID`: the workflow's name, FNV-32a of the node's)."""
        return node_id(self._workflow_name, node_name)

    # ----- templates ------------------------------------------------------------------------------

    def _execute(
        self, scope: TemplateScope, template_name: str, arguments: dict[str, str], display: str, node_name: str,
        where: str,
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
        local = TemplateScope(scope.definition, variables, scope.exit_handler)
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
        self, scope: TemplateScope, template: dict[str, Any], display: str, node_name: str, where: str
    ) -> NodeResult:
        node = run_suspend(template, scope.variables, scope.exit_handler, display, self.node_id(node_name), where,
                           workflow_name=self._workflow_name, control=self.control, processes=self._processes,
                           on_event=self.on_event)
        self._finish(node)
        return node

    def _run_steps(
        self, scope: TemplateScope, template: dict[str, Any], display: str, node_name: str, where: str
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
        self, scope: TemplateScope, step: dict[str, Any], variables: dict[str, str], parent: str, group_name: str,
        where: str,
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
            child_scope = TemplateScope(target, {k: v for k, v in scope.variables.items() if k.startswith("workflow.")},
                                 scope.exit_handler)
            template_name = str(reference.get("template"))
        else:
            child_scope = TemplateScope(scope.definition, {k: v for k, v in scope.variables.items()
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
        self, scope: TemplateScope, template: dict[str, Any], display: str, node_name: str, where: str
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
