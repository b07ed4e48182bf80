"""The rollguard WorkflowTemplates, built with Hera: `rollguard-steps`, `canary-release`, `canary-analysis`.

- `canary-release`: deploy the first weight of the schedule, analyze, promote to the next weight,
  analyze, ... Rolls back on `fail` (and on `inconclusive` when `on-inconclusive=rollback`); an
  exit handler rolls back when the workflow ends in any state but Succeeded.
- `canary-analysis`: status -> (canary weight > 0) analyze -> rollback on failure. The ArgoCD
  PostSync hook runs it; with 0 % on the canary it ends Succeeded without analysing.
- `rollguard-steps` holds one container template per step command (deploy, analyze, promote,
  rollback, status, next-weight) for users' own workflows (`templateRef`). The two workflows above
  carry their own copies, built by the same code and called with `template:`: they need no
  `templateRef`, which Argo Workflows 3.5.14, 3.5.15 and 3.6.3 reject when given `{{steps.*}}`
  arguments (workflow/validate/validate.go validateSteps; upstream issues 14125, 14168).

Hera users: `build_templates(TemplateSettings(image=..., defaults={"schedule": "5,25,100"}))`.

Argo features the rendered YAML uses (the local executor must support exactly these). Supported:
Argo Workflows 3.6, 3.7 and 4.x — `synchronization.mutexes` exists from 3.6 on, and 4.0 removed the
single `mutex` (and `semaphore`, `podPriority`, CronWorkflow `schedule`, none used here):
- WorkflowTemplate `metadata.annotations`; `spec`: `entrypoint`, `onExit`, `arguments.parameters`
  (name, value, enum, description), `serviceAccountName` (cluster only), `templates`.
- Spec-level, in canary-release and canary-analysis: `synchronization.mutexes` (one mutex, `name`
  and `namespace` templated from `{{workflow.parameters.*}}`), `activeDeadlineSeconds` (the exit
  handler still runs after it), `ttlStrategy.secondsAfterCompletion`, `podGC` (`strategy`,
  `deleteDelayDuration`) and `podMetadata.labels` (also in rollguard-steps); the last three only
  matter on a cluster.
- `steps` templates (sequential groups; one group holds mutually exclusive `when` branches),
  `inputs.parameters` with `default`, step `arguments.parameters`, `template` (same file; no
  `templateRef`), `continueOn: {failed: true}`, `when`.
- Recursion: `judge` calls `advance`, which calls `judge` with the rest of the schedule.
- `when`: `'A' == 'B'`, `'A' != 'B'` joined by `&&` (no `||`, no parentheses), and numeric
  `N < 100`, `N > 0`.
- Variables: `{{inputs.parameters.x}}`, `{{workflow.parameters.x}}`,
  `{{steps.NAME.outputs.parameters.x}}`, `{{workflow.status}}` (exit handler only).
- `container` templates: `image`, `command` (`rollguard COMMAND`), `env` with `value`, and one
  `valueFrom.secretKeyRef` with `optional: true` whose `name` is `{{inputs.parameters.git-secret}}`
  (ROLLGUARD_GIT_TOKEN); template-level `volumes` with one `secret` volume (`secretName` from the
  same input, `optional: true`) and its `volumeMounts` entry (`readOnly`); analyze's likewise, from
  `{{inputs.parameters.prometheus-secret}}` (Prometheus credentials, no env).
- `outputs.parameters[].valueFrom.path` (+ `default`), the path templated from an input parameter.
- `outputs.artifacts` only when rendered with `verdict_artifact=True` (analyze's verdict JSON;
  `optional: true`, `archive: {none: {}}`): it needs an artifact repository.
- `inputs.artifacts[]` `raw.data` at a templated `path`, `optional: true` (rollback's reason file;
  locally the file is already there, so writing it or not gives the same result).
- `retryStrategy` on deploy, promote, rollback, status: `limit`, `retryPolicy: Always`,
  `expression: lastRetry.exitCode != "2"`, `backoff` (`duration`, `factor`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hera.workflows import Parallel, Parameter, Step, Steps, WorkflowTemplate
from hera.workflows.models import ContinueOn, Metadata, Mutex, PodGC, Synchronization, Template, TTLStrategy
from hera.workflows.protocol import Templatable

from rollguard.steps.options import parse_duration
from rollguard.steps.schedule import parse_schedule
from rollguard.steps.verdict_document import NoVerdict
from rollguard.workflows.parameters import FlagParameter, InvalidDefault, RenderError
from rollguard.workflows.step_templates import (
    DEFAULT_IMAGE,
    GIT_SECRET_INPUT,
    PROMETHEUS_SECRET_INPUT,
    STEP_SPECS,
    StepOptions,
    argument_parameter,
    git_secret_parameter,
    prometheus_secret_parameter,
    step_parameters,
    step_template,
    workflow_inputs,
)

STEPS_TEMPLATE = "rollguard-steps"
RELEASE_TEMPLATE = "canary-release"
ANALYSIS_TEMPLATE = "canary-analysis"

# The step commands each workflow runs: it carries one container template for each.
RELEASE_COMMANDS = ["next-weight", "deploy", "analyze", "promote", "rollback"]
ANALYSIS_COMMANDS = ["status", "analyze", "rollback"]

ON_INCONCLUSIVE = "on-inconclusive"
INCONCLUSIVE_POLICIES = ("rollback", "promote", "stop")

# Parameters a workflow wires from step outputs instead of taking from the user.
WIRED = {"deploy": {"weight"}, "promote": {"weight"}, "rollback": {"reason-file", "reason"}}
# rollback's reason file: the raw input artifact writes the verdict summary there before the step
# runs. A path of its own, next to the verdict file: on one machine (the local executor) it must not
# overwrite analyze's full verdict.
REASON_FILE = "{{workflow.parameters.verdict-file}}.reason.json"

# No Istio sidecar in step pods, even in an injected namespace: a proxy races the step at start-up and
# keeps a finished pod running (Argo's docs/sidecar-injection.md). The label, not the deprecated
# annotation (istio/api label/labels.yaml). spec.podMetadata reaches every pod (workflowpod.go addMetadata).
POD_LABELS = {"sidecar.istio.io/inject": "false"}
# One release or hook run per VirtualService at a time; both workflows take the same lock, for their
# whole run (exit handler included). Argo substitutes the workflow parameters before locking, and the
# lock key is NAMESPACE/Mutex/NAME (workflow/sync/lock_name.go), so submissions from any namespace meet.
RELEASE_MUTEX = Mutex(
    name="rollguard-{{workflow.parameters.virtual-service}}", namespace="{{workflow.parameters.namespace}}"
)


@dataclass(frozen=True)
class TemplateSettings:
    """What a user can change without editing rollguard: image, names, defaults of the parameters."""

    image: str = DEFAULT_IMAGE
    service_account: str | None = "rollguard"
    git_token_secret: str | None = "rollguard-git"  # default of the `git-secret` parameter; None: no Secret
    prometheus_secret: str | None = "rollguard-prometheus"  # default of `prometheus-secret`; None: no Secret
    retry_limit: int = 2
    verdict_artifact: bool = False  # needs an artifact repository (see StepOptions)
    steps_template: str = STEPS_TEMPLATE
    defaults: Mapping[str, str] = field(default_factory=dict)
    # activeDeadlineSeconds = step_allowance_s per step pod + `duration` per analysis (see deadline_seconds)
    step_allowance_s: int = 180
    ttl_after_completion_s: int = 7 * 24 * 3600  # a finished Workflow (and its pods) is deleted after this
    pod_gc_delay: str = "1h"  # the pods of a Succeeded Workflow are deleted after this

    @property
    def step_options(self) -> StepOptions:
        """The container-level part of the settings."""
        return StepOptions(
            image=self.image,
            git_token_secret=self.git_token_secret,
            prometheus_secret=self.prometheus_secret,
            retry_limit=self.retry_limit,
            verdict_artifact=self.verdict_artifact,
        )


def _verdict(step: str) -> str:
    return "'{{steps." + step + ".outputs.parameters.verdict}}'"


POLICY = "'{{workflow.parameters." + ON_INCONCLUSIVE + "}}'"
# A verdict that is neither pass nor inconclusive (fail, or `error` when analyze wrote none) rolls back.
WHEN_ROLLBACK = f"{_verdict('analyze')} != 'pass' && {_verdict('analyze')} != 'inconclusive'"
WHEN_ROLLBACK_INCONCLUSIVE = f"{_verdict('analyze')} == 'inconclusive' && {POLICY} == 'rollback'"
WHEN_ADVANCE = f"{_verdict('analyze')} == 'pass' && '{{{{inputs.parameters.rest}}}}' != ''"
WHEN_ADVANCE_INCONCLUSIVE = (
    f"{_verdict('analyze')} == 'inconclusive' && {POLICY} == 'promote' && '{{{{inputs.parameters.rest}}}}' != ''"
)
WHEN_WORKFLOW_NOT_SUCCEEDED = "'{{workflow.status}}' != 'Succeeded'"
EXIT_REASON = "the workflow ended {{workflow.status}} before the release finished (exit handler)"
EXIT_VERDICT_JSON = NoVerdict(
    "the workflow ended {{workflow.status}} before the release finished; the exit handler rolled the canary back"
).render()


def workflow_parameters(commands: list[str], settings: TemplateSettings) -> list[FlagParameter]:
    """Union of the commands' flags (minus wired ones); a name shared by two commands must agree."""
    merged: dict[str, FlagParameter] = {}
    for command in commands:
        for parameter in step_parameters(command):
            if parameter.name in WIRED.get(command, set()):
                continue
            seen = merged.get(parameter.name)
            if seen is None:
                merged[parameter.name] = parameter
                continue
            if seen.required != parameter.required and "" in (seen.default, parameter.default):
                # Required in one step, optional without default in another (analyze needs --namespace,
                # rollback may take it from the file): one required parameter feeds both.
                merged[parameter.name] = seen if seen.required else parameter
                continue
            if (seen.default, seen.required) != (parameter.default, parameter.required):
                raise RenderError(
                    f"--{parameter.name} is {_describe(seen)} in one step and {_describe(parameter)} in rollguard "
                    f"{command}; one workflow parameter cannot carry both: make the defaults equal"
                )
    merged[ON_INCONCLUSIVE] = _policy_parameter()
    if any(GIT_SECRET_INPUT in workflow_inputs(command, settings.step_options) for command in commands):
        merged[GIT_SECRET_INPUT] = git_secret_parameter(settings.step_options)
    if any(PROMETHEUS_SECRET_INPUT in workflow_inputs(command, settings.step_options) for command in commands):
        merged[PROMETHEUS_SECRET_INPUT] = prometheus_secret_parameter(settings.step_options)
    _check_defaults(settings)
    result = []
    for parameter in merged.values():
        if parameter.name in settings.defaults:
            value = str(settings.defaults[parameter.name])
            parameter.check(value)
            parameter = FlagParameter(**{**parameter.__dict__, "default": value, "required": False})
        result.append(parameter)
    return result


def _policy_parameter() -> FlagParameter:
    return FlagParameter(
        name=ON_INCONCLUSIVE,
        flag="",
        env="",
        default="rollback",
        help="what an inconclusive verdict does: rollback (fail-safe), promote, or stop (hold the split as it is)",
        choices=INCONCLUSIVE_POLICIES,
    )


def _describe(parameter: FlagParameter) -> str:
    return "required" if parameter.required else f"default {parameter.default!r}"


def _check_defaults(settings: TemplateSettings) -> None:
    """Refuse a default for a parameter that no rollguard workflow has."""
    known = {ON_INCONCLUSIVE, GIT_SECRET_INPUT, PROMETHEUS_SECRET_INPUT}
    for command in STEP_SPECS:
        known.update(p.name for p in step_parameters(command) if p.name not in WIRED.get(command, set()))
    unknown = sorted(set(settings.defaults) - known)
    if unknown:
        raise InvalidDefault(
            f"no workflow parameter named {', '.join(unknown)}; the parameters are: {', '.join(sorted(known))}"
        )


def _argument_parameters(parameters: list[FlagParameter]) -> list[Parameter]:
    """`spec.arguments.parameters`: a required flag without default has no value (Argo asks for it)."""
    return [argument_parameter(parameter) for parameter in parameters]


def _step_call(
    name: str,
    command: str,
    settings: TemplateSettings,
    wired: Mapping[str, str] | None = None,
    *,
    when: str | None = None,
    continue_on: ContinueOn | None = None,
) -> Step:
    """A step that runs the workflow's own container template `command`, each input fed from the workflow
    parameter of the same name unless `wired` gives its value."""
    wired = dict(wired or {})
    arguments = []
    names = [parameter.name for parameter in step_parameters(command)] + workflow_inputs(command, settings.step_options)
    for input_name in names:
        value = wired.pop(input_name, "{{workflow.parameters." + input_name + "}}")
        arguments.append(Parameter(name=input_name, value=value))
    for extra, value in wired.items():  # inputs that are not flags (rollback's verdict-json)
        arguments.append(Parameter(name=extra, value=value))
    return Step(name=name, template=command, arguments=arguments, when=when, continue_on=continue_on)


def _rollback_steps(settings: TemplateSettings) -> None:
    """Inside a Parallel: the two mutually exclusive rollback branches after `analyze`."""
    wired = {
        "reason-file": REASON_FILE,
        "reason": "",
        "verdict-json": "{{steps.analyze.outputs.parameters.verdict-json}}",
    }
    _step_call("rollback", "rollback", settings, wired, when=WHEN_ROLLBACK)
    _step_call("rollback-inconclusive", "rollback", settings, wired, when=WHEN_ROLLBACK_INCONCLUSIVE)


def _exit_handler(settings: TemplateSettings) -> Steps:
    with Steps(name="on-exit") as on_exit:
        _step_call(
            "rollback-unfinished",
            "rollback",
            settings,
            {"reason-file": REASON_FILE, "reason": EXIT_REASON, "verdict-json": EXIT_VERDICT_JSON},
            when=WHEN_WORKFLOW_NOT_SUCCEEDED,
        )
    return on_exit


def _container_templates(commands: list[str], settings: TemplateSettings) -> list[Template | Templatable]:
    return [step_template(command, settings.step_options) for command in commands]


def _default_of(name: str, command: str, settings: TemplateSettings) -> str:
    """The rendered default of a workflow parameter: `settings.defaults`, else the step flag's own."""
    if name in settings.defaults:
        return str(settings.defaults[name])
    return next(parameter.default for parameter in step_parameters(command) if parameter.name == name)


def deadline_seconds(workflow: str, settings: TemplateSettings) -> int:
    """`activeDeadlineSeconds` of a workflow: `step_allowance_s` per step pod of its longest path, plus the
    bake time (`duration`) per analysis, from the rendered defaults of `schedule` and `duration`.

    The allowance covers a pod's start, the step's own Git and ArgoCD time limits and a retry. The exit
    handler is not counted: Argo runs it after the deadline too.
    """
    duration_s = parse_duration(_default_of("duration", "analyze", settings))
    if workflow == RELEASE_TEMPLATE:
        weights = parse_schedule(_default_of("schedule", "next-weight", settings))
        analyses = sum(1 for weight in weights if weight < 100)
        pods = len(weights) + 1 + (len(weights) - 1) + analyses + 1  # plans, deploy, promotes, analyses, rollback
    else:
        analyses, pods = 1, 3  # status, analyze, rollback
    return int(pods * settings.step_allowance_s + analyses * duration_s + 0.999)


def _release_workflow(name: str, entrypoint: str, description: str, parameters: list[FlagParameter],
                      settings: TemplateSettings) -> WorkflowTemplate:
    """canary-release or canary-analysis before its templates are added: the spec-level fields both
    share (why each: argocd/README.md, "What the templates ask of Argo, and why")."""
    return WorkflowTemplate(
        name=name,
        entrypoint=entrypoint,
        on_exit="on-exit",
        arguments=_argument_parameters(parameters),
        annotations={"workflows.argoproj.io/description": description},
        service_account_name=settings.service_account or None,
        synchronization=Synchronization(mutexes=[RELEASE_MUTEX]),
        pod_metadata=Metadata(labels=dict(POD_LABELS)),
        active_deadline_seconds=deadline_seconds(name, settings),
        ttl_strategy=TTLStrategy(seconds_after_completion=settings.ttl_after_completion_s),
        pod_gc=PodGC(strategy="OnWorkflowSuccess", delete_delay_duration=settings.pod_gc_delay),
    )


def rollguard_steps(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """The library of step templates, one per command, for `templateRef` from users' own workflows."""
    settings = settings or TemplateSettings()
    return WorkflowTemplate(
        name=settings.steps_template,
        annotations={"workflows.argoproj.io/description": "rollguard step containers, for templateRef"},
        pod_metadata=Metadata(labels=dict(POD_LABELS)),
        templates=_container_templates(list(STEP_SPECS), settings),
    )


def canary_release(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """deploy -> analyze -> promote -> analyze -> ... over the weight schedule, rolling back on failure."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(RELEASE_COMMANDS, settings)
    plan_out = "{{steps.plan.outputs.parameters."
    description = "canary release over a weight schedule, with rollback"
    with _release_workflow(RELEASE_TEMPLATE, "release", description, parameters, settings) as template:
        with Steps(name="release"):
            _step_call("plan", "next-weight", settings)
            _step_call("deploy", "deploy", settings, {"weight": plan_out + "weight}}"})
            Step(
                name="judge",
                template="judge",
                arguments=[Parameter(name="rest", value=plan_out + "rest}}")],
                when=plan_out + "weight}} < 100",
            )
        with Steps(name="judge", inputs=[Parameter(name="rest", default="")]):
            _step_call("analyze", "analyze", settings, continue_on=ContinueOn(failed=True))
            with Parallel():
                _rollback_steps(settings)
                advance_arguments = [Parameter(name="schedule", value="{{inputs.parameters.rest}}")]
                Step(name="advance", template="advance", arguments=advance_arguments, when=WHEN_ADVANCE)
                Step(
                    name="advance-inconclusive",
                    template="advance",
                    arguments=advance_arguments,
                    when=WHEN_ADVANCE_INCONCLUSIVE,
                )
        with Steps(name="advance", inputs=[Parameter(name="schedule")]):
            _step_call("plan", "next-weight", settings, {"schedule": "{{inputs.parameters.schedule}}"})
            _step_call("promote", "promote", settings, {"weight": plan_out + "weight}}"})
            Step(
                name="judge",
                template="judge",
                arguments=[Parameter(name="rest", value=plan_out + "rest}}")],
                when=plan_out + "weight}} < 100",
            )
        _exit_handler(settings)
    template.templates.extend(_container_templates(RELEASE_COMMANDS, settings))
    return template


def canary_analysis(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """status -> analyze when the canary has traffic -> rollback on failure (the PostSync hook's template)."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(ANALYSIS_COMMANDS, settings)
    description = "analyze the canary at its current weight; roll back"
    with _release_workflow(ANALYSIS_TEMPLATE, "analysis", description, parameters, settings) as template:
        with Steps(name="analysis"):
            _step_call("status", "status", settings)
            Step(name="judge", template="judge", when="{{steps.status.outputs.parameters.canary-weight}} > 0")
        with Steps(name="judge"):
            _step_call("analyze", "analyze", settings, continue_on=ContinueOn(failed=True))
            with Parallel():
                _rollback_steps(settings)
        _exit_handler(settings)
    template.templates.extend(_container_templates(ANALYSIS_COMMANDS, settings))
    return template


def build_templates(settings: TemplateSettings | None = None) -> list[WorkflowTemplate]:
    """All rollguard WorkflowTemplates, in install order."""
    settings = settings or TemplateSettings()
    return [rollguard_steps(settings), canary_release(settings), canary_analysis(settings)]
