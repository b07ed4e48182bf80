"""The workflow-level parameters (`spec.arguments.parameters`) of canary-release and canary-analysis:
the union of their steps' flags minus the ones a workflow wires itself (WIRED), the inconclusive
policy, approval and rollback-in-analysis switches, the Secret-name inputs, and the user's `TemplateSettings.defaults`.
"""

from __future__ import annotations

from hera.workflows import Parameter

from rollguard.workflows.parameters import FlagParameter, InvalidDefault, RenderError
from rollguard.workflows.step_inputs import (
    argument_parameter,
    git_secret_parameter,
    notify_secret_parameter,
    prometheus_secret_parameter,
    step_parameters,
    workflow_inputs,
)
from rollguard.workflows.step_specs import GIT_SECRET_INPUT, NOTIFY_SECRET_INPUT, PROMETHEUS_SECRET_INPUT, STEP_SPECS
from rollguard.workflows.workflow_settings import (
    APPROVAL,
    APPROVAL_EVERY_STEP,
    BOOLEAN,
    INCONCLUSIVE_POLICIES,
    ON_INCONCLUSIVE,
    ROLLBACK_IN_ANALYSIS,
    TemplateSettings,
)

# The message content of `rollguard notify`: the preflight step only checks the settings (--check).
NOTIFY_CONTENT = {"outcome", "verdict-file", "canary-weight", "commit", "workflow-name", "cut-at", "check"}
# Parameters a workflow wires from step outputs (or Argo) instead of taking from the user.
WIRED = {
    "analyze": {"rollback-on-fail"},  # from the workflow parameter ROLLBACK_IN_ANALYSIS
    "deploy": {"weight"},
    "promote": {"weight"},
    "rollback": {"reason-file", "reason"},
    "notify": NOTIFY_CONTENT,
    "finish": {"kind", *STEP_SPECS["finish"].env_values},
}


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
    if "analyze" in commands:
        merged[ROLLBACK_IN_ANALYSIS] = _rollback_in_analysis_parameter()
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


def _rollback_in_analysis_parameter() -> FlagParameter:
    return _boolean_parameter(
        ROLLBACK_IN_ANALYSIS,
        "true: the analyze step rolls the canary back itself the moment it decides (analyze --rollback-on-fail), "
        "with no rollback pod to wait for; the rollback step after it stays as the safety net (then a no-op "
        "that still converges ArgoCD and the live VirtualService)",
        default="true",
    )


def _boolean_parameter(name: str, text: str, default: str = "false") -> FlagParameter:
    """A true/false workflow parameter; the enum makes Argo refuse anything else at submission."""
    return FlagParameter(name=name, flag="", env="", default=default, help=text, choices=BOOLEAN)


def _describe(parameter: FlagParameter) -> str:
    return "required" if parameter.required else f"default {parameter.default!r}"


def _check_defaults(settings: TemplateSettings) -> None:
    """Refuse a default for a parameter that no rollguard workflow has."""
    known = {ON_INCONCLUSIVE, GIT_SECRET_INPUT, NOTIFY_SECRET_INPUT, PROMETHEUS_SECRET_INPUT, APPROVAL,
             APPROVAL_EVERY_STEP, ROLLBACK_IN_ANALYSIS}
    for command in STEP_SPECS:
        known.update(p.name for p in step_parameters(command) if p.name not in WIRED.get(command, set()))
    unknown = sorted(set(settings.defaults) - known)
    if unknown:
        raise InvalidDefault(
            f"no workflow parameter named {', '.join(unknown)}; the parameters are: {', '.join(sorted(known))}"
        )
    for name in (APPROVAL, APPROVAL_EVERY_STEP, ROLLBACK_IN_ANALYSIS):
        if name in settings.defaults:
            _boolean_parameter(name, "").check(str(settings.defaults[name]))


def argument_parameters(parameters: list[FlagParameter]) -> list[Parameter]:
    """`spec.arguments.parameters`: a required flag without default has no value (Argo asks for it)."""
    return [argument_parameter(parameter) for parameter in parameters]
