"""The rollguard WorkflowTemplates, built with Hera: `rollguard-steps`, `canary-release`, `canary-analysis`.

- `canary-release`: check the notification settings (`preflight`, beside the first `plan`), deploy the
  first weight of the schedule, analyze, promote to the next weight (after an approval, a `suspend`
  step, when `approval`/`approval-every-step` ask for one), analyze, ... Rolls back on `fail` (and on
  `inconclusive` when `on-inconclusive=rollback`). With `guard-duration` set, the new version is watched
  after the promotion to 100 % (`guard`: analyze for that long on the absolute limits only, then the
  same rollback branches as after any analysis).
- `canary-analysis`: status -> (canary weight > 0) analyze -> rollback on failure. The ArgoCD
  PostSync hook runs it; with 0 % on the canary it ends Succeeded without analysing.
- In both, every analyze rolls the canary back itself the moment it decides (`rollback-in-analysis`,
  default true: analyze --rollback-on-fail, rollback's code in its own process, no pod start to wait
  for); the rollback branches after it stay as the safety net (then a no-op that still asks ArgoCD to
  sync and converges the live VirtualService).
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
The pieces live beside this module: workflow_settings.py (TemplateSettings, names, the deadline),
workflow_parameters.py (the workflow parameters), workflow_steps.py (step calls, rollback, preflight,
approval, the exit handler and the shared spec), step_templates.py with step_specs.py and
step_inputs.py (the container templates).

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

from hera.workflows import Parallel, Parameter, Step, Steps, Suspend, WorkflowTemplate
from hera.workflows.models import Metadata

from rollguard.workflows.workflow_parameters import workflow_parameters
from rollguard.workflows.workflow_settings import (
    ANALYSIS_COMMANDS,
    ANALYSIS_TEMPLATE,
    APPROVAL_STEP,
    LIBRARY_COMMANDS,
    RELEASE_COMMANDS,
    RELEASE_TEMPLATE,
    TemplateSettings,
)
from rollguard.workflows.workflow_steps import (
    POD_LABELS,
    WHEN_ADVANCE,
    WHEN_ADVANCE_INCONCLUSIVE,
    WHEN_APPROVAL,
    WHEN_GUARD,
    analyze_step,
    container_templates,
    guard_steps,
    preflight,
    release_workflow,
    rollback_steps,
    step_call,
)


def rollguard_steps(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """The library of step templates, one per command, for `templateRef` from users' own workflows."""
    settings = settings or TemplateSettings()
    return WorkflowTemplate(
        name=settings.steps_template,
        annotations={"workflows.argoproj.io/description": "rollguard step containers, for templateRef"},
        pod_metadata=Metadata(labels=dict(POD_LABELS)),
        templates=container_templates(LIBRARY_COMMANDS, settings),
    )


def canary_release(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """deploy -> analyze -> promote -> analyze -> ... over the weight schedule, rolling back on failure."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(RELEASE_COMMANDS, settings)
    plan_out = "{{steps.plan.outputs.parameters."
    description = "canary release over a weight schedule, with rollback"
    with release_workflow(RELEASE_TEMPLATE, "release", description, parameters, settings) as template:
        with Steps(name="release"):
            with Parallel():
                step_call("plan", "next-weight", settings)
                preflight(settings)
            step_call("deploy", "deploy", settings, {"weight": plan_out + "weight}}"})
            _judge_or_guard(plan_out)
        with Steps(name="judge", inputs=[Parameter(name="rest", default="")]):
            analyze_step(settings)
            with Parallel():
                rollback_steps(settings)
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
            step_call("plan", "next-weight", settings, {"schedule": "{{inputs.parameters.schedule}}"})
            # The approval: a suspend step; `argo resume` promotes, `argo stop` rolls back (exit handler).
            Step(name=APPROVAL_STEP, template=APPROVAL_STEP, when=WHEN_APPROVAL)
            promote_wired = {"weight": plan_out + "weight}}", "verdict-json": "{{inputs.parameters.verdict-json}}"}
            step_call("promote", "promote", settings, promote_wired)
            _judge_or_guard(plan_out)
        with Steps(name="guard"):
            guard_steps(settings)
        Suspend(name=APPROVAL_STEP)
    template.templates.extend(container_templates(RELEASE_COMMANDS, settings, kind="release"))
    return template


def _judge_or_guard(plan_out: str) -> None:
    """After a weight change: the next analysis below 100 %, or the optional guard at 100 % (exclusive)."""
    with Parallel():
        Step(
            name="judge",
            template="judge",
            arguments=[Parameter(name="rest", value=plan_out + "rest}}")],
            when=plan_out + "weight}} < 100",
        )
        Step(name="guard", template="guard", when=WHEN_GUARD)


def canary_analysis(settings: TemplateSettings | None = None) -> WorkflowTemplate:
    """status -> analyze when the canary has traffic -> rollback on failure (the PostSync hook's template)."""
    settings = settings or TemplateSettings()
    parameters = workflow_parameters(ANALYSIS_COMMANDS, settings)
    description = "analyze the canary at its current weight; roll back"
    with release_workflow(ANALYSIS_TEMPLATE, "analysis", description, parameters, settings) as template:
        with Steps(name="analysis"):
            with Parallel():
                step_call("status", "status", settings)
                preflight(settings)
            Step(name="judge", template="judge", when="{{steps.status.outputs.parameters.canary-weight}} > 0")
        with Steps(name="judge"):
            analyze_step(settings)
            with Parallel():
                rollback_steps(settings)
    template.templates.extend(container_templates(ANALYSIS_COMMANDS, settings, kind="analysis"))
    return template


def build_templates(settings: TemplateSettings | None = None) -> list[WorkflowTemplate]:
    """All rollguard WorkflowTemplates, in install order."""
    settings = settings or TemplateSettings()
    return [rollguard_steps(settings), canary_release(settings), canary_analysis(settings)]
