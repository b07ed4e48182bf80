"""Run a loaded WorkflowTemplate the way Argo would: the workflow-level run — arguments, locks, deadline, onExit.

The run: submission checks (validation), the workflow's mutexes (mutex), its deadline (deadline),
then the entrypoint — walked by rollguard.sandbox.executor.template_walk: steps in order, the items of
a group in parallel, `when` and `continueOn`, each container step in its own pod stand-in (container,
pod, retry, artifacts) — and the exit handler with Argo's
`{{workflow.status}}` and `{{workflow.failures}}` (workflow/controller/operator.go operate(),
steps.go executeStepGroup). Node phases and messages are Argo's: a steps node with an uncovered
Failed or Error child is Failed, "child '<node id>' failed".

Also: `suspend` steps (suspend_step, waiting as rollguard.sandbox.executor.control describes), `argo stop` and
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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rollguard.sandbox.executor.container import ContainerRunner
from rollguard.sandbox.executor.control import RunControl, Shutdown
from rollguard.sandbox.executor.deadline import workflow_deadline
from rollguard.sandbox.executor.errors import ExecutorError, SubmissionRefused
from rollguard.sandbox.executor.loader import Library, WorkflowDefinition
from rollguard.sandbox.executor.local_cluster import LocalCluster, check_required_secrets
from rollguard.sandbox.executor.metrics import MetricsSink
from rollguard.sandbox.executor.mutex import WorkflowLocks, mutex_keys
from rollguard.sandbox.executor.nodes import (
    Event,
    EventKind,
    EventSink,
    NodeResult,
    Phase,
    WorkflowResult,
    failures_json,
    print_events,
)
from rollguard.sandbox.executor.pod import ContainerImage
from rollguard.sandbox.executor.template_walk import TemplateScope, TemplateWalker
from rollguard.sandbox.executor.validation import check_submission
from rollguard.sandbox.executor.workflow_spec import resolve_workflow, workflow_parameters


class LocalExecutor(TemplateWalker):
    """Runs WorkflowTemplates from `library`; see the module docstring for what is implemented.

    `cluster` gives the Secrets, ConfigMaps, artifact repository and lock directory the steps may use;
    `environment` is the machine's environment, of which the steps get PATH only; each step attempt
    runs in a fresh directory under `work_dir` (default: a temporary directory removed after the run).
    With `image` (run-local --step-image) every container step runs inside that image. Every container step
    attempt (the exit handler's too) waits `pod_start_delay_s` before its main starts, its node Pending, as
    a pod start would (run-local --pod-start-delay); steps and suspend nodes do not.
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
        pod_start_delay_s: float = 0.0,
    ) -> None:
        super().__init__(library, on_event, control, metrics)
        self.pod_start_delay_s = pod_start_delay_s
        self.image = image
        self.cluster = cluster or LocalCluster()
        self.host_environment = dict(os.environ if environment is None else environment)
        self.work_dir = work_dir
        self.control.on_shutdown(self._shut_down)

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
                                               self.on_event, self.image, self.pod_start_delay_s)
            with workflow_deadline(spec, variables, where, self._containers, self._processes, self.on_event):
                return self._run_workflow(definition, spec, variables, entrypoint, workflow_name, where, values)

    def _run_workflow(
        self, definition: WorkflowDefinition, spec: dict[str, Any], variables: dict[str, str], entrypoint: str,
        workflow_name: str, where: str, arguments: dict[str, str],
    ) -> WorkflowResult:
        scope = TemplateScope(definition, variables)
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
                exit_scope = TemplateScope(definition, exit_variables, True)
                exit_node = self._execute(exit_scope, exit_template, arguments, "onExit", f"{workflow_name}.onExit",
                                          f"{where} onExit")
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


def _global_names(templates: list[dict[str, Any]]) -> list[str]:
    """Every globalName the templates' output parameters export."""
    return [str(parameter["globalName"]) for template in templates
            for parameter in (template.get("outputs") or {}).get("parameters") or [] if parameter.get("globalName")]
