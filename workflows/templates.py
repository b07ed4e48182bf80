"""The rollguard WorkflowTemplates, built with Hera: `rollguard-steps`, `canary-release`, `canary-analysis`.

- `rollguard-steps` holds one container template per step command (deploy, analyze, promote,
  rollback, status, next-weight); other WorkflowTemplates `templateRef` them.
- `canary-release`: deploy the first weight of the schedule, analyze, promote to the next weight,
  analyze, ... Rolls back on `fail` (and on `inconclusive` when `on-inconclusive=rollback`); an
  exit handler rolls back when the workflow ends in any state but Succeeded.
- `canary-analysis`: status -> (canary weight > 0) analyze -> rollback on failure. The ArgoCD
  PostSync hook runs it; with 0 % on the canary it ends Succeeded without analysing.

Hera users: `build_templates(TemplateSettings(image=..., defaults={"schedule": "5,25,100"}))`.

Argo features the rendered YAML uses (the local executor must support exactly these; all exist in
Argo Workflows 3.5 and 4.x, whose 4.0 removals are CronWorkflow `schedule`, `podPriority`, `mutex`
and `semaphore`, none used here):
- WorkflowTemplate `metadata.annotations`; `spec`: `entrypoint`, `onExit`, `arguments.parameters`
  (name, value, enum, description), `serviceAccountName` (cluster only), `templates`.
- `steps` templates (sequential groups; one group holds mutually exclusive `when` branches),
  `inputs.parameters` with `default`, step `arguments.parameters`, `template` (same file) and
  `templateRef` (name + template, into `rollguard-steps`), `continueOn: {failed: true}`, `when`.
- Recursion: `judge` calls `advance`, which calls `judge` with the rest of the schedule.
- `when`: `'A' == 'B'`, `'A' != 'B'` joined by `&&` (no `||`, no parentheses), and numeric
  `N < 100`, `N > 0`.
- Variables: `{{inputs.parameters.x}}`, `{{workflow.parameters.x}}`,
  `{{steps.NAME.outputs.parameters.x}}`, `{{workflow.status}}` (exit handler only).
- `container` templates: `image`, `command` (`rollguard COMMAND`), `env` with `value`, and one
  `valueFrom.secretKeyRef` with `optional: true` (ROLLGUARD_GIT_TOKEN; unset locally).
- `outputs.parameters[].valueFrom.path` (+ `default`), the path templated from an input parameter.
- `outputs.artifacts` (analyze's verdict JSON; `optional: true`, `archive: {none: {}}`): may be
  ignored locally.
- `inputs.artifacts[]` `raw.data` at a templated `path`, `optional: true` (rollback's reason file;
  locally the file is already there, so writing it or not gives the same result).
- `retryStrategy.limit` and `backoff` (`duration`, `factor`) on deploy, promote, rollback, status;
  Argo's default retryPolicy (OnFailure).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hera.workflows import Parallel, Parameter, Step, Steps, WorkflowTemplate
from hera.workflows.models import ContinueOn, Template, TemplateRef
from hera.workflows.protocol import Templatable

from rollguard.steps.verdict_document import NoVerdict
from rollguard.workflows.parameters import FlagParameter, InvalidDefault, RenderError
from rollguard.workflows.step_templates import (
    DEFAULT_IMAGE,
    STEP_SPECS,
    StepOptions,
    argument_parameter,
    step_parameters,
    step_template,
)

STEPS_TEMPLATE = "rollguard-steps"
RELEASE_TEMPLATE = "canary-release"
ANALYSIS_TEMPLATE = "canary-analysis"

ON_INCONCLUSIVE = "on-inconclusive"
INCONCLUSIVE_POLICIES = ("rollback", "promote", "stop")

# Parameters a workflow wires from step outputs instead of taking from the user.
WIRED = {"deploy": {"weight"}, "promote": {"weight"}, "rollback": {"reason-file", "reason"}}
# rollback's reason file: the raw input artifact writes the verdict summary there before the step
# runs. A path of its own, next to the verdict file: on one machine (the local executor) it must not
# overwrite analyze's full verdict.
REASON_FILE = "{{workflow.parameters.verdict-file}}.reason.json"


@dataclass(frozen=True)
class TemplateSettings:
    """What a user can change without editing rollguard: image, names, defaults of the parameters."""

    image: str = DEFAULT_IMAGE
    service_account: str | None = "rollguard"
    git_token_secret: str | None = "rollguard-git"
    retry_limit: int = 2
    verdict_artifact: bool = True
    steps_template: str = STEPS_TEMPLATE
    defaults: Mapping[str, str] = field(default_factory=dict)

    @property
    def step_options(self) -> StepOptions:
        """The container-level part of the settings."""
        return StepOptions(
            image=self.image,
            git_token_secret=self.git_token_secret,
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
    policy = FlagParameter(
        name=ON_INCONCLUSIVE,
        flag="",
        env="",
        default="rollback",
        help="what an inconclusive verdict does: rollback (fail-safe), promote, or stop (hold the split as it is)",
        choices=INCONCLUSIVE_POLICIES,
    )
    merged[policy.name] = policy
    _check_defaults(settings)
    result = []
    for parameter in merged.values():
        if parameter.name in settings.defaults:
            value = str(settings.defaults[parameter.name])
            parameter.check(value)
            parameter = FlagParameter(**{**parameter.__dict__, "default": value, "required": False})
        result.append(parameter)
    return result


def _describe(parameter: FlagParameter) -> str:
    return "required" if parameter.required else f"default {parameter.default!r}"


def _check_defaults(settings: TemplateSettings) -> None:
    """Refuse a default for a parameter that no rollguard workflow has."""
    known = {ON_INCONCLUSIVE}
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
    """A step that runs `command` from rollguard-steps, each flag fed from the workflow parameter."""
    wired = dict(wired or {})
    arguments = []
    for parameter in step_parameters(command):
        value = wired.pop(parameter.name, "{{workflow.parameters." + parameter.name + "}}")
        arguments.append(Parameter(name=parameter.name, value=value))
    for extra, value in wired.items():  # inputs that are not flags (rollback's verdict-json)
        arguments.append(Parameter(name=extra, value=value))
    return Step(
        name=name,
        template_ref=TemplateRef(name=settings.steps_template, template=command),
        arguments=arguments,
        when=when,
        continue_on=continue_on,
    )


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


def rollguard_steps(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """The library of step templates, one per command, for `templateRef`."""
    settings = settings or TemplateSettings()
    templates: list[Template | Templatable] = [step_template(command, settings.step_options) for command in STEP_SPECS]
    return WorkflowTemplate(
        name=settings.steps_template,
        annotations={"workflows.argoproj.io/description": "rollguard step containers, for templateRef"},
        templates=templates,
    )


def canary_release(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """deploy -> analyze -> promote -> analyze -> ... over the weight schedule, rolling back on failure."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(["next-weight", "deploy", "analyze", "promote", "rollback"], settings)
    plan_out = "{{steps.plan.outputs.parameters."
    with WorkflowTemplate(
        name=RELEASE_TEMPLATE,
        entrypoint="release",
        on_exit="on-exit",
        arguments=_argument_parameters(parameters),
        annotations={"workflows.argoproj.io/description": "canary release over a weight schedule, with rollback"},
        service_account_name=settings.service_account or None,
    ) as template:
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
    return template


def canary_analysis(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """status -> analyze when the canary has traffic -> rollback on failure (the PostSync hook's template)."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(["status", "analyze", "rollback"], settings)
    with WorkflowTemplate(
        name=ANALYSIS_TEMPLATE,
        entrypoint="analysis",
        on_exit="on-exit",
        arguments=_argument_parameters(parameters),
        annotations={"workflows.argoproj.io/description": "analyze the canary at its current weight; roll back"},
        service_account_name=settings.service_account or None,
    ) as template:
        with Steps(name="analysis"):
            _step_call("status", "status", settings)
            Step(name="judge", template="judge", when="{{steps.status.outputs.parameters.canary-weight}} > 0")
        with Steps(name="judge"):
            _step_call("analyze", "analyze", settings, continue_on=ContinueOn(failed=True))
            with Parallel():
                _rollback_steps(settings)
        _exit_handler(settings)
    return template


def build_templates(settings: TemplateSettings | None = None) -> list[WorkflowTemplate]:
    """All rollguard WorkflowTemplates, in install order."""
    settings = settings or TemplateSettings()
    return [rollguard_steps(settings), canary_release(settings), canary_analysis(settings)]
