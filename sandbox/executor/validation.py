"""What Argo checks when a workflow is submitted, checked before anything runs, with Argo's words.

Argo's server (`argo submit`) and its controller (first reconcile: `invalid spec: ...`, nothing
runs, no exit handler) run `ValidateWorkflow` (workflow/validate/validate.go, v3.6.19): the
entrypoint and onExit templates must exist (`template name '%s' undefined`), a templateRef must
name a loaded WorkflowTemplate and one of its templates (`template reference %s.%s not found`),
and every `{{...}}` whose prefix Argo checks (item. steps. inputs. outputs. pod. workflow. tasks.)
must resolve in its scope (`failed to resolve {{%s}}`): a step sees the steps before it, not
after. Messages are wrapped as validate.go wraps them (`templates.<t>.steps[<i>].<step> ...`).

Beyond Argo, a reference Argo accepts but the local executor cannot fill (`{{pod.name}}` aside:
`{{steps.X.startedAt}}`, `{{workflow.labels.x}}`, `{{=expressions}}`...) is refused as an
unsupported feature, before anything runs too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from rollguard.sandbox.executor.errors import SubmissionRefused, UnsupportedFeature
from rollguard.sandbox.executor.loader import Library, WorkflowDefinition

CHECKED_PREFIXES = ("item.", "steps.", "inputs.", "outputs.", "pod.", "workflow.", "tasks.")
RETRY_VARIABLES = ("retries", "lastRetry.exitCode", "lastRetry.status", "lastRetry.duration", "lastRetry.message")
# resolveAllVariables lets these through whatever the scope (validate.go)
_ARGO_ALWAYS = ("outputs.", "workflow.creationTimestamp", "workflow.scheduledTime", "workflow.duration", "tasks.name",
                "steps.name", "node.name")
_TAG = re.compile(r"\{\{(.*?)\}\}")
# PodGCStrategy.IsValid (pkg/apis/workflow/v1alpha1/workflow_types.go); podGC itself has no local meaning
POD_GC_STRATEGIES = ("", "OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess")


class _Refusal(Exception):
    """An Argo validation error on its way up, wrapped at each level as validate.go wraps it."""


class _Scope:
    """Names Argo's validation accepts here, and the subset the local executor fills at run time."""

    def __init__(self, argo: set[str], local: set[str]) -> None:
        self.argo = set(argo)
        self.local = set(local)

    def add(self, name: str, *, local: bool) -> None:
        self.argo.add(name)
        if local:
            self.local.add(name)


def check_submission(library: Library, definition: WorkflowDefinition, spec: dict[str, Any],
                     parameter_names: list[str]) -> None:
    """Raise SubmissionRefused (Argo's message) or UnsupportedFeature for what would not run; else return."""
    _SubmissionCheck(library, definition, spec, parameter_names).check()


class _SubmissionCheck:
    def __init__(self, library: Library, definition: WorkflowDefinition, spec: dict[str, Any],
                 parameter_names: list[str]) -> None:
        self.library = library
        self.definition = definition
        self.spec = spec
        local = {"workflow.name", "workflow.namespace", "workflow.uid", "workflow.serviceAccountName",
                 "workflow.status", *(f"workflow.parameters.{name}" for name in parameter_names)}
        argo = local | {"workflow.mainEntrypoint", "workflow.parameters", "workflow.parameters.json",
                        "workflow.annotations", "workflow.annotations.json", "workflow.labels", "workflow.labels.json"}
        if spec.get("onExit"):
            local.add("workflow.failures")
            argo.add("workflow.failures")
        for template in self._templates():  # outputs exported with globalName (validate.go addOutputsToScope)
            for parameter in (template.get("outputs") or {}).get("parameters") or []:
                if parameter.get("globalName"):
                    local.add(f"workflow.outputs.parameters.{parameter['globalName']}")
                    argo.add(f"workflow.outputs.parameters.{parameter['globalName']}")
        self.globals = _Scope(argo, local)
        self.validated: set[tuple[str, str]] = set()

    def _templates(self) -> list[dict[str, Any]]:
        """The definition's templates and those of every WorkflowTemplate loaded beside it."""
        found = list(self.definition.spec.get("templates") or [])
        for name, other in self.library.definitions.items():
            if name != self.definition.name:
                found.extend(other.spec.get("templates") or [])
        return found

    def check(self) -> None:
        try:
            entrypoint = self.spec.get("entrypoint")
            if not entrypoint:
                raise _Refusal("spec.entrypoint is required")
            strategy = (self.spec.get("podGC") or {}).get("strategy", "")
            if strategy not in POD_GC_STRATEGIES:
                raise _Refusal(f"podGC.strategy unknown strategy '{strategy}'")
            self._named(self.definition, str(entrypoint))
            if self.spec.get("onExit"):
                self._named(self.definition, str(self.spec["onExit"]))
            for template in self.definition.spec.get("templates") or []:
                try:
                    self._template(self.definition, template)
                except _Refusal as exc:
                    raise _Refusal(f"templates.{template.get('name')} {exc}") from None
        except _Refusal as exc:
            raise SubmissionRefused(str(exc)) from None

    def _named(self, definition: WorkflowDefinition, name: str) -> dict[str, Any]:
        template = _find(definition, name)
        if template is None:
            raise _Refusal(f"template name '{name}' undefined")
        self._template(definition, template)
        return template

    def _called(self, definition: WorkflowDefinition, step: dict[str, Any]) -> dict[str, Any]:
        """The template a step calls, validated (in the WorkflowTemplate its templateRef names)."""
        reference = step.get("templateRef")
        if reference is None:
            return self._named(definition, str(step.get("template")))
        target = self.library.definitions.get(str(reference.get("name")))
        template = _find(target, str(reference.get("template"))) if target is not None else None
        if target is None or template is None:  # templateresolution: workflow template / template not found
            raise _Refusal(f"template reference {reference.get('name')}.{reference.get('template')} not found")
        self._template(target, template)
        return template

    def _template(self, definition: WorkflowDefinition, template: dict[str, Any]) -> None:
        key = (definition.name, str(template.get("name")))
        if key in self.validated:  # validate.go caches by template scope and id (and so ends recursion)
            return
        self.validated.add(key)
        name = str(template.get("name"))
        scope = _Scope(self.globals.argo, self.globals.local)
        for parameter in (template.get("inputs") or {}).get("parameters") or []:
            scope.add(f"inputs.parameters.{parameter['name']}", local=True)
        for artifact in (template.get("inputs") or {}).get("artifacts") or []:
            scope.add(f"inputs.artifacts.{artifact.get('name')}", local=False)
            scope.add(f"inputs.artifacts.{artifact.get('name')}.path", local=False)
        if template.get("retryStrategy") is not None:  # `retries` is filled in a template, lastRetry.* are not
            for variable in RETRY_VARIABLES:
                scope.add(variable, local=variable == "retries")
        where = f"{definition.kind} {definition.name} template {name!r}"
        if "steps" in template:
            self._steps(definition, template, scope)
            self._tags(template.get("outputs"), scope, where, f"templates.{name}.outputs ")
            self._metrics(template, scope, where)
            return
        scope.add("inputs.parameters", local=False)
        scope.add("pod.name", local=True)
        for artifact in (template.get("outputs") or {}).get("artifacts") or []:
            scope.add(f"outputs.artifacts.{artifact.get('name')}.path", local=False)
        self._tags({k: v for k, v in template.items() if k != "metrics"}, scope, where, f"templates.{name}: ")
        self._metrics(template, scope, where)

    def _metrics(self, template: dict[str, Any], scope: _Scope, where: str) -> None:
        """Template metrics see the node's own variables too (steps.go prepareMetricScope)."""
        if not template.get("metrics"):
            return
        metric_scope = _Scope(scope.argo, scope.local)
        for variable in ("status", "duration", "exitCode", "retries"):
            metric_scope.add(variable, local=True)
        for parameter in (template.get("outputs") or {}).get("parameters") or []:
            metric_scope.add(f"outputs.parameters.{parameter.get('name')}", local=True)
        self._tags(template["metrics"], metric_scope, f"{where} metrics", f"templates.{template.get('name')}: ")

    def _steps(self, definition: WorkflowDefinition, template: dict[str, Any], scope: _Scope) -> None:
        name = str(template.get("name"))
        seen: set[str] = set()
        for index, group in enumerate(template.get("steps") or []):
            for step in group if isinstance(group, list) else [group]:
                step_name = str(step.get("name") or "")
                prefix = f"templates.{name}.steps[{index}].{step_name} "
                if not step_name:
                    raise _Refusal(f"templates.{name}.steps[{index}].name is required")
                if step_name in seen:
                    raise _Refusal(f"templates.{name}.steps[{index}].name '{step_name}' is not unique")
                seen.add(step_name)
                scope.add(f"steps.{step_name}.status", local=True)
                try:
                    called = self._called(definition, step)
                except _Refusal as exc:
                    raise _Refusal(prefix + str(exc)) from None
                where = f"{definition.kind} {definition.name} template {name!r} step {step_name!r}"
                self._tags(step, scope, where, f"templates.{name}.steps ")
                self._add_outputs(scope, f"steps.{step_name}", called)
                self._check_arguments(step, called, prefix)

    @staticmethod
    def _add_outputs(scope: _Scope, prefix: str, called: dict[str, Any]) -> None:
        for field in ("id", "startedAt", "finishedAt", "hostNodeName"):
            scope.add(f"{prefix}.{field}", local=False)
        if "container" in called:  # Template.HasOutput(): leaf templates
            scope.add(f"{prefix}.outputs.result", local=False)
            scope.add(f"{prefix}.exitCode", local=True)
        for parameter in (called.get("outputs") or {}).get("parameters") or []:
            scope.add(f"{prefix}.outputs.parameters.{parameter.get('name')}", local=True)
        for artifact in (called.get("outputs") or {}).get("artifacts") or []:
            scope.add(f"{prefix}.outputs.artifacts.{artifact.get('name')}", local=False)

    @staticmethod
    def _check_arguments(step: dict[str, Any], called: dict[str, Any], prefix: str) -> None:
        given = {str(p.get("name")) for p in (step.get("arguments") or {}).get("parameters") or []}
        for parameter in (called.get("inputs") or {}).get("parameters") or []:
            if parameter["name"] not in given and parameter.get("value") is None and parameter.get("default") is None:
                # common.ProcessArgs / SubstituteParams, wrapped by validateTemplate and validateSteps
                raise _Refusal(f"{prefix}templates.{called.get('name')} inputs.parameters.{parameter['name']} "
                               "had no value")

    @staticmethod
    def _tags(value: Any, scope: _Scope, where: str, argo_prefix: str) -> None:
        for text in _strings(value):
            for match in _TAG.finditer(text):
                raw = match.group(1)
                tag = raw.strip()
                if tag.startswith("="):
                    raise UnsupportedFeature("expression template {{=...}}", where, "use plain {{...}} references")
                if tag in scope.local:
                    continue
                if not tag.startswith(CHECKED_PREFIXES):
                    raise UnsupportedFeature(f"{{{{{tag}}}}}", where, "Argo passes an unknown variable on as text; "
                                             "the local executor refuses it")
                if tag in scope.argo or tag.startswith(_ARGO_ALWAYS) or tag.startswith(("workflow.annotations.",
                                                                                         "workflow.labels.")):
                    raise UnsupportedFeature(f"{{{{{tag}}}}}", where, "Argo fills it, the local executor does not")
                raise _Refusal(f"{argo_prefix}failed to resolve {{{{{raw}}}}}")


def _find(definition: WorkflowDefinition | None, name: str) -> dict[str, Any] | None:
    if definition is None:
        return None
    return next((t for t in definition.spec.get("templates") or [] if t.get("name") == name), None)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
