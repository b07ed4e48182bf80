"""Hera container templates, one per rollguard step command, built from the command's own flags.

Every flag `--x-y` becomes an input parameter `x-y` (same default; a switch defaults to `false`;
a flag without default gets `""`, which the step reads as unset) and reaches the container as the
environment variable `ROLLGUARD_X_Y`. The container command is plain `rollguard COMMAND`, and every
file a step writes is a parameter, so the same template runs in a pod or as a local process.

The Git steps also take the input `git-secret`: the Secret whose key `token` becomes
ROLLGUARD_GIT_TOKEN and which is mounted (read-only, optional) at GIT_SECRET_MOUNT, where
`--git-token-file`, `--git-ssh-key-file` and `--git-known-hosts-file` can point. They get
ROLLGUARD_WORKFLOW_NAME (`{{workflow.name}}`) for their commit trailers. The notifying steps
(notify, finish) take `notify-secret`: the Secret whose key `url` is mounted as the file
`--notify-url-file` reads (optional: no Secret, no notification unless `notify-url` is given).

Output parameters the workflow's exit handler needs are also exported as Argo global outputs
(`globalName`, read there as `{{workflow.outputs.parameters.NAME}}`): the last verdict, the last
deploy/promote commit, the release's rollback result, the canary weight last planned or found.

analyze takes the input `prometheus-secret` likewise: that Secret is mounted (read-only, optional) at
PROMETHEUS_SECRET_MOUNT, where `--prometheus-bearer-token-file`, `--prometheus-ca-file`, `--prometheus-cert-file`,
`--prometheus-key-file` and `--prometheus-header NAME=file:PATH` point; no secret travels as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hera.shared.serialization import MISSING
from hera.workflows import (
    Artifact,
    Container,
    Env,
    NoneArchiveStrategy,
    Parameter,
    RawArtifact,
    RetryStrategy,
    SecretEnv,
    SecretVolume,
)
from hera.workflows.models import Backoff, IntOrString, ValueFrom

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.trailers import VERDICT_JSON_ENV, WORKFLOW_NAME_ENV
from rollguard.steps.verdict_document import NO_VERDICT_WORD, NoVerdict
from rollguard.workflows.metrics import step_metrics
from rollguard.workflows.parameters import FlagParameter, RenderError, command_parameters

DEFAULT_IMAGE = "rollguard:0.1.0"  # what `docker build -f images/Dockerfile -t rollguard:0.1.0 .` makes
GIT_TOKEN_ENV = "ROLLGUARD_GIT_TOKEN"
GIT_SECRET_INPUT = "git-secret"  # input of the Git steps (and workflow parameter): the Secret's name
GIT_SECRET_VOLUME = "git-credentials"
GIT_SECRET_MOUNT = "/var/run/secrets/rollguard/git"
NOTIFY_SECRET_INPUT = "notify-secret"  # input of notify and finish (and workflow parameter): the Secret's name
NOTIFY_SECRET_VOLUME = "notify-url"
NOTIFY_SECRET_MOUNT = "/var/run/secrets/rollguard/notify"
NOTIFY_URL_FILE = NOTIFY_SECRET_MOUNT + "/url"  # the Secret's key `url`

# Global outputs (`{{workflow.outputs.parameters.NAME}}`), the exit handler's view of the release.
GLOBAL_VERDICT = "verdict"
GLOBAL_VERDICT_JSON = "verdict-json"
GLOBAL_RELEASE_COMMIT = "release-commit"
GLOBAL_ROLLBACK_RESULT = "rollback-result"
GLOBAL_CANARY_WEIGHT = "canary-weight"

# Files the Git steps report through (one workflow parameter each, shared by deploy, promote, rollback, finish).
COMMIT_FILE = "/tmp/rollguard-commit"
RESULT_FILE = "/tmp/rollguard-result.json"
GIT_OUTPUT_PATHS = {"commit-file": COMMIT_FILE, "result-file": RESULT_FILE}
PROMETHEUS_SECRET_INPUT = "prometheus-secret"  # input of analyze (and workflow parameter): the Secret's name
PROMETHEUS_SECRET_VOLUME = "prometheus-credentials"
PROMETHEUS_SECRET_MOUNT = "/var/run/secrets/rollguard/prometheus"

# Retries: Argo's default policy (OnFailure) retries only a Failed node, so not a deleted pod or a
# failed init/wait container (Error), and it retries a usage error, which fails the same way every
# time. `Always` retries both phases; the expression (expr-lang, Argo's `retryStrategy.expression`;
# `lastRetry.exitCode` is a string, "-1" when the main container never ran) keeps usage errors out.
# Sources: workflow/controller/operator.go processNodeRetries and buildRetryStrategyLocalScope.
RETRY_POLICY = "Always"
NEVER_RETRIED_EXIT_CODES = (ExitCode.USAGE,)
RETRY_EXPRESSION = " && ".join(f'lastRetry.exitCode != "{int(code)}"' for code in NEVER_RETRIED_EXIT_CODES)

# What rollback records when no verdict file came through (analyze crashed, or the exit handler).
MISSING_VERDICT_JSON = NoVerdict(
    "the analyze step wrote no verdict (it crashed, timed out or was given bad flags); see its log"
).render()


@dataclass(frozen=True)
class OutputFile:
    """A file a step writes that the workflow reads back as the output parameter `parameter`."""

    parameter: str
    flag: str
    path: str | None = None  # workflow default for the flag; None keeps the command's own default
    missing: str | None = None  # value when the file is absent; None makes a missing file an error
    global_name: str | None = None  # also exported as {{workflow.outputs.parameters.<global_name>}}


@dataclass(frozen=True)
class StepSpec:
    """How one command is wrapped: the files the workflow reads, and whether a retry is safe."""

    command: str
    outputs: tuple[OutputFile, ...] = ()
    retry_safe: bool = False
    uses_git: bool = False
    uses_notify: bool = False
    uses_prometheus: bool = False
    path_defaults: dict[str, str] = field(default_factory=dict)
    # Flags whose value the template sets itself from Argo (`{{workflow.status}}`...): an env value, no input.
    env_values: dict[str, str] = field(default_factory=dict)
    # Non-flag inputs: name -> (default, environment variable it becomes).
    extra_inputs: dict[str, tuple[str, str]] = field(default_factory=dict)
    termination_message_flag: str | None = None  # the file Kubernetes reads the termination message from


# Retries only where running the step twice does the same as once: Git edits set absolute weights
# (and rollback of a rolled-back split is a no-op), status only reads. analyze is never retried: a
# `fail` must not be re-tried into a `pass`. next-weight is pure and cannot fail transiently.
STEP_SPECS: dict[str, StepSpec] = {
    "next-weight": StepSpec(
        "next-weight",
        outputs=(
            OutputFile("weight", "weight-file", "/tmp/rollguard-next-weight", global_name=GLOBAL_CANARY_WEIGHT),
            OutputFile("rest", "rest-file", "/tmp/rollguard-rest-of-schedule"),
        ),
    ),
    "deploy": StepSpec(
        "deploy",
        outputs=(OutputFile("commit", "commit-file", COMMIT_FILE, missing="", global_name=GLOBAL_RELEASE_COMMIT),),
        retry_safe=True,
        uses_git=True,
        path_defaults={"result-file": RESULT_FILE},
    ),
    "promote": StepSpec(
        "promote",
        outputs=(OutputFile("commit", "commit-file", COMMIT_FILE, missing="", global_name=GLOBAL_RELEASE_COMMIT),),
        retry_safe=True,
        uses_git=True,
        path_defaults={"result-file": RESULT_FILE},
        # The verdict behind the promotion, for its commit trailers (`rollguard history`).
        extra_inputs={"verdict-json": ("", VERDICT_JSON_ENV)},
    ),
    "analyze": StepSpec(
        "analyze",
        uses_prometheus=True,
        outputs=(
            OutputFile("verdict", "verdict-word-file", "/tmp/rollguard-verdict-word", missing=NO_VERDICT_WORD,
                       global_name=GLOBAL_VERDICT),
            # The summary (no per-check list) stays small whatever the bake time: workflow parameters
            # live in the Workflow object, which etcd caps. The full verdict is the opt-in artifact.
            OutputFile("verdict-json", "verdict-summary-file", "/tmp/rollguard-verdict-summary.json",
                       missing=MISSING_VERDICT_JSON, global_name=GLOBAL_VERDICT_JSON),
        ),
    ),
    "rollback": StepSpec(
        "rollback",
        outputs=(OutputFile("result", "result-file", RESULT_FILE, missing="", global_name=GLOBAL_ROLLBACK_RESULT),),
        retry_safe=True,
        uses_git=True,
        path_defaults={"reason-file": "/tmp/rollguard-rollback-reason.json", "commit-file": COMMIT_FILE},
    ),
    "status": StepSpec(
        "status",
        outputs=(OutputFile("canary-weight", "canary-weight-file", "/tmp/rollguard-canary-weight",
                            global_name=GLOBAL_CANARY_WEIGHT),),
        retry_safe=True,
        uses_git=True,
        path_defaults={"result-file": RESULT_FILE},  # one `result-file` parameter for every Git step
    ),
    # The preflight check of the notification settings (`--check`), and a library step for users.
    "notify": StepSpec("notify", uses_notify=True, path_defaults={"notify-url-file": NOTIFY_URL_FILE}),
    # The exit handler: never retried by Argo (it retries its own rollback), because a retry node's
    # message would replace the container's termination message as the workflow's message.
    "finish": StepSpec(
        "finish",
        outputs=(
            OutputFile("outcome", "outcome-file", "/tmp/rollguard-outcome", missing="error"),
            OutputFile("final-weight", "final-weight-file", "/tmp/rollguard-final-weight", missing=""),
            OutputFile("breach-to-cut-seconds", "breach-to-cut-file", "/tmp/rollguard-breach-to-cut", missing=""),
        ),
        uses_git=True,
        uses_notify=True,
        path_defaults={**GIT_OUTPUT_PATHS, "notify-url-file": NOTIFY_URL_FILE},
        env_values={
            "workflow-status": "{{workflow.status}}",
            "workflow-failures": "{{workflow.failures}}",
            "workflow-name": "{{workflow.name}}",
            "verdict-json": "{{workflow.outputs.parameters." + GLOBAL_VERDICT_JSON + "}}",
            "rollback-result": "{{workflow.outputs.parameters." + GLOBAL_ROLLBACK_RESULT + "}}",
            "release-commit": "{{workflow.outputs.parameters." + GLOBAL_RELEASE_COMMIT + "}}",
            "canary-weight": "{{workflow.outputs.parameters." + GLOBAL_CANARY_WEIGHT + "}}",
            "reason-file": "",
            "reason": "",
        },
        termination_message_flag="termination-message-file",
    ),
}


@dataclass(frozen=True)
class StepOptions:
    """Cluster-side choices for the step containers (image, Git token secret, retries, artifact)."""

    image: str = DEFAULT_IMAGE
    git_token_secret: str | None = "rollguard-git"
    prometheus_secret: str | None = "rollguard-prometheus"
    retry_limit: int = 2
    retry_backoff: str = "2s"  # first wait; doubled for each further retry (2 s, 4 s)
    # analyze's full verdict file as an output artifact: needs an artifact repository, without which
    # Argo fails the node with Error even after a pass (the wait container cannot upload it).
    verdict_artifact: bool = False
    notify_secret: str | None = "rollguard-notify"


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


def notify_secret_parameter(options: StepOptions) -> FlagParameter:
    """The `notify-secret` input (and workflow parameter): the Secret whose key `url` holds the webhook URL."""
    return FlagParameter(
        name=NOTIFY_SECRET_INPUT,
        flag="",
        env="",
        default=options.notify_secret or "",
        help=f"Secret with the notification webhook URL in key url, mounted read-only at {NOTIFY_SECRET_MOUNT}; "
        "may be absent (no notification unless notify-url is given)",
    )


def git_secret_parameter(options: StepOptions) -> FlagParameter:
    """The `git-secret` input (and workflow parameter), defaulting to the configured Secret."""
    return FlagParameter(
        name=GIT_SECRET_INPUT,
        flag="",
        env="",
        default=options.git_token_secret or "",
        help=(
            f"Secret with the Git credentials: key token (HTTPS, read as {GIT_TOKEN_ENV}), or ssh-privatekey and "
            f"known_hosts (SSH); mounted read-only at {GIT_SECRET_MOUNT}; may be absent"
        ),
    )


def prometheus_secret_parameter(options: StepOptions) -> FlagParameter:
    """The `prometheus-secret` input (and workflow parameter), defaulting to the configured Secret."""
    return FlagParameter(
        name=PROMETHEUS_SECRET_INPUT,
        flag="",
        env="",
        default=options.prometheus_secret or "",
        help=(
            f"Secret with Prometheus credentials (a bearer token, a CA bundle, a client certificate and key, header "
            f"values), mounted read-only at {PROMETHEUS_SECRET_MOUNT} for the --prometheus-*-file flags and "
            "--prometheus-header NAME=file:PATH; may be absent"
        ),
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
    volumes: list[SecretVolume] = []
    if spec.uses_git and WORKFLOW_NAME_ENV not in {variable.name for variable in env}:
        env.append(Env(name=WORKFLOW_NAME_ENV, value="{{workflow.name}}"))  # for the commit trailers
    if GIT_SECRET_INPUT in workflow_inputs(command, options):
        secret = git_secret_parameter(options)
        inputs.append(input_parameter(secret))
        env.append(SecretEnv(name=GIT_TOKEN_ENV, secret_name=secret.reference, secret_key="token", optional=True))
        # A template-level volume: it comes with the template, also to workflows that templateRef it.
        volumes.append(
            SecretVolume(
                name=GIT_SECRET_VOLUME,
                secret_name=secret.reference,
                optional=True,
                mount_path=GIT_SECRET_MOUNT,
                read_only=True,
            )
        )
    if NOTIFY_SECRET_INPUT in workflow_inputs(command, options):
        notify_secret = notify_secret_parameter(options)
        inputs.append(input_parameter(notify_secret))
        volumes.append(
            SecretVolume(
                name=NOTIFY_SECRET_VOLUME,
                secret_name=notify_secret.reference,
                optional=True,
                mount_path=NOTIFY_SECRET_MOUNT,
                read_only=True,
            )
        )
    if PROMETHEUS_SECRET_INPUT in workflow_inputs(command, options):
        secret = prometheus_secret_parameter(options)
        inputs.append(input_parameter(secret))
        volumes.append(
            SecretVolume(
                name=PROMETHEUS_SECRET_VOLUME,
                secret_name=secret.reference,
                optional=True,
                mount_path=PROMETHEUS_SECRET_MOUNT,
                read_only=True,
            )
        )
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
