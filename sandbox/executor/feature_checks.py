"""Check every Argo feature a loaded WorkflowTemplate (or Workflow) uses, before anything runs.

The first feature the local executor does not implement raises UnsupportedFeature naming the feature
and where it is; Kubernetes-only fields (no local meaning) are appended to the caller's `ignored` list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rollguard.sandbox.executor.errors import ExecutorError, UnsupportedFeature
from rollguard.sandbox.executor.retry_expression import RetryExpression

if TYPE_CHECKING:
    from rollguard.sandbox.executor.loader import WorkflowDefinition

# Fields that only shape the pod or the Kubernetes object: no effect when a step is a local process.
K8S_ONLY_SPEC = {
    "serviceAccountName", "ttlStrategy", "podGC", "workflowMetadata", "podMetadata", "securityContext",
    "nodeSelector", "tolerations", "affinity", "imagePullSecrets", "archiveLogs", "podDisruptionBudget",
    "automountServiceAccountToken", "executor", "priority", "priorityClassName", "schedulerName",
    "hostNetwork", "dnsPolicy", "dnsConfig", "podPriorityClassName",
}
SUPPORTED_SPEC = {"entrypoint", "arguments", "templates", "onExit", "workflowTemplateRef", "volumes",
                  "artifactRepositoryRef", "synchronization", "activeDeadlineSeconds"}
K8S_ONLY_TEMPLATE = {
    "metadata", "serviceAccountName", "securityContext", "nodeSelector", "tolerations", "affinity",
    "podSpecPatch", "priorityClassName", "schedulerName", "automountServiceAccountToken",
    "hostAliases",
}
SUPPORTED_TEMPLATE = {
    "name", "inputs", "outputs", "container", "steps", "suspend", "retryStrategy", "timeout", "activeDeadlineSeconds",
    "volumes", "archiveLocation", "metrics",
}
K8S_ONLY_CONTAINER = {
    "image", "imagePullPolicy", "resources", "securityContext", "ports", "livenessProbe",
    "readinessProbe", "startupProbe", "name",
}
# terminationMessagePath/Policy: the message of a failed step, as the kubelet reads it (rollguard.sandbox.executor.pod)
SUPPORTED_CONTAINER = {"command", "args", "env", "volumeMounts", "terminationMessagePath", "terminationMessagePolicy"}
TERMINATION_MESSAGE_POLICIES = ("File", "FallbackToLogsOnError")
METRIC_TYPES = ("counter", "gauge", "histogram")
SUPPORTED_STEP = {"name", "template", "templateRef", "arguments", "when", "continueOn"}
SUPPORTED_RETRY = {"limit", "retryPolicy", "backoff", "expression"}
SUPPORTED_PARAMETER = {"name", "value", "default", "description", "enum", "valueFrom", "globalName"}
SUPPORTED_ARGUMENT = {"name", "value", "description"}


def _check_keys(
    mapping: dict[str, Any], supported: set[str], k8s_only: set[str], where: str, ignored: list[str]
) -> None:
    for key in mapping:
        if key in supported:
            continue
        if key in k8s_only:
            if key == "image":  # documented: a step is its command, the image is never used
                continue
            note = f"{where}: {key}"
            if note not in ignored:
                ignored.append(note)
            continue
        raise UnsupportedFeature(key, where)


def check_definition(definition: WorkflowDefinition, ignored: list[str]) -> None:
    """Raise UnsupportedFeature for the first unsupported feature in `definition`."""
    where = f"{definition.kind} {definition.name}"
    spec = definition.spec
    _check_keys(spec, SUPPORTED_SPEC, K8S_ONLY_SPEC, where, ignored)
    if "workflowTemplateRef" in spec and definition.kind != "Workflow":
        raise UnsupportedFeature("workflowTemplateRef", where, "only a Workflow may refer to a WorkflowTemplate")
    for parameter in (spec.get("arguments") or {}).get("parameters") or []:
        _check_parameter(parameter, f"{where} arguments")
        if "valueFrom" in parameter:
            raise UnsupportedFeature("valueFrom on a workflow argument", f"{where} argument {parameter['name']!r}")
    if (spec.get("arguments") or {}).get("artifacts"):
        raise UnsupportedFeature("arguments.artifacts", where)
    _check_volumes(spec.get("volumes") or [], where)
    _check_synchronization(spec.get("synchronization") or {}, where)
    if set(spec.get("artifactRepositoryRef") or {}) - {"configMap", "key"}:
        raise UnsupportedFeature("artifactRepositoryRef fields other than configMap and key", where)
    for template in spec.get("templates") or []:
        check_template(template, f"{where} template {template.get('name')!r}", ignored)


def _check_synchronization(synchronization: dict[str, Any], where: str) -> None:
    """Workflow-level mutexes are held with file locks (rollguard.sandbox.executor.mutex); semaphores are not."""
    for key in synchronization:
        if key not in ("mutex", "mutexes"):
            raise UnsupportedFeature(f"synchronization.{key}", where, "a semaphore's limit lives in a ConfigMap of the "
                                     "cluster; only mutexes are held locally")
    mutexes = list(synchronization.get("mutexes") or []) + ([synchronization["mutex"]] if "mutex" in synchronization
                                                            else [])
    for mutex in mutexes:
        if not isinstance(mutex, dict) or not mutex.get("name") or set(mutex) - {"name", "namespace"}:
            raise UnsupportedFeature(f"synchronization mutex {mutex!r}", where, "a mutex is {name, namespace}")


def _check_volumes(volumes: list[dict[str, Any]], where: str) -> None:
    """Secret volumes are mounted from `run-local --secret NAME=DIR`; no other kind has a local stand-in."""
    for volume in volumes:
        volume_where = f"{where} volume {volume.get('name')!r}"
        kinds = [key for key in volume if key != "name"]
        if kinds != ["secret"]:
            raise UnsupportedFeature(f"volume of kind {', '.join(kinds) or 'none'}", volume_where,
                                     "only Secret volumes are mounted locally (run-local --secret NAME=DIR)")
        for key in volume["secret"] or {}:
            if key not in ("secretName", "optional", "items", "defaultMode"):
                raise UnsupportedFeature(f"secret volume field {key}", volume_where)
        for item in (volume["secret"] or {}).get("items") or []:
            if set(item) - {"key", "path"}:
                raise UnsupportedFeature(f"secret volume item field {', '.join(sorted(set(item) - {'key', 'path'}))}",
                                         volume_where)


def _check_parameter(parameter: dict[str, Any], where: str, output: bool = False) -> None:
    if "name" not in parameter:
        raise ExecutorError(f"{where}: a parameter without a name")
    if "globalName" in parameter and not output:  # exported to {{workflow.outputs.parameters.*}} from outputs only
        raise UnsupportedFeature("globalName on an input or argument", f"{where} parameter {parameter['name']!r}")
    for key in parameter:
        if key not in SUPPORTED_PARAMETER:
            raise UnsupportedFeature(f"parameter field {key}", f"{where} parameter {parameter['name']!r}")
    value_from = parameter.get("valueFrom")
    if value_from is not None:
        for key in value_from:
            if key not in ("path", "parameter", "default"):
                raise UnsupportedFeature(f"valueFrom.{key}", f"{where} parameter {parameter['name']!r}")


def _check_artifacts(artifacts: list[dict[str, Any]], where: str, ignored: list[str], inputs: bool) -> None:
    for artifact in artifacts:
        if inputs and "raw" in artifact:  # written to its path before the step runs
            if not artifact.get("path") or "data" not in (artifact["raw"] or {}):
                raise ExecutorError(f"{where}: raw artifact {artifact.get('name')!r} needs raw.data and a path")
            continue
        if not inputs:  # saved like Argo's wait container does (rollguard.sandbox.executor.artifacts)
            _check_output_artifact(artifact, where)
            continue
        if not artifact.get("optional"):
            raise UnsupportedFeature("artifacts", where, f"artifact {artifact.get('name')!r} is not optional")
        ignored.append(f"{where}: optional artifact {artifact.get('name')!r}")


def _check_output_artifact(artifact: dict[str, Any], where: str) -> None:
    artifact_where = f"{where} artifact {artifact.get('name')!r}"
    if not artifact.get("name") or not artifact.get("path"):
        raise ExecutorError(f"{artifact_where}: an output artifact needs a name and a path")
    for key in artifact:
        if key in ("name", "path", "optional", "archive"):
            continue
        hint = "locally an output artifact goes to the artifact repository, run-local --artifact-repository DIR"
        raise UnsupportedFeature(f"output artifact field {key}", artifact_where, hint)
    archive = artifact.get("archive") or {}
    if set(archive) - {"none", "tar"}:
        raise UnsupportedFeature(f"archive {', '.join(sorted(set(archive) - {'none', 'tar'}))}", artifact_where)


def _check_archive_location(location: dict[str, Any], where: str) -> None:
    if set(location) - {"archiveLogs"}:
        raise UnsupportedFeature(f"archiveLocation {', '.join(sorted(set(location) - {'archiveLogs'}))}", where,
                                 "locally the artifact repository is run-local --artifact-repository DIR")


def check_template(template: dict[str, Any], where: str, ignored: list[str]) -> None:
    """Raise UnsupportedFeature for the first unsupported feature in one template."""
    if "name" not in template:
        raise ExecutorError(f"{where}: a template without a name")
    if "container" not in template:
        for artifact in (template.get("inputs") or {}).get("artifacts") or []:
            if "raw" in artifact:
                raise UnsupportedFeature("raw input artifact on a steps template", where)
    _check_keys(template, SUPPORTED_TEMPLATE, K8S_ONLY_TEMPLATE, where, ignored)
    _check_volumes(template.get("volumes") or [], where)
    _check_archive_location(template.get("archiveLocation") or {}, where)
    kinds = [key for key in ("container", "steps", "suspend") if key in template]
    if len(kinds) != 1:
        raise ExecutorError(f"{where}: a template needs exactly one of container, steps or suspend "
                            f"(has {kinds or 'none'})")
    if "suspend" in template:
        if set(template["suspend"] or {}) - {"duration"}:
            raise UnsupportedFeature(f"suspend {', '.join(sorted(set(template['suspend']) - {'duration'}))}", where)
        if (template.get("outputs") or {}).get("parameters"):
            raise UnsupportedFeature("output parameters of a suspend template (supplied values)", where)
    _check_metrics(template.get("metrics"), where)
    for section in ("inputs", "outputs"):
        block = template.get(section) or {}
        for key in block:
            if key not in ("parameters", "artifacts"):
                raise UnsupportedFeature(f"{section}.{key}", where)
        for parameter in block.get("parameters") or []:
            _check_parameter(parameter, f"{where} {section}", output=section == "outputs")
            if section == "inputs" and "valueFrom" in parameter:
                raise UnsupportedFeature("valueFrom on an input parameter", f"{where} input {parameter['name']!r}")
        if section == "outputs" and "container" not in template and block.get("artifacts"):
            raise UnsupportedFeature("outputs.artifacts of a steps template", where)
        _check_artifacts(block.get("artifacts") or [], f"{where} {section}", ignored, section == "inputs")
    if "container" not in template:
        for key in ("retryStrategy", "timeout", "activeDeadlineSeconds"):
            if key in template:  # honoured on container steps only
                raise UnsupportedFeature(f"{key} on a {kinds[0]} template", where)
    retry = template.get("retryStrategy")
    if retry is not None:
        for key in retry:
            if key not in SUPPORTED_RETRY:
                raise UnsupportedFeature(f"retryStrategy.{key}", where)
        for key in (retry.get("backoff") or {}):
            if key not in ("duration", "factor", "maxDuration"):
                raise UnsupportedFeature(f"retryStrategy.backoff.{key}", where)
        if retry.get("expression"):
            RetryExpression(str(retry["expression"]), where)  # parsed and type-checked now, not after a failure
        if retry.get("retryPolicy", "OnFailure") not in ("OnFailure", "Always", "OnError"):
            raise UnsupportedFeature(f"retryPolicy {retry.get('retryPolicy')}", where)
    if "container" in template:
        container = template["container"] or {}
        _check_keys(container, SUPPORTED_CONTAINER, K8S_ONLY_CONTAINER, f"{where} container", ignored)
        for mount in container.get("volumeMounts") or []:
            if set(mount) - {"name", "mountPath", "readOnly"} or not mount.get("mountPath"):
                raise UnsupportedFeature(f"volumeMount fields {', '.join(sorted(mount))}", f"{where} container",
                                         "a mount needs name and mountPath; subPath and the like are not mapped")
        policy = container.get("terminationMessagePolicy", "File")
        if policy not in TERMINATION_MESSAGE_POLICIES:
            raise ExecutorError(f"{where}: terminationMessagePolicy {policy!r} is not one of "
                                f"{', '.join(TERMINATION_MESSAGE_POLICIES)}")
        if not container.get("command") and not container.get("args"):
            raise ExecutorError(f"{where}: the container has neither command nor args; the local executor "
                                "runs the command itself (the image's entrypoint is unknown here)")
        for variable in container.get("env") or []:
            for key in variable:
                if key not in ("name", "value", "valueFrom"):
                    raise UnsupportedFeature(f"env field {key}", f"{where} container")
            source = variable.get("valueFrom")
            if source is not None and set(source) - {"secretKeyRef", "configMapKeyRef"}:
                raise UnsupportedFeature(f"env valueFrom {', '.join(source)}", f"{where} env {variable.get('name')}")
    elif "steps" in template:
        groups = template["steps"]
        if not isinstance(groups, list):
            raise ExecutorError(f"{where}: steps must be a list of lists of steps")
        for group in groups:
            for step in group if isinstance(group, list) else [group]:
                _check_step(step, where)


def _check_metrics(metrics: Any, where: str) -> None:
    """Template metrics (operator.go computeMetrics) are computed locally (rollguard.sandbox.executor.metrics)."""
    if metrics is None:
        return
    if not isinstance(metrics, dict) or set(metrics) - {"prometheus"}:
        raise UnsupportedFeature("metrics other than metrics.prometheus", where)
    for metric in metrics.get("prometheus") or []:
        metric_where = f"{where} metric {metric.get('name')!r}"
        unknown = set(metric) - {"name", "help", "labels", "when", *METRIC_TYPES}
        if unknown:
            raise UnsupportedFeature(f"metric field {', '.join(sorted(unknown))}", metric_where)
        kinds = [kind for kind in METRIC_TYPES if kind in metric]
        if len(kinds) != 1:
            raise ExecutorError(f"{metric_where}: a metric needs exactly one of counter, gauge or histogram")
        body = metric[kinds[0]] or {}
        allowed = {"counter": {"value"}, "gauge": {"value", "realtime", "operation"},
                   "histogram": {"value", "buckets"}}[kinds[0]]
        if set(body) - allowed:
            raise UnsupportedFeature(f"{kinds[0]} field {', '.join(sorted(set(body) - allowed))}", metric_where)
        if body.get("realtime"):
            raise UnsupportedFeature("real-time gauge", metric_where, "metrics are emitted when the node completes")
        for label in metric.get("labels") or []:
            if set(label) - {"key", "value"}:
                raise UnsupportedFeature("metric label fields other than key and value", metric_where)


def _check_step(step: dict[str, Any], where: str) -> None:
    step_where = f"{where} step {step.get('name')!r}"
    for key in step:
        if key not in SUPPORTED_STEP:
            raise UnsupportedFeature(key, step_where)
    if ("template" in step) == ("templateRef" in step):
        raise ExecutorError(f"{step_where}: a step needs exactly one of template or templateRef")
    arguments = step.get("arguments") or {}
    for key in arguments:
        if key != "parameters":
            raise UnsupportedFeature(f"arguments.{key}", step_where)
    for parameter in arguments.get("parameters") or []:
        if "name" not in parameter:
            raise ExecutorError(f"{step_where}: an argument without a name")
        for key in parameter:
            if key not in SUPPORTED_ARGUMENT:
                raise UnsupportedFeature(f"argument field {key}", f"{step_where} argument {parameter['name']!r}")
    continue_on = step.get("continueOn") or {}
    for key in continue_on:
        if key not in ("failed", "error"):
            raise UnsupportedFeature(f"continueOn.{key}", step_where)
