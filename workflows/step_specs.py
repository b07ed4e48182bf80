"""The step table: how each rollguard command is wrapped (StepSpec, STEP_SPECS), the cluster-side
StepOptions, and the constants the templates share (image, Secret inputs and mounts, global outputs,
report files, the retry policy).

The Git steps take the input `git-secret`: the Secret whose key `token` becomes ROLLGUARD_GIT_TOKEN
and which is mounted (read-only, optional) at GIT_SECRET_MOUNT. The notifying steps (notify, finish)
take `notify-secret`, whose key `url` is mounted as the file `--notify-url-file` reads; analyze takes
`prometheus-secret`, mounted at PROMETHEUS_SECRET_MOUNT (see step_inputs.py).

Output parameters the workflow's exit handler needs are also exported as Argo global outputs
(`globalName`, read there as `{{workflow.outputs.parameters.NAME}}`): the last verdict, the last
deploy/promote commit, the release's rollback result (and the rollback analyze made itself), the canary weight
last planned or found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.trailers import VERDICT_JSON_ENV
from rollguard.steps.verdict_document import NO_VERDICT_WORD, NoVerdict

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
GLOBAL_ANALYSIS_ROLLBACK_RESULT = "analysis-rollback-result"  # the rollback analyze made itself (--rollback-on-fail)
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
            # --rollback-on-fail: whether the step rolled the canary back itself, and that rollback's result.
            OutputFile("rolled-back", "rolled-back-file", "/tmp/rollguard-rolled-back", missing="false"),
            OutputFile("rollback-result", "rollback-result-file", "/tmp/rollguard-analysis-rollback.json", missing="",
                       global_name=GLOBAL_ANALYSIS_ROLLBACK_RESULT),
        ),
        uses_git=True,  # the rollback it makes on a fail verdict (--rollback-on-fail)
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
            "analysis-rollback-result": "{{workflow.outputs.parameters." + GLOBAL_ANALYSIS_ROLLBACK_RESULT + "}}",
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

