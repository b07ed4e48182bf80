"""The rendered WorkflowTemplates: golden files, Argo's schema (Hera's models), and their structure.

Regenerate the golden files with `.venv/bin/rollguard render --out workflows/`.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import hera.workflows.models
import pytest
from argo_schema import HERA_SCHEMA_VERSION, SUPPORTED_LINES, schema_errors
from hera.workflows.models import WorkflowTemplate as WorkflowTemplateModel
from ruamel.yaml import YAML

from rollguard.steps.cli import COMMANDS
from rollguard.steps.verdict_document import NoVerdict, read_text
from rollguard.workflows import render, templates, workflow_settings
from rollguard.workflows.parameters import InvalidDefault, RenderError, parameters_of
from rollguard.workflows.step_specs import STEP_SPECS
from rollguard.workflows.workflow_settings import ANALYSIS_COMMANDS, RELEASE_COMMANDS

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
STEP_COMMANDS = ["next-weight", "deploy", "analyze", "promote", "rollback", "status"]
REFERENCE = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render.rendered_files()


@pytest.fixture(scope="module")
def docs(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    loaded = {}
    for text in files.values():
        document = YAML(typ="safe").load(text)
        if document.get("kind") == "WorkflowTemplate":
            loaded[document["metadata"]["name"]] = document
    return loaded


def templates_by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {template["name"]: template for template in document["spec"]["templates"]}


def all_steps(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for group in template.get("steps") or [] for step in group]


def step_named(template: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in all_steps(template) if step["name"] == name)


def cli_flags(command: str) -> dict[str, argparse.Action]:
    """The command's flags straight from its parser (not through the renderer's own mapping)."""
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    return {a.option_strings[0][2:]: a for a in parser._actions if not isinstance(a, argparse._HelpAction)}


def expected_default(action: argparse.Action) -> str | None:
    if action.required:
        return None
    if isinstance(action, argparse._StoreTrueAction):
        return "false"
    if action.default is None:
        return ""
    if isinstance(action.default, float) and action.default.is_integer():
        return str(int(action.default))
    return str(action.default)


# --- golden files and Argo's schema -------------------------------------------------------------


def test_committed_yaml_is_what_the_hera_code_renders(files: dict[str, str]) -> None:
    # Compared as parsed YAML plus the header: a newer Hera or YAML emitter that only lays the text
    # out differently does not fail CI; any change of content does.
    committed = {path.name for path in WORKFLOWS.glob("*.yaml")}
    assert committed == set(files), "regenerate with: .venv/bin/rollguard render --out workflows/"
    for name, text in files.items():
        on_disk = (WORKFLOWS / name).read_text(encoding="utf-8")
        assert on_disk.startswith(render.HEADER), f"workflows/{name} lost its generated-file header"
        assert YAML(typ="safe").load(on_disk) == YAML(typ="safe").load(text), (
            f"workflows/{name} differs from the Hera code; regenerate with: .venv/bin/rollguard render --out workflows/"
        )


def test_every_template_parses_into_argos_schema_without_losing_a_field(docs: dict[str, dict[str, Any]]) -> None:
    # Hera's models are generated from Argo's OpenAPI schema and ignore unknown keys, so a round trip
    # that gives back the same document proves every key is an Argo field with the right type.
    for name, document in docs.items():
        model = WorkflowTemplateModel.model_validate(document)
        assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == document, name


@pytest.mark.parametrize("line", sorted(SUPPORTED_LINES))
def test_every_template_fits_argos_schema_of_each_supported_line_unknown_fields_refused(
    docs: dict[str, dict[str, Any]], line: str
) -> None:
    for name, document in docs.items():
        assert schema_errors(document, SUPPORTED_LINES[line]) == [], f"{name} on Argo Workflows {line}"


def test_the_schema_check_refuses_what_argo_would_refuse(docs: dict[str, dict[str, Any]]) -> None:
    # The version table in argo_schema.py is relative to the Argo release Hera's models come from.
    assert f"argo-workflows/{HERA_SCHEMA_VERSION}/" in (hera.workflows.models.__doc__ or "")
    document = copy.deepcopy(docs["canary-analysis"])
    document["spec"]["retryStrategy"] = {"expresion": "x"}  # a typo Hera's models would drop
    document["spec"]["activeDeadlineSeconds"] = "600"  # a string where Argo's Go type is int64
    for version in SUPPORTED_LINES.values():
        errors = schema_errors(document, version)
        assert any("'expresion'" in e for e in errors) and any("activeDeadlineSeconds" in e for e in errors), errors
    legacy = copy.deepcopy(docs["canary-analysis"])
    legacy["spec"]["synchronization"] = {"mutex": {"name": "x"}}  # 3.5-3.7 spelling, gone in 4.0
    assert schema_errors(legacy, "v3.6.0") == schema_errors(legacy, "v3.7.0") == []
    assert any("no field 'mutex'" in e for e in schema_errors(legacy, "v4.0.0"))
    listed = copy.deepcopy(docs["canary-analysis"])
    listed["spec"]["synchronization"] = {"mutexes": [{"name": "x", "database": True}]}  # `database`: 4.x only
    assert any("'database'" in e for e in schema_errors(listed, "v3.6.0")) and not schema_errors(listed, "v4.0.0")


def test_the_kustomization_lists_every_rendered_template(files: dict[str, str]) -> None:
    kustomization = YAML(typ="safe").load(files[render.KUSTOMIZATION])
    assert sorted(kustomization["resources"]) == sorted(name for name in files if name != render.KUSTOMIZATION)


# --- step templates: flags, env, outputs --------------------------------------------------------


@pytest.mark.parametrize("command", STEP_COMMANDS)
def test_every_flag_is_an_input_with_the_cli_default_and_its_env_variable(
    docs: dict[str, dict[str, Any]], command: str
) -> None:
    template = templates_by_name(docs["rollguard-steps"])[command]
    inputs = {p["name"]: p for p in template["inputs"]["parameters"]}
    env = {e["name"]: e for e in template["container"]["env"]}
    path_defaults = {o.flag: o.path for o in STEP_SPECS[command].outputs if o.path}
    path_defaults.update(STEP_SPECS[command].path_defaults)
    flags = cli_flags(command)
    assert set(flags) <= set(inputs)
    for name, action in flags.items():
        want = path_defaults.get(name, expected_default(action))
        assert inputs[name].get("default") == want, f"{command} --{name}"
        variable = "ROLLGUARD_" + name.upper().replace("-", "_")
        assert env[variable] == {"name": variable, "value": "{{inputs.parameters." + name + "}}"}
        if action.choices:
            assert inputs[name]["enum"] == [str(choice) for choice in action.choices]
    assert template["container"]["command"] == ["rollguard", command]


def test_output_parameters_read_the_files_named_by_input_parameters(docs: dict[str, dict[str, Any]]) -> None:
    steps = templates_by_name(docs["rollguard-steps"])
    analyze = {p["name"]: p["valueFrom"] for p in steps["analyze"]["outputs"]["parameters"]}
    assert analyze["verdict"] == {"path": "{{inputs.parameters.verdict-word-file}}", "default": "error"}
    assert analyze["verdict-json"]["path"] == "{{inputs.parameters.verdict-summary-file}}"  # bounded size
    assert '"verdict": "error"' in analyze["verdict-json"]["default"]
    assert isinstance(read_text(analyze["verdict-json"]["default"], "default"), NoVerdict)
    status = steps["status"]["outputs"]["parameters"]
    assert status == [{"name": "canary-weight", "globalName": "canary-weight",
                       "valueFrom": {"path": "{{inputs.parameters.canary-weight-file}}"}}]  # fmt: skip
    reason = steps["rollback"]["inputs"]["artifacts"][0]
    assert reason["path"] == "{{inputs.parameters.reason-file}}"
    assert reason["raw"] == {"data": "{{inputs.parameters.verdict-json}}"}


def all_templates(docs: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{name}/{t['name']}", t) for name, document in docs.items() for t in document["spec"]["templates"]]


@pytest.mark.parametrize("verdict_artifact", [False, True])
def test_no_output_artifact_unless_asked_for(verdict_artifact: bool) -> None:
    # A default Argo install has no artifact repository: the wait container then fails a node that
    # declares an output artifact with Error, even after main exited 0 (a pass), and
    # continueOn.failed does not cover Error. The committed templates must need none.
    settings = workflow_settings.TemplateSettings(verdict_artifact=verdict_artifact)
    built = {str(t.name): t.to_dict() for t in templates.build_templates(settings)}
    declared = {name: t["outputs"]["artifacts"] for name, t in all_templates(built) if (t.get("outputs") or {})
                .get("artifacts")}  # fmt: skip
    if not verdict_artifact:
        assert declared == {}
        return
    assert set(declared) == {"rollguard-steps/analyze", "canary-release/analyze", "canary-analysis/analyze"}
    for artifacts in declared.values():
        assert artifacts == [
            {"name": "verdict", "path": "{{inputs.parameters.verdict-file}}", "optional": True, "archive": {"none": {}}}
        ]
    for document in built.values():  # the opt-in variant fits Argo's schema too
        for version in SUPPORTED_LINES.values():
            assert schema_errors(document, version) == []


def retry_allowed(expression: str, exit_code: str) -> bool:
    """Argo's retry expression for the grammar the templates use: `lastRetry.exitCode != "N"` joined by `&&`.

    Argo evaluates it with expr-lang; `lastRetry.exitCode` is a string ("-1" when the main container
    never ran), so the comparison must be with a string literal.
    """
    outcomes = []
    for clause in expression.split("&&"):
        match = re.fullmatch(r'\s*lastRetry\.exitCode\s*(==|!=)\s*"(-?\d+)"\s*', clause)
        assert match, f"unexpected clause {clause!r} in the retry expression"
        operator, code = match.groups()
        outcomes.append((exit_code == code) == (operator == "=="))
    return all(outcomes)


def test_retries_only_where_running_twice_is_safe_and_never_after_a_usage_error(
    docs: dict[str, dict[str, Any]],
) -> None:
    for name, template in all_templates(docs):
        retry = template.get("retryStrategy")
        if template["name"] not in ("deploy", "promote", "rollback", "status"):
            assert retry is None, name  # never analyze: a fail must not be retried into a pass
            continue
        assert retry is not None, name
        # Always: also a node Error (pod deleted, init/wait container failed), which OnFailure never retries.
        assert (retry["limit"], retry["retryPolicy"], retry["backoff"]) == (
            "2", "Always", {"duration": "2s", "factor": 2})  # fmt: skip
        assert not retry_allowed(retry["expression"], "2"), f"{name} retries a usage error"
        for code in ("1", "4", "130", "137", "-1"):  # a fault, SIGTERM, killed, main never ran
            assert retry_allowed(retry["expression"], code), f"{name} does not retry exit {code}"


GIT_MOUNT = "/var/run/secrets/rollguard/git"


def test_git_steps_read_and_mount_the_secret_named_by_a_parameter(docs: dict[str, dict[str, Any]]) -> None:
    for name, template in all_templates(docs):
        if "container" not in template:
            continue
        container = template["container"]
        inputs = {p["name"]: p for p in template["inputs"]["parameters"]}
        env = {e["name"]: e for e in container["env"]}
        if template["name"] not in ("analyze", "deploy", "promote", "rollback", "status", "finish"):
            assert "git-secret" not in inputs and "ROLLGUARD_GIT_TOKEN" not in env, name
            assert all(volume["name"] != "git-credentials" for volume in template.get("volumes", [])), name
            continue
        assert inputs["git-secret"]["default"] == "rollguard-git", name
        assert env["ROLLGUARD_GIT_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "{{inputs.parameters.git-secret}}", "key": "token", "optional": True}  # fmt: skip
        # The same Secret as files, where --git-token-file / --git-ssh-key-file can point; optional, so a
        # missing Secret (token in the environment, or a public repository) does not stop the pod.
        assert template["volumes"][0] == {
            "name": "git-credentials", "secret": {"secretName": "{{inputs.parameters.git-secret}}", "optional": True}
        }, name  # fmt: skip
        assert container["volumeMounts"][0] == {"name": "git-credentials", "mountPath": GIT_MOUNT, "readOnly": True}
        assert env["ROLLGUARD_WORKFLOW_NAME"] == {"name": "ROLLGUARD_WORKFLOW_NAME", "value": "{{workflow.name}}"}
    for workflow in ("canary-release", "canary-analysis"):
        arguments = {p["name"]: p for p in docs[workflow]["spec"]["arguments"]["parameters"]}
        assert arguments["git-secret"]["value"] == "rollguard-git"
        for flag in ("git-token-file", "git-ssh-key-file", "git-known-hosts-file"):
            assert GIT_MOUNT in (REPO / "argocd" / "README.md").read_text(encoding="utf-8"), flag


PROMETHEUS_MOUNT = "/var/run/secrets/rollguard/prometheus"


def test_analyze_mounts_the_prometheus_secret_named_by_a_parameter_and_no_secret_is_a_parameter(
    docs: dict[str, dict[str, Any]],
) -> None:
    for name, template in all_templates(docs):
        if "container" not in template:
            continue
        inputs = {p["name"]: p for p in template["inputs"]["parameters"]}
        if template["name"] != "analyze":
            assert "prometheus-secret" not in inputs, name
            continue
        assert inputs["prometheus-secret"]["default"] == "rollguard-prometheus", name
        # Beside the Git Secret (analyze --rollback-on-fail pushes the rollback itself).
        assert [volume["name"] for volume in template["volumes"]] == ["git-credentials", "prometheus-credentials"]
        assert template["volumes"][1] == {"name": "prometheus-credentials", "secret": {
            "secretName": "{{inputs.parameters.prometheus-secret}}", "optional": True}}, name
        assert template["container"]["volumeMounts"][1] == {
            "name": "prometheus-credentials", "mountPath": PROMETHEUS_MOUNT, "readOnly": True}
        # Paths and header names pass as parameters; token, key and header values come from the mounted files.
        for flag in ("prometheus-bearer-token-file", "prometheus-ca-file", "prometheus-cert-file",
                     "prometheus-key-file", "prometheus-header", "prometheus-insecure-skip-verify",
                     "prometheus-sigv4", "prometheus-sigv4-region"):
            assert flag in inputs, flag
        assert not any("token" == p or p.endswith("-token") for p in inputs), name
    for workflow in ("canary-release", "canary-analysis"):
        arguments = {p["name"]: p for p in docs[workflow]["spec"]["arguments"]["parameters"]}
        assert arguments["prometheus-secret"]["value"] == "rollguard-prometheus"


def test_the_shipped_workflows_carry_the_same_container_templates_as_rollguard_steps(
    docs: dict[str, dict[str, Any]],
) -> None:
    library = templates_by_name(docs["rollguard-steps"])
    assert "finish" not in library  # the exit handler reads its own workflow's global outputs
    for workflow, commands in (("canary-release", RELEASE_COMMANDS), ("canary-analysis", ANALYSIS_COMMANDS)):
        own = {name: t for name, t in templates_by_name(docs[workflow]).items() if "container" in t}
        assert sorted(own) == sorted(commands)
        for name, template in own.items():
            if name != "finish":
                assert template == library[name], f"{workflow}/{name} differs from rollguard-steps/{name}"


def test_no_templateref_in_the_shipped_workflows_and_no_steps_argument_to_any_templateref(
    docs: dict[str, dict[str, Any]],
) -> None:
    # Argo Workflows 3.5.14, 3.5.15 and 3.6.3 validate a templateRef'd template against the caller's raw
    # arguments and reject `{{steps.*}}` in them before the workflow starts (upstream 14125, 14168).
    for workflow in ("canary-release", "canary-analysis"):
        steps = [step for t in docs[workflow]["spec"]["templates"] for step in all_steps(t)]
        assert steps and not [s["name"] for s in steps if "templateRef" in s], workflow
    for name, template in all_templates(docs):
        for step in all_steps(template):
            if "templateRef" in step:
                values = [p.get("value", "") for p in (step.get("arguments") or {}).get("parameters") or []]
                assert not any("{{steps." in value for value in values), f"{name}/{step['name']}"


def test_every_step_pod_opts_out_of_the_istio_sidecar(docs: dict[str, dict[str, Any]]) -> None:
    for name, document in docs.items():
        assert document["spec"]["podMetadata"] == {"labels": {"sidecar.istio.io/inject": "false"}}, name
        for template in document["spec"]["templates"]:  # no template-level metadata that could differ
            assert "metadata" not in template, f"{name}/{template['name']}"


def test_one_release_per_virtualservice_the_hook_included(docs: dict[str, dict[str, Any]]) -> None:
    mutex = {
        "name": "rollguard-{{workflow.parameters.virtual-service}}",
        "namespace": "{{workflow.parameters.namespace}}",
    }
    for workflow in ("canary-release", "canary-analysis"):  # one lock: a hook run and a release exclude each other
        spec = docs[workflow]["spec"]
        assert spec["synchronization"] == {"mutexes": [mutex]}, workflow
        declared = {p["name"] for p in spec["arguments"]["parameters"]}
        assert {"virtual-service", "namespace"} <= declared
        for template in spec["templates"]:
            assert "synchronization" not in template  # a template-level lock would be released between steps
    assert "synchronization" not in docs["rollguard-steps"]["spec"]


def test_housekeeping_and_a_deadline_derived_from_schedule_and_bake_time(docs: dict[str, dict[str, Any]]) -> None:
    for workflow in ("canary-release", "canary-analysis"):
        spec = docs[workflow]["spec"]
        assert spec["ttlStrategy"] == {"secondsAfterCompletion": 7 * 24 * 3600}
        assert spec["podGC"] == {"strategy": "OnWorkflowSuccess", "deleteDelayDuration": "1h"}
    # 10,50,100 with a 2m bake: 9 step pods (3 plans, deploy, 2 promotes, 2 analyses, a rollback) x 3 min
    # + 2 analyses x 2 min; the analysis: status, analyze, rollback x 3 min + 2 min.
    assert docs["canary-release"]["spec"]["activeDeadlineSeconds"] == 9 * 180 + 2 * 120 == 31 * 60
    assert docs["canary-analysis"]["spec"]["activeDeadlineSeconds"] == 3 * 180 + 120 == 11 * 60
    longer = workflow_settings.TemplateSettings(defaults={"schedule": "5,25,50,100", "duration": "10m"})
    built = {t.name: t.to_dict() for t in templates.build_templates(longer)}
    assert built["canary-release"]["spec"]["activeDeadlineSeconds"] == (4 + 1 + 3 + 3 + 1) * 180 + 3 * 600
    assert built["canary-analysis"]["spec"]["activeDeadlineSeconds"] == 3 * 180 + 600
    # A guard rendered as the default adds its duration and its two pods (analyze, rollback) to the release.
    guarded = workflow_settings.TemplateSettings(defaults={"guard-duration": "15m"})
    built = {t.name: t.to_dict() for t in templates.build_templates(guarded)}
    assert built["canary-release"]["spec"]["activeDeadlineSeconds"] == 11 * 180 + 2 * 120 + 15 * 60
    # An open-ended default has no deadline to fit in: refused with the reason, not a crash nor a 0 s bake time.
    for defaults, named in (({"guard-duration": "forever"}, "guard-duration"), ({"duration": "0"}, "open-ended")):
        with pytest.raises(InvalidDefault, match=named):
            templates.build_templates(workflow_settings.TemplateSettings(defaults=defaults))


# --- the workflows: parameters, references, branches --------------------------------------------


@pytest.mark.parametrize(
    ("workflow", "commands"),
    [
        ("canary-release", ["next-weight", "deploy", "analyze", "promote", "rollback"]),
        ("canary-analysis", ["status", "analyze", "rollback"]),
    ],
)
def test_workflow_parameters_are_every_flag_with_its_default(
    docs: dict[str, dict[str, Any]], workflow: str, commands: list[str]
) -> None:
    arguments = {p["name"]: p for p in docs[workflow]["spec"]["arguments"]["parameters"]}
    wired = {"weight", "reason", "reason-file", "rollback-on-fail"}  # the last from rollback-in-analysis
    library = templates_by_name(docs[workflow])
    defaults: dict[str, set[str | None]] = {}
    for command in commands:
        step_inputs = {p["name"]: p for p in library[command]["inputs"]["parameters"]}
        for name in cli_flags(command):
            if name in wired:
                assert name not in arguments
                continue
            defaults.setdefault(name, set()).add(step_inputs[name].get("default"))
    for name, seen in defaults.items():
        # One default everywhere; or required (no default) in one step and unset ("") in another.
        want = None if None in seen else seen.pop()
        assert len(seen - {None, ""}) <= 1, f"{workflow} {name}: {seen}"
        assert arguments[name].get("value") == want, f"{workflow} {name}"
    policy = arguments["on-inconclusive"]
    assert (policy["value"], policy["enum"]) == ("rollback", ["rollback", "promote", "stop"])
    in_analysis = arguments["rollback-in-analysis"]
    assert (in_analysis["value"], in_analysis["enum"]) == ("true", ["false", "true"])
    if workflow == "canary-release":
        assert arguments["schedule"]["value"] == "10,50,100"


@pytest.mark.parametrize("workflow", ["canary-release", "canary-analysis"])
def test_every_reference_resolves(docs: dict[str, dict[str, Any]], workflow: str) -> None:
    document = docs[workflow]
    own = templates_by_name(document)
    declared = {p["name"] for p in document["spec"]["arguments"]["parameters"]}

    def outputs_of(step: dict[str, Any]) -> set[str]:
        return {p["name"] for p in (own[step["template"]].get("outputs") or {}).get("parameters") or []}

    def inputs_of(step: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in (own[step["template"]].get("inputs") or {}).get("parameters") or []}

    for template in own.values():
        my_inputs = {p["name"] for p in (template.get("inputs") or {}).get("parameters") or []}
        earlier: dict[str, set[str]] = {}
        for group in template.get("steps") or []:
            for step in group:
                assert "templateRef" not in step and step["template"] in own
                given = {p["name"] for p in (step.get("arguments") or {}).get("parameters") or []}
                needed = {name for name, p in inputs_of(step).items() if "default" not in p}
                assert needed <= given, f"{workflow}/{template['name']}/{step['name']} misses {needed - given}"
                assert given <= set(inputs_of(step)), f"{step['name']} passes unknown inputs"
                text = repr(step)
                for reference in REFERENCE.findall(text):
                    kind, _, rest = reference.partition(".")
                    if reference == "workflow.name":
                        continue
                    elif kind == "workflow":
                        assert rest.removeprefix("parameters.") in declared, reference
                    elif kind == "inputs":
                        assert rest.removeprefix("parameters.") in my_inputs, reference
                    elif kind == "steps":
                        name, _, output = rest.partition(".outputs.parameters.")
                        assert output in earlier.get(name, set()), f"{reference} in step {step['name']}"
                    else:
                        pytest.fail(f"unexpected reference {{{{{reference}}}}} in {workflow}")
            for step in group:
                earlier[step["name"]] = outputs_of(step)
    # The exit handler reads Argo's end state and the global outputs some step declares.
    finish = own[document["spec"]["onExit"]]
    exported = {p["globalName"] for t in own.values() for p in (t.get("outputs") or {}).get("parameters") or []
                if "globalName" in p}  # fmt: skip
    for variable in finish["container"]["env"]:
        for reference in REFERENCE.findall(str(variable.get("value", ""))):
            if reference.startswith("workflow.outputs.parameters."):
                assert reference.removeprefix("workflow.outputs.parameters.") in exported, reference
            else:
                assert reference in ("workflow.status", "workflow.failures", "workflow.name") or (
                    reference.startswith("inputs.parameters.")), reference


def test_release_shape_entrypoint_exit_handler_and_recursion(docs: dict[str, dict[str, Any]]) -> None:
    spec = docs["canary-release"]["spec"]
    assert (spec["entrypoint"], spec["onExit"], spec["serviceAccountName"]) == ("release", "finish", "rollguard")
    own = templates_by_name(docs["canary-release"])
    assert [[s["name"] for s in group] for group in own["release"]["steps"]] == [
        ["plan", "preflight"], ["deploy"], ["judge", "guard"]]  # fmt: skip
    assert [[s["name"] for s in group] for group in own["judge"]["steps"]] == [
        ["analyze"],
        ["rollback", "rollback-inconclusive", "advance", "advance-inconclusive"],
    ]
    assert [[s["name"] for s in group] for group in own["advance"]["steps"]] == [
        ["plan"], ["approve"], ["promote"], ["judge", "guard"]]  # fmt: skip
    assert step_named(own["judge"], "analyze")["continueOn"] == {"failed": True}
    assert step_named(own["advance"], "judge")["template"] == "judge"  # the recursion over the schedule
    assert step_named(own["advance"], "judge")["when"] == "{{steps.plan.outputs.parameters.weight}} < 100"
    # The optional guard after the promotion to 100 %: analyze for guard-duration, absolute limits only.
    for caller in ("release", "advance"):
        assert step_named(own[caller], "guard")["when"] == (
            "{{steps.plan.outputs.parameters.weight}} == 100 && '{{workflow.parameters.guard-duration}}' != ''")
    guard_analyze = {p["name"]: p["value"] for p in step_named(own["guard"], "analyze")["arguments"]["parameters"]}
    assert guard_analyze["duration"] == "{{workflow.parameters.guard-duration}}"
    assert guard_analyze["absolute-only"] == "true"
    assert step_named(own["guard"], "analyze")["continueOn"] == {"failed": True}
    assert [[s["name"] for s in group] for group in own["guard"]["steps"]][1] == ["rollback", "rollback-inconclusive"]
    # The exit handler is one container (its termination message becomes the workflow's message), not retried.
    finish = own["finish"]
    assert finish["container"]["command"] == ["rollguard", "finish"] and "retryStrategy" not in finish
    assert finish["container"]["terminationMessagePath"] == "{{inputs.parameters.termination-message-file}}"
    assert finish["container"]["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_analysis_shape_skips_when_the_canary_has_no_traffic(docs: dict[str, dict[str, Any]]) -> None:
    spec = docs["canary-analysis"]["spec"]
    assert (spec["entrypoint"], spec["onExit"]) == ("analysis", "finish")
    own = templates_by_name(docs["canary-analysis"])
    assert [[s["name"] for s in group] for group in own["analysis"]["steps"]] == [["status", "preflight"], ["judge"]]
    judge = step_named(own["analysis"], "judge")
    assert judge["when"] == "{{steps.status.outputs.parameters.canary-weight}} > 0"
    assert [[s["name"] for s in group] for group in own["judge"]["steps"]] == [
        ["analyze"],
        ["rollback", "rollback-inconclusive"],
    ]


@pytest.mark.parametrize("workflow", ["canary-release", "canary-analysis"])
def test_analyze_rolls_back_itself_and_the_rollback_step_stays_as_the_safety_net(
    docs: dict[str, dict[str, Any]], workflow: str
) -> None:
    own = templates_by_name(docs[workflow])
    analyze = step_named(own["judge"], "analyze")
    arguments = {p["name"]: p["value"] for p in analyze["arguments"]["parameters"]}
    assert arguments["rollback-on-fail"] == "{{workflow.parameters.rollback-in-analysis}}"
    assert arguments["on-inconclusive"] == "{{workflow.parameters.on-inconclusive}}"  # one policy for both
    # The rollback it makes uses the very parameters the rollback step gets.
    rollback = {p["name"]: p["value"] for p in step_named(own["judge"], "rollback")["arguments"]["parameters"]}
    for name in ("repo", "branch", "path", "virtual-service", "argocd-app", "live-patch", "git-secret", "namespace"):
        assert arguments[name] == rollback[name] == "{{workflow.parameters." + name + "}}", name
    outputs = {p["name"]: p for p in own["analyze"]["outputs"]["parameters"]}
    assert outputs["rolled-back"]["valueFrom"] == {"path": "{{inputs.parameters.rolled-back-file}}", "default": "false"}
    assert outputs["rollback-result"]["globalName"] == "analysis-rollback-result"
    assert "rollback-on-fail" not in {p["name"] for p in docs[workflow]["spec"]["arguments"]["parameters"]}
    if workflow == "canary-release":  # the guard after 100 % rolls back itself too
        guard = {p["name"]: p["value"] for p in step_named(own["guard"], "analyze")["arguments"]["parameters"]}
        assert guard["rollback-on-fail"] == "{{workflow.parameters.rollback-in-analysis}}"
        assert guard["absolute-only"] == "true"


def evaluate(condition: str, values: dict[str, str]) -> bool:
    """The subset of Argo's `when` the templates use: `&&` of `==`, `!=`, `<`, `>` comparisons."""
    text = REFERENCE.sub(lambda match: values[match.group(1)], condition)
    outcomes = []
    for clause in text.split("&&"):
        comparison = re.fullmatch(r"\s*(.*?)\s*(==|!=|<|>)\s*(.*?)\s*", clause)
        assert comparison is not None, f"not a comparison the templates use: {clause!r}"
        left, operator, right = comparison.groups()
        left, right = left.strip("'"), right.strip("'")
        if operator == "==":
            outcomes.append(left == right)
        elif operator == "!=":
            outcomes.append(left != right)
        elif operator == "<":
            outcomes.append(float(left) < float(right))
        else:
            outcomes.append(float(left) > float(right))
    return all(outcomes)


@pytest.mark.parametrize(
    ("verdict", "policy", "rest"),
    list(itertools.product(["pass", "fail", "inconclusive", "error"], ["rollback", "promote", "stop"], ["", "100"])),
)
def test_each_verdict_takes_exactly_the_intended_branch(
    docs: dict[str, dict[str, Any]], verdict: str, policy: str, rest: str
) -> None:
    judge = templates_by_name(docs["canary-release"])["judge"]
    values = {
        "steps.analyze.outputs.parameters.verdict": verdict,
        "workflow.parameters.on-inconclusive": policy,
        "inputs.parameters.rest": rest,
    }
    taken = {step["name"] for step in judge["steps"][1] if evaluate(step["when"], values)}
    if verdict in ("fail", "error"):
        expected = {"rollback"}
    elif verdict == "inconclusive" and policy == "rollback":
        expected = {"rollback-inconclusive"}
    elif rest and (verdict == "pass" or policy == "promote"):
        expected = {"advance"} if verdict == "pass" else {"advance-inconclusive"}
    else:
        expected = set()  # schedule done, or inconclusive under `stop`: hold the split as it is
    assert taken == expected


# --- the render command and the builders --------------------------------------------------------


def test_render_command_writes_the_files_and_takes_defaults(tmp_path: Path, files: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", "render", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert {path.name: path.read_text(encoding="utf-8") for path in tmp_path.iterdir()} == files  # same process
    custom = subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", "render", "--out", str(tmp_path / "c"),
         "--image", "registry.example/rollguard:1", "--set", "schedule=5,25,100", "--verdict-artifact"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert custom.returncode == 0, custom.stderr
    release = YAML(typ="safe").load((tmp_path / "c" / "canary-release.yaml").read_text(encoding="utf-8"))
    schedule = next(p for p in release["spec"]["arguments"]["parameters"] if p["name"] == "schedule")
    assert schedule["value"] == "5,25,100"
    assert release["spec"]["activeDeadlineSeconds"] == (3 + 1 + 2 + 2 + 1) * 180 + 2 * 120  # follows the schedule
    steps = YAML(typ="safe").load((tmp_path / "c" / "rollguard-steps.yaml").read_text(encoding="utf-8"))
    assert {t["container"]["image"] for t in steps["spec"]["templates"]} == {"registry.example/rollguard:1"}
    analyze = templates_by_name(steps)["analyze"]
    assert [a["name"] for a in analyze["outputs"]["artifacts"]] == ["verdict"]  # opted in


def test_render_refuses_an_unknown_parameter_default(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", "render", "--out", str(tmp_path), "--set", "shedule=5,100"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "shedule" in done.stderr and "schedule" in done.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("setting", "named"),
    [("on-inconclusive=maybe", "not one of rollback, promote, stop"), ("interval=soon", "not a duration")],
)
def test_render_refuses_a_default_the_step_would_refuse(tmp_path: Path, setting: str, named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", "render", "--out", str(tmp_path), "--set", setting],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert setting.split("=")[0] in done.stderr and named in done.stderr
    assert not list(tmp_path.iterdir())


def test_render_fails_loudly_when_a_step_module_does_not_import(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['rollguard.steps.analyze'] = None\n"
        "from rollguard.steps.cli import main\n"
        f"sys.exit(main(['render', '--out', {str(tmp_path)!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 4
    assert "rollguard.steps.analyze" in done.stderr
    assert not list(tmp_path.iterdir())


def test_flags_that_cannot_be_env_variables_are_refused() -> None:
    positional = argparse.ArgumentParser()
    positional.add_argument("target")
    with pytest.raises(RenderError, match="no --flag"):
        parameters_of(positional, "x")
    repeated = argparse.ArgumentParser()
    repeated.add_argument("--metric", action="append")
    with pytest.raises(RenderError, match="cannot be set from one environment variable"):
        parameters_of(repeated, "x")


def test_hera_users_pass_their_own_image_and_defaults() -> None:
    settings = workflow_settings.TemplateSettings(image="my/rollguard:2", defaults={"on-inconclusive": "stop"})
    built = {t.name: t.to_dict() for t in templates.build_templates(settings)}
    images = {t["container"]["image"] for t in built["rollguard-steps"]["spec"]["templates"]}
    assert images == {"my/rollguard:2"}
    policy = next(
        p for p in built["canary-analysis"]["spec"]["arguments"]["parameters"] if p["name"] == "on-inconclusive"
    )
    assert policy["value"] == "stop"


# --- operating releases: exit handler, global outputs, approval, notification, metrics ---------------


def test_the_exit_handler_sees_the_release_through_global_outputs(docs: dict[str, dict[str, Any]]) -> None:
    for workflow, kind in (("canary-release", "release"), ("canary-analysis", "analysis")):
        own = templates_by_name(docs[workflow])
        exported = {(name, p["name"]): p["globalName"] for name, t in own.items()
                    for p in (t.get("outputs") or {}).get("parameters") or [] if "globalName" in p}  # fmt: skip
        assert exported[("analyze", "verdict-json")] == "verdict-json"
        assert exported[("rollback", "result")] == "rollback-result"
        finish = own["finish"]
        env = {e["name"]: e.get("value") for e in finish["container"]["env"]}
        assert env["ROLLGUARD_WORKFLOW_STATUS"] == "{{workflow.status}}"
        assert env["ROLLGUARD_WORKFLOW_FAILURES"] == "{{workflow.failures}}"
        assert env["ROLLGUARD_VERDICT_JSON"] == "{{workflow.outputs.parameters.verdict-json}}"
        assert env["ROLLGUARD_ROLLBACK_RESULT"] == "{{workflow.outputs.parameters.rollback-result}}"
        assert (env["ROLLGUARD_REASON_FILE"], env["ROLLGUARD_REASON"]) == ("", "")  # the exit handler says why itself
        inputs = {p["name"]: p for p in finish["inputs"]["parameters"]}
        assert inputs["kind"]["default"] == kind
        arguments = {p["name"] for p in docs[workflow]["spec"]["arguments"]["parameters"]}
        # Argo gives the exit template the workflow's arguments: every input is one, or has a default.
        assert all(name in arguments or "default" in p for name, p in inputs.items()), workflow
        if workflow == "canary-release":
            assert exported[("deploy", "commit")] == exported[("promote", "commit")] == "release-commit"
            assert exported[("next-weight", "weight")] == "canary-weight"
            assert env["ROLLGUARD_RELEASE_COMMIT"] == "{{workflow.outputs.parameters.release-commit}}"
        else:
            assert exported[("status", "canary-weight")] == "canary-weight"
            assert env["ROLLGUARD_RELEASE_COMMIT"] == ""  # nothing in canary-analysis deploys or promotes


def test_a_rolled_back_release_fails_by_default_and_the_old_behaviour_is_a_parameter(
    docs: dict[str, dict[str, Any]],
) -> None:
    for workflow in ("canary-release", "canary-analysis"):
        arguments = {p["name"]: p for p in docs[workflow]["spec"]["arguments"]["parameters"]}
        assert (arguments["fail-on-rollback"]["value"], arguments["fail-on-rollback"]["enum"]) == (
            "true", ["true", "false"])  # fmt: skip
        assert arguments["termination-message-file"]["value"] == "/dev/termination-log"
        assert arguments["notify-secret"]["value"] == "rollguard-notify"
        assert arguments["notify-url-file"]["value"] == "/var/run/secrets/rollguard/notify/url"


def test_the_preflight_checks_the_notification_settings_before_deploy(docs: dict[str, dict[str, Any]]) -> None:
    for workflow, entry in (("canary-release", "release"), ("canary-analysis", "analysis")):
        own = templates_by_name(docs[workflow])
        preflight = step_named(own[entry], "preflight")
        given = {p["name"]: p["value"] for p in preflight["arguments"]["parameters"]}
        assert preflight["template"] == "notify" and given["check"] == "true" and given["outcome"] == ""
        assert given["notify-url"] == "{{workflow.parameters.notify-url}}"
        assert own[entry]["steps"][0][1] is preflight  # beside the first step: it costs no time
        volumes = {v["name"]: v for v in own["notify"]["volumes"]}
        assert volumes["notify-url"]["secret"] == {"secretName": "{{inputs.parameters.notify-secret}}",
                                                   "optional": True}  # fmt: skip
        assert {"name": "notify-url", "mountPath": "/var/run/secrets/rollguard/notify", "readOnly": True} in (
            own["notify"]["container"]["volumeMounts"])


def approval_taken(condition: str, every: str, final: str, weight: int) -> bool:
    """Argo's `when` for the approval, evaluated as govaluate would: `||`, `&&`, parentheses, quoted strings."""
    text = condition.replace("{{workflow.parameters.approval-every-step}}", every)
    text = text.replace("{{workflow.parameters.approval}}", final)
    text = text.replace("{{steps.plan.outputs.parameters.weight}}", str(weight))
    assert re.fullmatch(r"[\w\s'=!&|()]+", text), text
    return bool(eval(text.replace("&&", " and ").replace("||", " or ")))  # only literals are left


@pytest.mark.parametrize(
    ("every", "final", "weight", "waits"),
    [("false", "false", 50, False), ("false", "false", 100, False), ("false", "true", 50, False),
     ("false", "true", 100, True), ("true", "false", 50, True), ("true", "true", 100, True)],
)
def test_the_approval_waits_before_the_last_or_every_promotion(
    docs: dict[str, dict[str, Any]], every: str, final: str, weight: int, waits: bool
) -> None:
    own = templates_by_name(docs["canary-release"])
    assert own["approve"] == {"name": "approve", "suspend": {}}
    approve = step_named(own["advance"], "approve")
    assert approval_taken(approve["when"], every, final, weight) is waits
    arguments = {p["name"]: p for p in docs["canary-release"]["spec"]["arguments"]["parameters"]}
    for name in ("approval", "approval-every-step"):  # Argo refuses anything but true/false at submission
        assert (arguments[name]["value"], arguments[name]["enum"]) == ("false", ["false", "true"])
    promote = step_named(own["advance"], "promote")
    given = {p["name"]: p["value"] for p in promote["arguments"]["parameters"]}
    assert given["verdict-json"] == "{{inputs.parameters.verdict-json}}"  # the verdict behind it, for its trailers


def test_an_approval_rendered_on_makes_room_in_the_deadline(tmp_path: Path) -> None:
    final = workflow_settings.TemplateSettings(defaults={"approval": "true"})
    every = workflow_settings.TemplateSettings(defaults={"approval-every-step": "true"})
    plain = workflow_settings.deadline_seconds("canary-release", workflow_settings.TemplateSettings())
    assert workflow_settings.deadline_seconds("canary-release", final) == plain + 3600
    assert workflow_settings.deadline_seconds("canary-release", every) == plain + 2 * 3600  # 10 -> 50 -> 100
    assert workflow_settings.deadline_seconds("canary-analysis", every) == 11 * 60
    done = subprocess.run([sys.executable, "-m", "rollguard.steps.cli", "render", "--out", str(tmp_path),
                           "--set", "approval=yes"], capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2 and "approval='yes' is not one of false, true" in done.stderr


METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")  # Argo: Prometheus' legacy names, no ':' (metrics/util.go)


def test_template_metrics_are_valid_consistent_and_use_only_their_own_values(docs: dict[str, dict[str, Any]]) -> None:
    seen: dict[str, tuple[str, str, tuple[str, ...]]] = {}
    emitted: dict[str, set[str]] = {}
    for name, template in all_templates(docs):
        own_inputs = {p["name"] for p in (template.get("inputs") or {}).get("parameters") or []}
        own_outputs = {p["name"] for p in (template.get("outputs") or {}).get("parameters") or []}
        for metric in (template.get("metrics") or {}).get("prometheus") or []:
            kind = next(k for k in ("counter", "gauge", "histogram") if k in metric)
            labels = tuple(label["key"] for label in metric["labels"])
            assert METRIC_NAME.match(metric["name"]) and all(METRIC_NAME.match(key) for key in labels), name
            # Argo 3.6+: one help text and one type per name; one label set keeps the series comparable.
            assert seen.setdefault(metric["name"], (metric["help"], kind, labels)) == (metric["help"], kind, labels)
            emitted.setdefault(metric["name"], set()).add(template["name"])
            for reference in REFERENCE.findall(json.dumps(metric)):
                scope, _, rest = reference.partition(".parameters.")
                if scope == "inputs":
                    assert rest in own_inputs, f"{name}: {reference}"
                elif scope == "outputs":
                    assert rest in own_outputs, f"{name}: {reference}"
                else:
                    assert reference in ("status", "duration"), f"{name}: {reference}"
            if kind == "histogram":
                assert metric["histogram"]["buckets"] == sorted(metric["histogram"]["buckets"])
            value = metric[kind]["value"]
            if "outputs.parameters" in value:  # may be '' (unknown): Argo would report a metric error
                assert metric["when"] == f"'{value}' != ''", name
    assert emitted == {
        "rollguard_releases_total": {"finish"},
        "rollguard_analysis_duration_seconds": {"analyze"},
        "rollguard_breach_to_cut_seconds": {"finish"},
        "rollguard_canary_weight_percent": {"deploy", "promote", "rollback", "finish"},
    }
