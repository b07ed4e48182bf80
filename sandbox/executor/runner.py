"""Run a loaded WorkflowTemplate the way Argo would, each container step as a local process.

Implemented: workflow arguments (`-p`), template inputs with defaults and enums, `{{...}}`
substitution, steps in order (parallel within a group), `when`, `continueOn`, `retryStrategy`
(limit, retryPolicy, backoff), `timeout`/`activeDeadlineSeconds`, output parameters from
`valueFrom.path` files (read after the step, surrounding whitespace stripped) or
`valueFrom.parameter`, input artifacts with `raw.data` (written to their path before the step),
`templateRef` across loaded files, and `onExit` with `{{workflow.status}}`. Optional artifacts
(other than raw inputs) are not stored anywhere; the run's notes list them.

A container step runs `command + args` with its `env` on top of this process's environment; the
image is not used. A command `rollguard` runs this installation's CLI (`python -m
rollguard.steps.cli`). An env value from a Secret or ConfigMap (`valueFrom`) is taken from this
process's environment variable of the same name (unset and optional: left unset). Ctrl-C stops the
running steps' process groups (every step of a parallel group too) and ends the run without the
exit handler, like `argo terminate`. Step processes also die with this process, even on SIGKILL.
With `image_steps` (--step-image) a step runs inside the step image, with only its template's env.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from rollguard.sandbox.executor.errors import ExecutorAborted, ExecutorError
from rollguard.sandbox.executor.expressions import evaluate_when, substitute
from rollguard.sandbox.executor.loader import Library, WorkflowDefinition
from rollguard.sandbox.processes import die_with_parent, stop_process_group
from rollguard.sandbox.step_image import ImageSteps
from rollguard.steps.options import parse_duration


class Phase(str, Enum):
    """Outcome of a node, named as Argo names them."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERROR = "Error"
    SKIPPED = "Skipped"


@dataclass
class NodeResult:
    """One executed (or skipped) template invocation."""

    display_name: str
    template: str
    phase: Phase
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    message: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0


@dataclass
class WorkflowResult:
    """The run's phase, every node in the order it finished, and the exit handler's node (if any)."""

    name: str
    phase: Phase
    nodes: list[NodeResult]
    exit_handler: NodeResult | None
    message: str

    def node(self, display_name: str) -> NodeResult:
        """The node with this display name (KeyError when it did not run)."""
        for node in self.nodes:
            if node.display_name == display_name:
                return node
        raise KeyError(display_name)


class EventKind(str, Enum):
    """What happened: a step started, printed a line, finished, or was skipped; or a note."""

    STARTED = "started"
    LOG = "log"
    FINISHED = "finished"
    SKIPPED = "skipped"
    NOTE = "note"


@dataclass(frozen=True)
class Event:
    """A progress event; `node` is set for FINISHED and SKIPPED."""

    kind: EventKind
    step: str
    text: str
    node: NodeResult | None = None


EventSink = Callable[[Event], None]


def print_events(event: Event) -> None:
    """Default sink: one prefixed line per event on stdout, so a step's log streams as it runs."""
    if event.kind is EventKind.LOG:
        line = f"[{event.step}] {event.text}"
    elif event.kind is EventKind.NOTE:
        line = f"-- {event.text}"
    else:
        line = f"== {event.step}: {event.text}"
    print(line, flush=True)


@dataclass
class _Scope:
    """Where a template runs: the definition that resolves its `template:` names, and the variables."""

    definition: WorkflowDefinition
    variables: dict[str, str]


class LocalExecutor:
    """Runs WorkflowTemplates from `library`; see the module docstring for what is implemented."""

    def __init__(
        self,
        library: Library,
        *,
        on_event: EventSink = print_events,
        environment: dict[str, str] | None = None,
        cwd: Path | None = None,
        image_steps: ImageSteps | None = None,
    ) -> None:
        self.library = library
        self.image_steps = image_steps  # --step-image: container steps run inside the image
        self.on_event = on_event
        self.environment = dict(os.environ if environment is None else environment)
        self.cwd = cwd
        self.nodes: list[NodeResult] = []
        self._lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._abort_reason: str | None = None

    def abort(self, reason: str) -> None:
        """Stop the running steps and start no more (from another thread, e.g. when the sandbox breaks)."""
        with self._lock:
            self._abort_reason = reason
            running = list(self._running.values())
        for process in running:
            stop_process_group(process.pid, None, grace_s=2.0)

    # ----- the workflow ---------------------------------------------------------------------------

    def run(self, name: str, parameters: dict[str, str]) -> WorkflowResult:
        """Run WorkflowTemplate (or Workflow) `name` with workflow parameters `parameters`."""
        definition, spec = self._resolve_workflow(name)
        where = f"{definition.kind} {definition.name}"
        entrypoint = spec.get("entrypoint")
        if not entrypoint:
            raise ExecutorError(f"{where}: spec.entrypoint is missing")
        values = self._workflow_parameters(spec, parameters, where)
        workflow_name = f"{definition.name}-local-{uuid.uuid4().hex[:5]}"
        variables = {f"workflow.parameters.{key}": value for key, value in values.items()}
        variables.update({
            "workflow.name": workflow_name,
            "workflow.namespace": "local",
            "workflow.uid": str(uuid.uuid4()),
            "workflow.serviceAccountName": "local",
        })
        for note in self.library.ignored_fields:
            self.on_event(Event(EventKind.NOTE, "", f"no local meaning, not used: {note}"))
        scope = _Scope(definition, variables)
        try:
            entry = self._execute(scope, entrypoint, {}, entrypoint, f"{where} entrypoint")
        except ExecutorError as exc:
            entry = NodeResult(entrypoint, entrypoint, Phase.ERROR, message=str(exc))
            self._finish(entry)
        phase, message = entry.phase, entry.message
        exit_node: NodeResult | None = None
        exit_template = spec.get("onExit")
        if exit_template:
            exit_variables = {**variables, "workflow.status": phase.value,
                              "workflow.failures": "[]" if phase is Phase.SUCCEEDED else "[{}]"}
            self.on_event(Event(EventKind.NOTE, "", f"running exit handler {exit_template} (workflow.status="
                                f"{phase.value})"))
            try:
                exit_node = self._execute(_Scope(definition, exit_variables), exit_template, {}, "onExit",
                                          f"{where} onExit")
            except ExecutorError as exc:
                exit_node = NodeResult("onExit", exit_template, Phase.ERROR, message=str(exc))
                self._finish(exit_node)
            if exit_node.phase is not Phase.SUCCEEDED and phase is Phase.SUCCEEDED:
                phase, message = Phase.FAILED, f"exit handler failed: {exit_node.message}"
        return WorkflowResult(workflow_name, phase, list(self.nodes), exit_node, message)

    def _resolve_workflow(self, name: str) -> tuple[WorkflowDefinition, dict[str, Any]]:
        definition = self.library.get(name, "run")
        spec = dict(definition.spec)
        reference = spec.get("workflowTemplateRef")
        if reference:
            base = self.library.get(str(reference.get("name")), f"Workflow {definition.name} workflowTemplateRef")
            merged = dict(base.spec)
            for key in ("entrypoint", "onExit", "arguments"):
                if spec.get(key):
                    merged[key] = spec[key]
            if spec.get("arguments"):
                given = {p["name"]: p for p in (spec["arguments"].get("parameters") or [])}
                base_parameters = (base.spec.get("arguments") or {}).get("parameters") or []
                combined = [given.pop(p["name"], p) for p in base_parameters] + list(given.values())
                merged["arguments"] = {"parameters": combined}
            return base, merged
        return definition, spec

    def _workflow_parameters(self, spec: dict[str, Any], given: dict[str, str], where: str) -> dict[str, str]:
        declared = (spec.get("arguments") or {}).get("parameters") or []
        names = {str(p["name"]) for p in declared}
        unknown = sorted(set(given) - names)
        if unknown:
            raise ExecutorError(f"{where}: no workflow parameter named {', '.join(unknown)}; it has: "
                                f"{', '.join(sorted(names)) or 'none'}")
        values: dict[str, str] = {}
        for parameter in declared:
            key = str(parameter["name"])
            value = given.get(key, parameter.get("value", parameter.get("default")))
            if value is None:
                raise ExecutorError(f"{where}: workflow parameter {key!r} has no value; pass -p {key}=VALUE")
            values[key] = _text(value)
            _check_enum(parameter, values[key], f"{where} parameter {key!r}")
        return values

    # ----- templates ------------------------------------------------------------------------------

    def _execute(
        self, scope: _Scope, template_name: str, arguments: dict[str, str], display: str, where: str
    ) -> NodeResult:
        template = scope.definition.template(template_name, where)
        where = f"{scope.definition.kind} {scope.definition.name} template {template_name!r}"
        variables = dict(scope.variables)
        for parameter in (template.get("inputs") or {}).get("parameters") or []:
            key = str(parameter["name"])
            if key in arguments:
                value = arguments[key]
            elif parameter.get("value") is not None:
                value = substitute(_text(parameter["value"]), variables, f"{where} input {key!r}")
            elif parameter.get("default") is not None:
                value = substitute(_text(parameter["default"]), variables, f"{where} input {key!r}")
            else:
                raise ExecutorError(f"{where}: input parameter {key!r} was not passed and has no default")
            _check_enum(parameter, value, f"{where} input {key!r}")
            variables[f"inputs.parameters.{key}"] = value
        local = _Scope(scope.definition, variables)
        if "container" in template:
            return self._run_container(local, template, display, where)
        return self._run_steps(local, template, display, where)

    def _run_steps(self, scope: _Scope, template: dict[str, Any], display: str, where: str) -> NodeResult:
        started = time.time()
        step_variables = dict(scope.variables)
        failure = ""
        for group in template["steps"]:
            items = group if isinstance(group, list) else [group]
            if len(items) == 1:
                results = [self._run_step(scope, items[0], step_variables, display, where)]
            else:
                with ThreadPoolExecutor(max_workers=len(items)) as pool:
                    futures = [pool.submit(self._run_step, scope, item, dict(step_variables), display, where)
                               for item in items]
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
                    failure = f"step {step_name} {node.phase.value.lower()}: {node.message}".rstrip(": ")
            if failure:
                break
        node = NodeResult(display, str(template["name"]), Phase.FAILED if failure else Phase.SUCCEEDED,
                          message=failure, started_at=started)
        if not failure:
            node.outputs = self._outputs_from_parameters(template, step_variables, where)
        node.finished_at = time.time()
        return node

    def _run_step(
        self, scope: _Scope, step: dict[str, Any], variables: dict[str, str], parent: str, where: str
    ) -> tuple[NodeResult, bool]:
        step_name = str(step["name"])
        display = f"{parent}.{step_name}" if parent else step_name
        step_where = f"{where} step {step_name!r}"
        continue_on = step.get("continueOn") or {}
        if step.get("when") is not None:
            condition = substitute(_text(step["when"]), variables, f"{step_where} when")
            if not evaluate_when(condition, f"{step_where} when"):
                node = NodeResult(display, str(step.get("template") or step.get("templateRef")), Phase.SKIPPED,
                                  message=f"when `{condition}` is false")
                self._finish(node, EventKind.SKIPPED)
                return node, True
        arguments = {
            str(p["name"]): substitute(_text(p.get("value", "")), variables, f"{step_where} argument {p['name']!r}")
            for p in (step.get("arguments") or {}).get("parameters") or []
        }
        if "templateRef" in step:
            reference = step["templateRef"]
            target = self.library.get(str(reference.get("name")), f"{step_where} templateRef")
            child_scope = _Scope(target, {k: v for k, v in scope.variables.items() if k.startswith("workflow.")})
            template_name = str(reference.get("template"))
        else:
            child_scope = _Scope(scope.definition, {k: v for k, v in scope.variables.items()
                                                    if k.startswith("workflow.")})
            template_name = str(step["template"])
        try:
            node = self._execute(child_scope, template_name, arguments, display, step_where)
        except ExecutorError as exc:
            node = NodeResult(display, template_name, Phase.ERROR, message=str(exc))
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
                    outputs[key] = substitute(_text(source["parameter"]), variables, f"{where} output {key!r}")
                    continue
                except ExecutorError:
                    if source.get("default") is None:
                        raise
                outputs[key] = _text(source["default"])
            elif "path" in source:
                raise ExecutorError(f"{where}: output {key!r} reads a file, but a steps template has no container")
        return outputs

    # ----- containers -----------------------------------------------------------------------------

    def _run_container(self, scope: _Scope, template: dict[str, Any], display: str, where: str) -> NodeResult:
        container = template["container"]
        variables = scope.variables
        argv = [substitute(_text(part), variables, f"{where} container command")
                for part in (container.get("command") or []) + (container.get("args") or [])]
        environment = dict(self.environment) if self.image_steps is None else {}  # in the image: declared only
        for variable in container.get("env") or []:
            key = str(variable["name"])
            if "valueFrom" in variable:
                source = next(iter(variable["valueFrom"].values()))
                if key in self.environment:
                    environment[key] = self.environment[key]
                elif not source.get("optional"):
                    raise ExecutorError(f"{where}: env {key} comes from a Secret/ConfigMap; locally it is taken "
                                        f"from this process's environment variable {key}, which is not set")
                continue
            environment[key] = substitute(_text(variable.get("value", "")), variables, f"{where} env {key}")
        self._write_raw_artifacts(template, variables, where, display)
        timeout_s = _timeout(template, variables, where)
        retry = template.get("retryStrategy") or {}
        limit = int(substitute(_text(retry.get("limit", 0)), variables, f"{where} retryStrategy.limit"))
        policy = retry.get("retryPolicy", "OnFailure")
        backoff = retry.get("backoff") or {}
        delay_s = parse_duration(_text(backoff.get("duration", "0"))) if backoff.get("duration") else 0.0
        factor = float(backoff.get("factor", 1) or 1)
        attempt = 0
        while True:
            node = self._run_process(argv, environment, display, str(template["name"]), timeout_s, attempt)
            retryable = (node.phase is Phase.FAILED and policy in ("OnFailure", "Always")) or (
                node.phase is Phase.ERROR and policy in ("OnError", "Always"))
            if node.phase is Phase.SUCCEEDED or not retryable or attempt >= limit:
                break
            attempt += 1
            self.on_event(Event(EventKind.NOTE, display, f"retry {attempt} of {limit} in {delay_s:.1f} s"))
            time.sleep(delay_s)
            delay_s *= factor
        self._read_outputs(node, template, variables, where)
        self._finish(node)
        return node

    def _write_raw_artifacts(
        self, template: dict[str, Any], variables: dict[str, str], where: str, display: str = ""
    ) -> None:
        """Input artifacts with `raw.data` are written to their (substituted) path, as Argo does in the pod."""
        for artifact in (template.get("inputs") or {}).get("artifacts") or []:
            if "raw" not in artifact:
                continue
            name = artifact.get("name")
            path = Path(substitute(_text(artifact["path"]), variables, f"{where} artifact {name!r} path"))
            path = self.image_steps.host_path(display, path) if self.image_steps else path
            data = substitute(_text(artifact["raw"].get("data", "")), variables, f"{where} artifact {name!r}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(data)
            except OSError as exc:
                raise ExecutorError(f"{where}: cannot write raw artifact {name!r} to {path}: {exc}") from None

    def _run_process(
        self, argv: list[str], environment: dict[str, str], display: str, template: str, timeout_s: float | None,
        attempt: int,
    ) -> NodeResult:
        command = _resolve_command(argv)
        if self.image_steps is not None:
            command, environment = self.image_steps.command(display, argv, environment)
        started = time.time()
        if self._abort_reason is not None:
            raise ExecutorAborted(f"run aborted before {display} started: {self._abort_reason}")
        shown = " ".join(argv) + (f" (attempt {attempt + 1})" if attempt else "")
        self.on_event(Event(EventKind.STARTED, display, shown))
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=environment, cwd=self.cwd,
                                       start_new_session=True,
                                       # dies with us even on SIGKILL; safe from a worker thread, which
                                       # waits for the process (the signal follows the forking thread)
                                       preexec_fn=die_with_parent)
        except OSError as exc:
            return NodeResult(display, template, Phase.ERROR, message=f"cannot start {argv[0]}: {exc}",
                              started_at=started, finished_at=time.time())
        with self._lock:
            self._running[process.pid] = process
            aborted = self._abort_reason is not None
        if aborted:  # abort() ran between Popen and the registration: it could not see this process
            stop_process_group(process.pid, None, grace_s=2.0)
        timed_out = threading.Event()
        timer = None
        if timeout_s is not None:
            def expire() -> None:
                timed_out.set()
                stop_process_group(process.pid, None, grace_s=2.0)

            timer = threading.Timer(timeout_s, expire)
            timer.daemon = True
            timer.start()
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                self.on_event(Event(EventKind.LOG, display, raw.decode(errors="replace").rstrip("\n")))
            code = process.wait()
        except BaseException:
            stop_process_group(process.pid, process, grace_s=3.0)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._running.pop(process.pid, None)
        if self._abort_reason is not None:
            raise ExecutorAborted(f"run aborted while {display} ran: {self._abort_reason}")
        if timed_out.is_set():
            return NodeResult(display, template, Phase.FAILED, code, message=f"timed out after {timeout_s:g} s",
                              started_at=started, finished_at=time.time())
        phase = Phase.SUCCEEDED if code == 0 else Phase.FAILED
        message = "" if code == 0 else f"exit code {code}"
        return NodeResult(display, template, phase, code, message=message, started_at=started,
                          finished_at=time.time())

    def _read_outputs(self, node: NodeResult, template: dict[str, Any], variables: dict[str, str], where: str) -> None:
        for parameter in (template.get("outputs") or {}).get("parameters") or []:
            key = str(parameter["name"])
            source = parameter.get("valueFrom") or {}
            default = source.get("default", parameter.get("default"))
            if "path" not in source:
                raise ExecutorError(f"{where}: output {key!r} of a container must come from valueFrom.path")
            path = Path(substitute(_text(source["path"]), variables, f"{where} output {key!r}"))
            path = self.image_steps.host_path(node.display_name, path) if self.image_steps else path
            try:
                node.outputs[key] = path.read_text().strip()
            except OSError:
                if default is not None:
                    node.outputs[key] = _text(default)
                elif node.phase is Phase.SUCCEEDED:
                    node.phase = Phase.ERROR
                    node.message = f"output parameter {key!r}: the step did not write {path}"

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


def _resolve_command(argv: list[str]) -> list[str]:
    if argv and argv[0] == "rollguard":
        return [sys.executable, "-m", "rollguard.steps.cli", *argv[1:]]
    return argv


def _timeout(template: dict[str, Any], variables: dict[str, str], where: str) -> float | None:
    raw = template.get("timeout", template.get("activeDeadlineSeconds"))
    if raw is None:
        return None
    text = substitute(_text(raw), variables, f"{where} timeout")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ExecutorError(f"{where}: timeout {text!r}: {exc}") from None


def _check_enum(parameter: dict[str, Any], value: str, where: str) -> None:
    allowed = parameter.get("enum")
    if allowed and value not in [_text(option) for option in allowed]:
        raise ExecutorError(f"{where}: {value!r} is not one of {', '.join(_text(o) for o in allowed)}")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
