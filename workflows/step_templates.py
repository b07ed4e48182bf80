"""Hera container templates, one per rollguard step command, built from the command's own flags.

Every flag `--x-y` becomes an input parameter `x-y` and reaches the container as the environment
variable `ROLLGUARD_X_Y`. The container command is plain `rollguard COMMAND`, and every file a step
writes is a parameter, so the same template runs in a pod or as a local process. What each command
needs (outputs, retries, Secrets) is its StepSpec in step_specs.py; the Secret-name inputs, their env
and volumes come from step_inputs.py.
"""

from __future__ import annotations

from hera.workflows import (
    Artifact,
    Container,
    Env,
    NoneArchiveStrategy,
    Parameter,
    RawArtifact,
    RetryStrategy,
    SecretEnv,
)
from hera.workflows.models import Backoff, IntOrString, ValueFrom

from rollguard.steps.trailers import WORKFLOW_NAME_ENV
from rollguard.workflows.metrics import step_metrics
from rollguard.workflows.parameters import FlagParameter
from rollguard.workflows.step_inputs import input_parameter, secret_inputs, step_parameters
from rollguard.workflows.step_specs import (
    MISSING_VERDICT_JSON,
    RETRY_EXPRESSION,
    RETRY_POLICY,
    STEP_SPECS,
    StepOptions,
)


def step_template(command: str, options: StepOptions, input_defaults: dict[str, str] | None = None,
                  env_values: dict[str, str] | None = None) -> Container:  # fmt: skip
    """The container template `COMMAND`: inputs = flags, env = ROLLGUARD_*, outputs = the files read back.

    `input_defaults` overrides the default of some inputs (finish's `kind` differs per workflow);
    `env_values` overrides some of the spec's Argo-set values (what a workflow cannot provide).
    """
    spec = STEP_SPECS[command]
    fixed = {**spec.env_values, **(env_values or {})}
    parameters = step_parameters(command)
    inputs: list[Parameter | Artifact] = []
    env: list[Env | SecretEnv] = []
    for parameter in parameters:
        if parameter.name in fixed:  # set from Argo by the template itself, not an input
            env.append(Env(name=parameter.env, value=fixed[parameter.name]))
            continue
        if input_defaults and parameter.name in input_defaults:
            parameter = FlagParameter(**{**parameter.__dict__, "default": input_defaults[parameter.name],
                                         "required": False})
        inputs.append(input_parameter(parameter))
        env.append(Env(name=parameter.env, value=parameter.reference))
    for name, (default, variable) in spec.extra_inputs.items():
        inputs.append(Parameter(name=name, default=default))
        env.append(Env(name=variable, value="{{inputs.parameters." + name + "}}"))
    if spec.uses_git and WORKFLOW_NAME_ENV not in {variable.name for variable in env}:
        env.append(Env(name=WORKFLOW_NAME_ENV, value="{{workflow.name}}"))  # for the commit trailers
    secret_parameters, secret_env, volumes = secret_inputs(command, options)
    inputs.extend(secret_parameters)
    env.extend(secret_env)
    if command == "rollback":
        # The verdict travels as a parameter and lands as the reason file through a raw artifact:
        # no artifact repository is needed, and it works the same when rollback runs in another pod.
        inputs.append(Parameter(name="verdict-json", default=MISSING_VERDICT_JSON, description="verdict JSON to quote"))
        inputs.append(
            RawArtifact(
                name="reason",
                path="{{inputs.parameters.reason-file}}",
                data="{{inputs.parameters.verdict-json}}",
                optional=True,  # always supplied; optional lets a local executor skip it (the file is there)
            )
        )
    outputs: list[Parameter | Artifact] = []
    by_name = {parameter.name: parameter for parameter in parameters}
    for output in spec.outputs:
        path = by_name[output.flag].reference
        outputs.append(Parameter(name=output.parameter, value_from=ValueFrom(path=path, default=output.missing),
                                 global_name=output.global_name))
    if command == "analyze" and options.verdict_artifact:
        outputs.append(
            Artifact(
                name="verdict", path=by_name["verdict-file"].reference, optional=True, archive=NoneArchiveStrategy()
            )
        )
    retry = None
    if spec.retry_safe and options.retry_limit > 0:
        backoff = Backoff(duration=options.retry_backoff, factor=IntOrString(2))
        retry = RetryStrategy(
            limit=str(options.retry_limit), retry_policy=RETRY_POLICY, expression=RETRY_EXPRESSION, backoff=backoff
        )
    # Kubernetes reads the container's termination message from this file (FallbackToLogsOnError: the
    # log's tail when the file stays empty); Argo makes it the node's message.
    message_file = spec.termination_message_flag
    return Container(
        name=command,
        image=options.image,
        command=["rollguard", command],
        env=env,
        inputs=inputs,
        outputs=outputs or None,
        retry_strategy=retry,
        volumes=volumes or None,
        metrics=step_metrics(command) or None,
        termination_message_path=by_name[message_file].reference if message_file else None,
        termination_message_policy="FallbackToLogsOnError" if message_file else None,
    )
