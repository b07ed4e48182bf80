"""The inputs of a step container besides its own flags' defaults: the flags as Argo parameters
(`step_parameters`, `input_parameter`, `argument_parameter`), and the Secret-name inputs
(`git-secret`, `notify-secret`, `prometheus-secret`) with their env and read-only Secret volumes.

Every flag `--x-y` becomes an input parameter `x-y` (same default; a switch defaults to `false`;
a flag without default gets `""`, which the step reads as unset). No secret travels as a parameter:
only the Secret's name does, and the Secret is mounted (optional) where the `--*-file` flags point.
"""

from __future__ import annotations

from hera.shared.serialization import MISSING
from hera.workflows import Parameter, SecretEnv, SecretVolume

from rollguard.workflows.parameters import FlagParameter, RenderError, command_parameters
from rollguard.workflows.step_specs import (
    GIT_SECRET_INPUT,
    GIT_SECRET_MOUNT,
    GIT_SECRET_VOLUME,
    GIT_TOKEN_ENV,
    NOTIFY_SECRET_INPUT,
    NOTIFY_SECRET_MOUNT,
    NOTIFY_SECRET_VOLUME,
    PROMETHEUS_SECRET_INPUT,
    PROMETHEUS_SECRET_MOUNT,
    PROMETHEUS_SECRET_VOLUME,
    STEP_SPECS,
    StepOptions,
)


def step_parameters(command: str) -> list[FlagParameter]:
    """The command's flags, with the workflow's default path for each file the workflow reads back."""
    spec = STEP_SPECS[command]
    overrides = dict(spec.path_defaults)
    for output in spec.outputs:
        if output.path is not None:
            overrides[output.flag] = output.path
    parameters = command_parameters(command)
    names = {parameter.name for parameter in parameters}
    for name in overrides:
        if name not in names:
            raise RenderError(f"rollguard {command} has no flag --{name}, but the workflow reads a file through it")
    result = []
    for parameter in parameters:
        if parameter.name in overrides:
            parameter = FlagParameter(**{**parameter.__dict__, "default": overrides[parameter.name]})
        result.append(parameter)
    for output in spec.outputs:
        declared = next(p for p in result if p.name == output.flag)
        if not declared.default:
            raise RenderError(f"rollguard {command} --{output.flag} has no default path; give one in STEP_SPECS")
    return result


def input_parameter(parameter: FlagParameter) -> Parameter:
    """The Argo input parameter for a flag (no default when the flag is required)."""
    return Parameter(
        name=parameter.name,
        default=MISSING if parameter.required else parameter.default,  # MISSING: no key; None would be 'null'
        description=parameter.help or None,
        enum=list(parameter.choices) or None,
    )


def argument_parameter(parameter: FlagParameter) -> Parameter:
    """The workflow argument for a flag: its value is the default; a required flag has none (Argo asks for it)."""
    return Parameter(
        name=parameter.name,
        value=MISSING if parameter.required else parameter.default,
        description=parameter.help or None,
        enum=list(parameter.choices) or None,
    )


def workflow_inputs(command: str, options: StepOptions) -> list[str]:
    """Inputs of the step that are not flags but come from a workflow parameter of the same name."""
    spec = STEP_SPECS[command]
    names = [GIT_SECRET_INPUT] if spec.uses_git and options.git_token_secret else []
    if spec.uses_notify and options.notify_secret:
        names.append(NOTIFY_SECRET_INPUT)
    if spec.uses_prometheus and options.prometheus_secret:
        names.append(PROMETHEUS_SECRET_INPUT)
    return names


def _secret_parameter(name: str, secret: str | None, text: str) -> FlagParameter:
    """A Secret-name input (and workflow parameter), defaulting to the configured Secret ('' for none)."""
    return FlagParameter(name=name, flag="", env="", default=secret or "", help=text)


def notify_secret_parameter(options: StepOptions) -> FlagParameter:
    """The `notify-secret` input (and workflow parameter): the Secret whose key `url` holds the webhook URL."""
    return _secret_parameter(
        NOTIFY_SECRET_INPUT, options.notify_secret,
        f"Secret with the notification webhook URL in key url, mounted read-only at {NOTIFY_SECRET_MOUNT}; "
        "may be absent (no notification unless notify-url is given)",
    )


def git_secret_parameter(options: StepOptions) -> FlagParameter:
    """The `git-secret` input (and workflow parameter), defaulting to the configured Secret."""
    return _secret_parameter(
        GIT_SECRET_INPUT, options.git_token_secret,
        f"Secret with the Git credentials: key token (HTTPS, read as {GIT_TOKEN_ENV}), or ssh-privatekey and "
        f"known_hosts (SSH); mounted read-only at {GIT_SECRET_MOUNT}; may be absent",
    )


def prometheus_secret_parameter(options: StepOptions) -> FlagParameter:
    """The `prometheus-secret` input (and workflow parameter), defaulting to the configured Secret."""
    return _secret_parameter(
        PROMETHEUS_SECRET_INPUT, options.prometheus_secret,
        f"Secret with Prometheus credentials (a bearer token, a CA bundle, a client certificate and key, header "
        f"values), mounted read-only at {PROMETHEUS_SECRET_MOUNT} for the --prometheus-*-file flags and "
        "--prometheus-header NAME=file:PATH; may be absent",
    )


def secret_inputs(command: str, options: StepOptions) -> tuple[list[Parameter], list[SecretEnv], list[SecretVolume]]:
    """The Secret-name inputs of the step `command`, the env they feed and their read-only, optional volumes.

    The volumes are template-level: they come with the template, also to workflows that templateRef it.
    """
    inputs: list[Parameter] = []
    env: list[SecretEnv] = []
    volumes: list[SecretVolume] = []
    wanted = workflow_inputs(command, options)
    mounted = (
        (GIT_SECRET_INPUT, git_secret_parameter, GIT_SECRET_VOLUME, GIT_SECRET_MOUNT),
        (NOTIFY_SECRET_INPUT, notify_secret_parameter, NOTIFY_SECRET_VOLUME, NOTIFY_SECRET_MOUNT),
        (PROMETHEUS_SECRET_INPUT, prometheus_secret_parameter, PROMETHEUS_SECRET_VOLUME, PROMETHEUS_SECRET_MOUNT),
    )
    for input_name, parameter_of, volume_name, mount_path in mounted:
        if input_name not in wanted:
            continue
        secret = parameter_of(options)
        inputs.append(input_parameter(secret))
        if input_name == GIT_SECRET_INPUT:  # the token also as an env variable, for HTTPS
            env.append(SecretEnv(name=GIT_TOKEN_ENV, secret_name=secret.reference, secret_key="token", optional=True))
        volumes.append(SecretVolume(name=volume_name, secret_name=secret.reference, optional=True,
                                    mount_path=mount_path, read_only=True))
    return inputs, env, volumes
