"""The workflow a run starts from: a Workflow's workflowTemplateRef merged, the workflow parameters checked."""

from __future__ import annotations

from typing import Any

from rollguard.sandbox.executor.errors import ExecutorError, SubmissionRefused
from rollguard.sandbox.executor.expressions import yaml_text
from rollguard.sandbox.executor.loader import Library, WorkflowDefinition


def resolve_workflow(library: Library, name: str) -> tuple[WorkflowDefinition, dict[str, Any]]:
    """The definition whose templates run and its spec (a Workflow's workflowTemplateRef merged in)."""
    definition = library.get(name, "run")
    spec = dict(definition.spec)
    reference = spec.get("workflowTemplateRef")
    if reference:
        if str(reference.get("name")) not in library.definitions:
            # operator.go setExecWorkflow: the informer's NotFound marks the Workflow Error before anything runs
            raise SubmissionRefused(f'workflowtemplate.argoproj.io "{reference.get("name")}" not found')
        base = library.definitions[str(reference.get("name"))]
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


def workflow_parameters(spec: dict[str, Any], given: dict[str, str], where: str) -> dict[str, str]:
    """Every workflow parameter's value: `given` (-p) over the spec's; ExecutorError for unknown or missing ones."""
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
        if value is None:  # validate.go validateArgumentsValues
            raise SubmissionRefused(f"spec.arguments.{key}.value or spec.arguments.{key}.valueFrom is required; "
                                    f"pass -p {key}=VALUE")
        values[key] = yaml_text(value)
        allowed = [yaml_text(option) for option in parameter.get("enum") or []]
        if allowed and values[key] not in allowed:
            raise SubmissionRefused(f"spec.arguments.{key}.value should be present in spec.arguments.{key}.enum list "
                                    f"({', '.join(allowed)})")
    return values


def check_enum(parameter: dict[str, Any], value: str, where: str) -> None:
    """ExecutorError when `value` is not in the parameter's enum (if it has one)."""
    allowed = parameter.get("enum")
    if allowed and value not in [yaml_text(option) for option in allowed]:
        raise ExecutorError(f"{where}: {value!r} is not one of {', '.join(yaml_text(o) for o in allowed)}")
