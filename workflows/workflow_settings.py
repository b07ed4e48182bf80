"""The settings and names of the rollguard workflows: TemplateSettings (what a user can change without
editing rollguard), the template names, the step commands each workflow runs, the names of the
workflow-level parameters rollguard adds (inconclusive policy, approvals, rollback in analysis), and the
workflow deadline (`deadline_seconds`) computed from the rendered defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from rollguard.steps.options import UsageError, duration_or_forever
from rollguard.steps.schedule import check_guard_duration, parse_schedule
from rollguard.workflows.parameters import InvalidDefault
from rollguard.workflows.step_inputs import step_parameters
from rollguard.workflows.step_specs import DEFAULT_IMAGE, STEP_SPECS, StepOptions

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
GUARD_DURATION = "guard-duration"  # next-weight's flag: the optional guard after the promotion to 100 %
BOOLEAN = ("false", "true")
# "true": analyze rolls back itself the moment it decides (--rollback-on-fail); the rollback step stays as the net
ROLLBACK_IN_ANALYSIS = "rollback-in-analysis"


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


def default_of(name: str, command: str, settings: TemplateSettings) -> str:
    """The rendered default of a workflow parameter: `settings.defaults`, else the step flag's own."""
    if name in settings.defaults:
        return str(settings.defaults[name])
    return next(parameter.default for parameter in step_parameters(command) if parameter.name == name)


def deadline_seconds(workflow: str, settings: TemplateSettings) -> int:
    """`activeDeadlineSeconds` of a workflow: `step_allowance_s` per step pod of its longest path, plus the
    bake time (`duration`) per analysis, from the rendered defaults of `schedule` and `duration`, plus
    `approval_window_s` per approval the rendered defaults of `approval`/`approval-every-step` ask for,
    plus the rendered default of `guard-duration` (and its two pods) when the schedule ends at 100 %.

    The allowance covers a pod's start, the step's own Git and ArgoCD time limits and a retry. The exit
    handler is not counted: Argo runs it after the deadline too. The preflight runs beside `plan`.
    An approval asked for only at submission waits at most until this deadline (then the exit
    handler rolls back): render with `--set approval=true` to make room for it; likewise a guard given
    only at submission: render with `--set guard-duration=10m`.
    """
    duration_s = _bake_time_s(workflow, default_of("duration", "analyze", settings))
    approvals, guard_s = 0, 0.0
    if workflow == RELEASE_TEMPLATE:
        weights = parse_schedule(default_of("schedule", "next-weight", settings))
        analyses = sum(1 for weight in weights if weight < 100)
        pods = len(weights) + 1 + (len(weights) - 1) + analyses + 1  # plans, deploy, promotes, analyses, rollback
        promotions = len(weights) - 1
        if str(settings.defaults.get(APPROVAL_EVERY_STEP, "false")) == "true":
            approvals = promotions
        elif str(settings.defaults.get(APPROVAL, "false")) == "true" and promotions and weights[-1] == 100:
            approvals = 1
        try:
            guard = check_guard_duration(default_of(GUARD_DURATION, "next-weight", settings))
        except UsageError as exc:
            raise InvalidDefault(f"guard-duration: {exc}") from None
        if guard is not None and weights[-1] == 100:
            guard_s = guard
            pods += 2  # the guard's analyze and its rollback
    else:
        analyses, pods = 1, 3  # status, analyze, rollback
    waits = analyses * duration_s + approvals * settings.approval_window_s + guard_s
    return int(pods * settings.step_allowance_s + waits + 0.999)



def _bake_time_s(workflow: str, text: str) -> float:
    """The rendered default of `duration` in seconds; an open-ended one cannot be given a deadline."""
    seconds = duration_or_forever(text)
    if math.isinf(seconds):
        raise InvalidDefault(
            f"duration={text!r} (open-ended) cannot be the default of {workflow}: its deadline "
            "(activeDeadlineSeconds) would end the analysis and the exit handler would roll the canary back. Render "
            "a bake time, and guard open-ended in a Workflow of your own with rollguard-steps' analyze (no deadline)")
    return seconds
