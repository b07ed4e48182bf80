"""Argo Workflows' schema for each supported release line, offline, with unknown fields refused.

Hera 7.1's models are generated from Argo v4.0.5's OpenAPI spec (`hera/workflows/models/__init__.py`
says so) and silently drop keys they do not know. Here every key of a document is looked up instead:
it must be a field of the model at that place, in the Argo version being checked; then the document
must validate in pydantic's strict mode (a string where Argo wants an integer is an error, as it is
for the controller's Go decoder and the 4.x CRDs).

The other versions differ from v4.0.5 by the fields in `VERSION_FIELDS`. They were read from
`api/jsonschema/schema.json` of argoproj/argo-workflows at each tag named, comparing the properties of
every definition reachable from Workflow and WorkflowTemplate (216 of them; Hera 7.1's field names
equal v4.0.5's for all of them, and no property changed its type between the tags except
`Cache.configMap`, listed below). Within a release line fields are only ever added (checked tag by
tag from v3.6.0 to v4.1.2), so the first release of a line is its narrowest schema: a document valid
for v3.6.0, v3.7.0, v4.0.0 and v4.1.0 uses no field that any 3.6.x–4.1.x release lacks.

`crd_rule_violations` adds the rules the 4.x CRDs make the API server enforce
(`manifests/base/crds/full/argoproj.io_workflowtemplates.yaml`, identical for these rules in v4.0.0
and v4.1.2): name patterns, enums, list sizes.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pydantic
from hera.workflows import models as hera_models
from pydantic import BaseModel, RootModel

HERA_SCHEMA_VERSION = "v4.0.5"
HERA_PREFIX = "hera.workflows.models."
WF = "io.argoproj.workflow.v1alpha1."
CORE = "io.k8s.api.core.v1."

# What each CRD rule below is named after, for error messages.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9]*$")  # templates[].name, steps[][].name; maxLength 128
PARAMETER_NAME_PATTERN = re.compile(r"^[-a-zA-Z0-9_]+$")  # every parameters[].name
RETRY_POLICIES = {"Always", "OnFailure", "OnError", "OnTransientError"}
POD_GC_STRATEGIES = {"", "OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"}
TEMPLATE_TYPES = ("container", "script", "dag", "steps", "resource", "suspend", "containerSet", "data", "http",
                  "plugin")  # fmt: skip


@dataclass(frozen=True)
class VersionFields:
    """How one Argo release's schema differs from Hera's (v4.0.5), definition by definition."""

    removed: frozenset[tuple[str, str]] = frozenset()
    # Fields Hera does not have: the model of their value, or None when it is not modelled here (using
    # such a field fails the check as unverifiable rather than passing unseen).
    added: dict[tuple[str, str], type[BaseModel] | None] = field(default_factory=dict)


_PLUGIN_ARTIFACTS = {(WF + name, "plugin") for name in ("Artifact", "ArtifactLocation", "ArtifactPaths",
                                                          "ArtifactRepository")}  # fmt: skip
_NODE_STATUS_4X = {(WF + "NodeStatus", name) for name in ("failedPodRestarts", "restartingPodUID", "taskResultSynced")}
# Cache.configMap is a ConfigMapKeySelector before 4.0 and a LocalObjectReference in Hera: refused as unmodelled.
_CACHE_CONFIG_MAP = (WF + "Cache", "configMap")
_LEGACY_SYNCHRONIZATION: dict[tuple[str, str], type[BaseModel] | None] = {
    (WF + "Synchronization", "mutex"): hera_models.Mutex,
    (WF + "Synchronization", "semaphore"): hera_models.SemaphoreRef,
}

VERSION_FIELDS: dict[str, VersionFields] = {
    "v3.6.0": VersionFields(
        removed=frozenset(
            _PLUGIN_ARTIFACTS
            | _NODE_STATUS_4X
            | {
                _CACHE_CONFIG_MAP,
                (WF + "Backoff", "cap"),
                (WF + "Mutex", "database"),
                (WF + "SemaphoreRef", "database"),
                (WF + "Template", "annotations"),
                (CORE + "Lifecycle", "stopSignal"),
                (CORE + "PodSecurityContext", "seLinuxChangePolicy"),
                (CORE + "PodSecurityContext", "supplementalGroupsPolicy"),
                (CORE + "ResourceClaim", "request"),
                (CORE + "Volume", "image"),
            }
        ),
        added={
            **_LEGACY_SYNCHRONIZATION,
            _CACHE_CONFIG_MAP: None,
            (WF + "Template", "priority"): None,
            (WF + "WorkflowSpec", "podPriority"): None,
        },
    ),
    "v3.7.0": VersionFields(
        removed=frozenset(_PLUGIN_ARTIFACTS | _NODE_STATUS_4X | {_CACHE_CONFIG_MAP}),
        added={**_LEGACY_SYNCHRONIZATION, _CACHE_CONFIG_MAP: None},
    ),
    "v4.0.0": VersionFields(),  # the same field names as v4.0.5, Hera's
    "v4.1.0": VersionFields(
        added={
            (WF + "ContainerNode", "restartPolicyRules"): None,
            (WF + "HTTPArtifact", "saveStreamViaFile"): None,
            (WF + "S3Artifact", "addressingStyle"): None,
            (WF + "S3ArtifactRepository", "addressingStyle"): None,
            (WF + "ScriptTemplate", "restartPolicyRules"): None,
            (WF + "Template", "pendingTimeout"): None,
            (WF + "Template", "podResources"): None,
            (WF + "Template", "resourceClaims"): None,
            (WF + "UserContainer", "restartPolicyRules"): None,
            (WF + "WorkflowSpec", "executorPlugins"): None,
            (WF + "WorkflowSpec", "podResources"): None,
            (WF + "WorkflowSpec", "resourceClaims"): None,
            (CORE + "Container", "restartPolicyRules"): None,
            (CORE + "EnvVarSource", "fileKeyRef"): None,
            (CORE + "VolumeProjection", "podCertificate"): None,
        }
    ),
}
SUPPORTED_LINES = {"3.6": "v3.6.0", "3.7": "v3.7.0", "4.0": "v4.0.0", "4.1": "v4.1.0"}


def definition_name(model: type[BaseModel]) -> str:
    """`io.argoproj.workflow.v1alpha1.Template` for Hera's Template: Hera's module path is Argo's definition."""
    return model.__module__.removeprefix(HERA_PREFIX) + "." + model.__name__


def _unwrap(annotation: Any) -> Iterator[tuple[str, Any]]:
    """The shapes a field's value may take: ("model", cls), ("list", item), ("dict", value) or ("scalar", t)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _unwrap(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            if argument is not type(None):
                yield from _unwrap(argument)
    elif origin is list:
        yield ("list", typing.get_args(annotation)[0])
    elif origin is dict:
        yield ("dict", typing.get_args(annotation)[1])
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield ("model", annotation)
    else:
        yield ("scalar", annotation)


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """JSON key -> annotation of a Hera model."""
    return {(info.alias or name): info.annotation for name, info in model.model_fields.items()}


def unknown_fields(document: Any, model: type[BaseModel], version: str) -> list[str]:
    """Every key of `document` that `model` (as Argo `version` has it) does not know, as `path: message`."""
    delta = VERSION_FIELDS[version]
    problems: list[str] = []

    def walk_value(value: Any, annotation: Any, path: str) -> None:
        for kind, inner in _unwrap(annotation):
            if kind == "model" and isinstance(value, dict):
                walk_model(value, inner, path)
                return
            if kind == "list" and isinstance(value, list):
                for index, item in enumerate(value):
                    walk_value(item, inner, f"{path}[{index}]")
                return
            if kind == "dict" and isinstance(value, dict):
                for key, item in value.items():
                    walk_value(item, inner, f"{path}.{key}")
                return
        # a scalar, or a value of the wrong shape: pydantic's strict validation reports the latter

    def walk_model(value: dict[str, Any], current: type[BaseModel], path: str) -> None:
        if issubclass(current, RootModel):
            walk_value(value, current.model_fields["root"].annotation, path)
            return
        definition = definition_name(current)
        known = _fields(current)
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if (definition, key) in delta.added:
                added = delta.added[(definition, key)]
                if added is None:
                    problems.append(f"{where}: a field of {definition} in Argo {version} this check does not model")
                    continue
                walk_value(item, added, where)
                problems.extend(_strict_errors(added, item, where))
                continue
            if key not in known or (definition, key) in delta.removed:
                problems.append(f"{where}: {definition} has no field {key!r} in Argo {version}")
                continue
            walk_value(item, known[key], where)

    walk_model(document, model, "")
    return problems


def _strict_errors(model: type[BaseModel], value: Any, path: str) -> list[str]:
    try:
        model.model_validate_json(json.dumps(value), strict=True)
    except pydantic.ValidationError as exc:
        return [f"{path}.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}".replace("..", ".")
                for error in exc.errors()]  # fmt: skip
    return []


def crd_rule_violations(document: dict[str, Any]) -> list[str]:
    """The 4.x CRDs' rules for the parts rollguard's objects use (names, enums, list sizes, one template type)."""
    problems: list[str] = []
    spec = document.get("spec") or {}

    def parameters(block: dict[str, Any] | None, where: str) -> None:
        for parameter in (block or {}).get("parameters") or []:
            name = str(parameter.get("name", ""))
            if not PARAMETER_NAME_PATTERN.match(name):
                problems.append(f"{where}: parameter name {name!r} does not match {PARAMETER_NAME_PATTERN.pattern}")
            if "enum" in parameter and not parameter["enum"]:
                problems.append(f"{where}: parameter {name!r} has an empty enum (minItems 1)")

    def name(value: str, where: str) -> None:
        if not NAME_PATTERN.match(value) or len(value) > 128:
            problems.append(f"{where}: name {value!r} does not match {NAME_PATTERN.pattern} (at most 128 characters)")

    parameters(spec.get("arguments"), "spec.arguments")
    strategy = (spec.get("podGC") or {}).get("strategy", "")
    if strategy not in POD_GC_STRATEGIES:
        problems.append(f"spec.podGC.strategy {strategy!r} is not one of {sorted(POD_GC_STRATEGIES)}")
    for template in spec.get("templates") or []:
        where = f"spec.templates[{template.get('name')}]"
        name(str(template.get("name", "")), where)
        kinds = [kind for kind in TEMPLATE_TYPES if kind in template]
        if len(kinds) > 1:
            problems.append(f"{where}: template must have at most one template type, has {kinds}")
        inputs = template.get("inputs") or {}
        if len(inputs.get("parameters") or []) > 500:
            problems.append(f"{where}: more than 500 input parameters")
        parameters(inputs, f"{where}.inputs")
        parameters(template.get("outputs"), f"{where}.outputs")
        policy = (template.get("retryStrategy") or {}).get("retryPolicy")
        if policy is not None and policy not in RETRY_POLICIES:
            problems.append(f"{where}.retryStrategy.retryPolicy {policy!r} is not one of {sorted(RETRY_POLICIES)}")
        if "steps" in template and not template["steps"]:
            problems.append(f"{where}.steps: empty (minItems 1)")
        for group in template.get("steps") or []:
            for step in group:
                name(str(step.get("name", "")), f"{where}.steps")
                parameters(step.get("arguments"), f"{where}.steps[{step.get('name')}].arguments")
    return problems


def schema_errors(document: dict[str, Any], version: str) -> list[str]:
    """Everything wrong with a Workflow or WorkflowTemplate for Argo `version` (a key of VERSION_FIELDS)."""
    models: dict[str, type[BaseModel]] = {
        "Workflow": hera_models.Workflow,
        "WorkflowTemplate": hera_models.WorkflowTemplate,
    }
    model = models[document["kind"]]
    return unknown_fields(document, model, version) + _strict_errors(model, document, document["kind"]) + (
        crd_rule_violations(document)
    )
