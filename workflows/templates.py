"""The rollguard WorkflowTemplates, built with Hera: `rollguard-steps`, `canary-release`, `canary-analysis`.

- `canary-release`: check the notification settings (`preflight`, beside the first `plan`), deploy the
  first weight of the schedule, analyze, promote to the next weight (after an approval, a `suspend`
  step, when `approval`/`approval-every-step` ask for one), analyze, ... Rolls back on `fail` (and on
  `inconclusive` when `on-inconclusive=rollback`).
- `canary-analysis`: status -> (canary weight > 0) analyze -> rollback on failure. The ArgoCD
  PostSync hook runs it; with 0 % on the canary it ends Succeeded without analysing.
- Both end in the exit handler `finish` (one container, `rollguard finish`): it rolls back a release
  that did not finish (a failed step, `argo stop`, the deadline, no approval), notifies, emits the
  release metrics, and exits 1 with the termination message `canary rolled back: <reason>` when the
  canary was rolled back or held, so that Argo ends the workflow Failed with that message
  (`fail-on-rollback=false` keeps the old Succeeded).
- `rollguard-steps` holds one container template per step command (deploy, analyze, promote,
  rollback, status, next-weight, notify) for users' own workflows (`templateRef`). The two workflows
  above carry their own copies, built by the same code and called with `template:`: they need no
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
- `suspend: {}` (the approval; `argo resume` continues, `argo stop` ends the workflow Failed).
- `when`: `'A' == 'B'`, `'A' != 'B'` joined by `&&`, numeric `N < 100`, `N > 0`, `N == 100`; one
  `||` with a parenthesised `&&` (the approval).
- Variables: `{{inputs.parameters.x}}`, `{{workflow.parameters.x}}`, `{{workflow.name}}`,
  `{{steps.NAME.outputs.parameters.x}}`; in the exit handler `{{workflow.status}}`,
  `{{workflow.failures}}` and `{{workflow.outputs.parameters.x}}` (global outputs, `globalName`).
- `spec.onExit` naming a container template, which gets the workflow's arguments as its inputs.
- Template `metrics.prometheus` (counter, gauge, histogram; `when`; `{{status}}`, `{{duration}}`,
  inputs and outputs in labels and values): see metrics.py.
- `container` templates: `image`, `command` (`rollguard COMMAND`), `env` with `value`, and one
  `valueFrom.secretKeyRef` with `optional: true` whose `name` is `{{inputs.parameters.git-secret}}`
  (ROLLGUARD_GIT_TOKEN); template-level `volumes` with `secret` volumes (`secretName` from an input,
  `optional: true`: the Git, the notification and (analyze) the Prometheus Secret) and their
  `volumeMounts` (`readOnly`); finish's `terminationMessagePath` (from an input) and
  `terminationMessagePolicy: FallbackToLogsOnError`.
- `outputs.parameters[].valueFrom.path` (+ `default`), the path templated from an input parameter;
  `globalName` on some.
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

from hera.workflows import Parallel, Parameter, Step, Steps, Suspend, WorkflowTemplate
from hera.workflows.models import ContinueOn, Metadata, Mutex, PodGC, Synchronization, Template, TTLStrategy
from hera.workflows.protocol import Templatable

from rollguard.steps.options import parse_duration
from rollguard.steps.schedule import parse_schedule
from rollguard.workflows.parameters import FlagParameter, InvalidDefault, RenderError
from rollguard.workflows.step_templates import (
    DEFAULT_IMAGE,
    GIT_SECRET_INPUT,
    NOTIFY_SECRET_INPUT,
    PROMETHEUS_SECRET_INPUT,
    STEP_SPECS,
    StepOptions,
    argument_parameter,
    git_secret_parameter,
    notify_secret_parameter,
    prometheus_secret_parameter,
    step_parameters,
    step_template,
    workflow_inputs,
)

STEPS_TEMPLATE = "rollguard-steps"
RELEASE_TEMPLATE = "canary-release"
ANALYSIS_TEMPLATE = "canary-analysis"

# The step commands each workflow runs: it carries one container template for each.
RELEASE_COMMANDS = ["next-weight", "deploy", "analyze", "promote", "rollback", "notify", "finish"]
ANALYSIS_COMMANDS = ["status", "analyze", "rollback", "notify", "finish"]
LIBRARY_COMMANDS = [command for command in STEP_SPECS if command != "finish"]  # finish needs its workflow's onExit
EXIT_HANDLER = "finish"
APPROVAL_STEP = "approve"

ON_INCONCLUSIVE = "on-inconclusive"
INCONCLUSIVE_POLICIES = ("rollback", "promote", "stop")
APPROVAL = "approval"  # "true": wait for `argo resume` before the promotion to 100 %
APPROVAL_EVERY_STEP = "approval-every-step"  # "true": before every promotion
BOOLEAN = ("false", "true")

# The message content of `rollguard notify`: the preflight step only checks the settings (--check).
NOTIFY_CONTENT = {"outcome", "verdict-file", "canary-weight", "commit", "workflow-name", "cut-at", "check"}
# Parameters a workflow wires from step outputs (or Argo) instead of taking from the user.
WIRED = {
    "deploy": {"weight"},
    "promote": {"weight"},
    "rollback": {"reason-file", "reason"},
    "notify": NOTIFY_CONTENT,
    "finish": {"kind", *STEP_SPECS["finish"].env_values},
}
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
    notify_secret: str | None = "rollguard-notify"  # default of the `notify-secret` parameter; None: no Secret
    steps_template: str = STEPS_TEMPLATE
    defaults: Mapping[str, str] = field(default_factory=dict)
    # activeDeadlineSeconds = step_allowance_s per step pod + `duration` per analysis (see deadline_seconds)
    step_allowance_s: int = 180
    # added to the deadline per approval the rendered defaults ask for (an approval cannot outlast the deadline)
    approval_window_s: int = 3600
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
            notify_secret=self.notify_secret,
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
WHEN_APPROVAL = (
    "'{{workflow.parameters." + APPROVAL_EVERY_STEP + "}}' == 'true' || ('{{workflow.parameters." + APPROVAL
    + "}}' == 'true' && {{steps.plan.outputs.parameters.weight}} == 100)"
)


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
    if "promote" in commands:
        merged[APPROVAL] = _boolean_parameter(APPROVAL, "true: wait for `argo resume` before the promotion to 100 %")
        merged[APPROVAL_EVERY_STEP] = _boolean_parameter(
            APPROVAL_EVERY_STEP, "true: wait for `argo resume` before every promotion")
    if any(GIT_SECRET_INPUT in workflow_inputs(command, settings.step_options) for command in commands):
        merged[GIT_SECRET_INPUT] = git_secret_parameter(settings.step_options)
    if any(NOTIFY_SECRET_INPUT in workflow_inputs(command, settings.step_options) for command in commands):
        merged[NOTIFY_SECRET_INPUT] = notify_secret_parameter(settings.step_options)
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


def _boolean_parameter(name: str, text: str) -> FlagParameter:
    """A true/false workflow parameter; the enum makes Argo refuse anything else at submission."""
    return FlagParameter(name=name, flag="", env="", default="false", help=text, choices=BOOLEAN)


def _describe(parameter: FlagParameter) -> str:
    return "required" if parameter.required else f"default {parameter.default!r}"


def _check_defaults(settings: TemplateSettings) -> None:
    """Refuse a default for a parameter that no rollguard workflow has."""
    known = {ON_INCONCLUSIVE, GIT_SECRET_INPUT, NOTIFY_SECRET_INPUT, PROMETHEUS_SECRET_INPUT, APPROVAL,
             APPROVAL_EVERY_STEP}
    for command in STEP_SPECS:
        known.update(p.name for p in step_parameters(command) if p.name not in WIRED.get(command, set()))
    unknown = sorted(set(settings.defaults) - known)
    if unknown:
        raise InvalidDefault(
            f"no workflow parameter named {', '.join(unknown)}; the parameters are: {', '.join(sorted(known))}"
        )
    for name in (APPROVAL, APPROVAL_EVERY_STEP):
        if name in settings.defaults:
            _boolean_parameter(name, "").check(str(settings.defaults[name]))


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


def _preflight(settings: TemplateSettings) -> Step:
    """`rollguard notify --check` beside the first step: a bad notify URL stops the release before deploy."""
    wired = {name: "" for name in NOTIFY_CONTENT}
    wired.update({"check": "true", "workflow-name": "{{workflow.name}}"})
    return _step_call("preflight", "notify", settings, wired)


def _container_templates(commands: list[str], settings: TemplateSettings, kind: str = "release"
                         ) -> list[Template | Templatable]:  # fmt: skip
    """One container template per command; finish learns which workflow it ends (`kind`) from its default,
    and canary-analysis, which never deploys or promotes, has no release commit to give it."""
    built: list[Template | Templatable] = []
    for command in commands:
        if command == EXIT_HANDLER:
            env = {"release-commit": ""} if kind == "analysis" else None
            built.append(step_template(command, settings.step_options, {"kind": kind}, env))
        else:
            built.append(step_template(command, settings.step_options))
    return built


def _default_of(name: str, command: str, settings: TemplateSettings) -> str:
    """The rendered default of a workflow parameter: `settings.defaults`, else the step flag's own."""
    if name in settings.defaults:
        return str(settings.defaults[name])
    return next(parameter.default for parameter in step_parameters(command) if parameter.name == name)


def deadline_seconds(workflow: str, settings: TemplateSettings) -> int:
    """`activeDeadlineSeconds` of a workflow: `step_allowance_s` per step pod of its longest path, plus the
    bake time (`duration`) per analysis, from the rendered defaults of `schedule` and `duration`, plus
    `approval_window_s` per approval the rendered defaults of `approval`/`approval-every-step` ask for.

    The allowance covers a pod's start, the step's own Git and ArgoCD time limits and a retry. The exit
    handler is not counted: Argo runs it after the deadline too. The preflight runs beside `plan`.
    An approval asked for only at submission waits at most until this deadline (then the exit
    handler rolls back): render with `--set approval=true` to make room for it.
    """
    duration_s = parse_duration(_default_of("duration", "analyze", settings))
    approvals = 0
    if workflow == RELEASE_TEMPLATE:
        weights = parse_schedule(_default_of("schedule", "next-weight", settings))
        analyses = sum(1 for weight in weights if weight < 100)
        pods = len(weights) + 1 + (len(weights) - 1) + analyses + 1  # plans, deploy, promotes, analyses, rollback
        promotions = len(weights) - 1
        if str(settings.defaults.get(APPROVAL_EVERY_STEP, "false")) == "true":
            approvals = promotions
        elif str(settings.defaults.get(APPROVAL, "false")) == "true" and promotions and weights[-1] == 100:
            approvals = 1
    else:
        analyses, pods = 1, 3  # status, analyze, rollback
    waits = analyses * duration_s + approvals * settings.approval_window_s
    return int(pods * settings.step_allowance_s + waits + 0.999)


def _release_workflow(name: str, entrypoint: str, description: str, parameters: list[FlagParameter],
                      settings: TemplateSettings) -> WorkflowTemplate:
    """canary-release or canary-analysis before its templates are added: the spec-level fields both
    share (why each: argocd/README.md, "What the templates ask of Argo, and why")."""
    return WorkflowTemplate(
        name=name,
        entrypoint=entrypoint,
        on_exit=EXIT_HANDLER,
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
        templates=_container_templates(LIBRARY_COMMANDS, settings),
    )


def canary_release(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """deploy -> analyze -> promote -> analyze -> ... over the weight schedule, rolling back on failure."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(RELEASE_COMMANDS, settings)
    plan_out = "{{steps.plan.outputs.parameters."
    description = "canary release over a weight schedule, with rollback"
    with _release_workflow(RELEASE_TEMPLATE, "release", description, parameters, settings) as template:
        with Steps(name="release"):
            with Parallel():
                _step_call("plan", "next-weight", settings)
                _preflight(settings)
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
                advance_arguments = [
                    Parameter(name="schedule", value="{{inputs.parameters.rest}}"),
                    Parameter(name="verdict-json", value="{{steps.analyze.outputs.parameters.verdict-json}}"),
                ]
                Step(name="advance", template="advance", arguments=advance_arguments, when=WHEN_ADVANCE)
                Step(
                    name="advance-inconclusive",
                    template="advance",
                    arguments=advance_arguments,
                    when=WHEN_ADVANCE_INCONCLUSIVE,
                )
        advance_inputs = [Parameter(name="schedule"), Parameter(name="verdict-json", default="")]
        with Steps(name="advance", inputs=advance_inputs):
            _step_call("plan", "next-weight", settings, {"schedule": "{{inputs.parameters.schedule}}"})
            # The approval: a suspend step; `argo resume` promotes, `argo stop` rolls back (exit handler).
            Step(name=APPROVAL_STEP, template=APPROVAL_STEP, when=WHEN_APPROVAL)
            promote_wired = {"weight": plan_out + "weight}}", "verdict-json": "{{inputs.parameters.verdict-json}}"}
            _step_call("promote", "promote", settings, promote_wired)
            Step(
                name="judge",
                template="judge",
                arguments=[Parameter(name="rest", value=plan_out + "rest}}")],
                when=plan_out + "weight}} < 100",
            )
        Suspend(name=APPROVAL_STEP)
    template.templates.extend(_container_templates(RELEASE_COMMANDS, settings, kind="release"))
    return template


def canary_analysis(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """status -> analyze when the canary has traffic -> rollback on failure (the PostSync hook's template)."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(ANALYSIS_COMMANDS, settings)
    description = "analyze the canary at its current weight; roll back"
    with _release_workflow(ANALYSIS_TEMPLATE, "analysis", description, parameters, settings) as template:
        with Steps(name="analysis"):
            with Parallel():
                _step_call("status", "status", settings)
                _preflight(settings)
            Step(name="judge", template="judge", when="{{steps.status.outputs.parameters.canary-weight}} > 0")
        with Steps(name="judge"):
            _step_call("analyze", "analyze", settings, continue_on=ContinueOn(failed=True))
            with Parallel():
                _rollback_steps(settings)
    template.templates.extend(_container_templates(ANALYSIS_COMMANDS, settings, kind="analysis"))
    return template


def build_templates(settings: TemplateSettings | None = None) -> list[WorkflowTemplate]:
    """All rollguard WorkflowTemplates, in install order."""
    settings = settings or TemplateSettings()
    return [rollguard_steps(settings), canary_release(settings), canary_analysis(settings)]
