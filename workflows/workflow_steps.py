"""The pieces canary-release and canary-analysis are assembled from: calls of the workflow's own step
templates (`step_call`), the analysis, the rollback branches and their `when` conditions, the notification
preflight, the approval condition, the container templates with the exit handler `finish`, and the
spec-level fields both workflows share (`release_workflow`: the exit handler, the release mutex, pod
labels, the deadline, TTL and pod GC).
"""

from __future__ import annotations

from collections.abc import Mapping

from hera.workflows import Parallel, Parameter, Step, WorkflowTemplate
from hera.workflows.models import ContinueOn, Metadata, Mutex, PodGC, Synchronization, Template, TTLStrategy
from hera.workflows.protocol import Templatable

from rollguard.workflows.parameters import FlagParameter
from rollguard.workflows.step_inputs import step_parameters, workflow_inputs
from rollguard.workflows.step_templates import step_template
from rollguard.workflows.workflow_parameters import NOTIFY_CONTENT, argument_parameters
from rollguard.workflows.workflow_settings import (
    APPROVAL,
    APPROVAL_EVERY_STEP,
    EXIT_HANDLER,
    GUARD_DURATION,
    ON_INCONCLUSIVE,
    ROLLBACK_IN_ANALYSIS,
    TemplateSettings,
    deadline_seconds,
)

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
# After the promotion to 100 %: the optional guard, when a guard duration is given (next-weight checked it).
WHEN_GUARD = ("{{steps.plan.outputs.parameters.weight}} == 100 && "
              "'{{workflow.parameters." + GUARD_DURATION + "}}' != ''")
WHEN_APPROVAL = (
    "'{{workflow.parameters." + APPROVAL_EVERY_STEP + "}}' == 'true' || ('{{workflow.parameters." + APPROVAL
    + "}}' == 'true' && {{steps.plan.outputs.parameters.weight}} == 100)"
)


def step_call(
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


def analyze_step(settings: TemplateSettings, wired: Mapping[str, str] | None = None) -> Step:
    """An analysis: it may fail (its verdict then decides the branches after it), and with the workflow parameter
    `rollback-in-analysis` it rolls back itself the moment it decides (analyze --rollback-on-fail)."""
    wired = {"rollback-on-fail": "{{workflow.parameters." + ROLLBACK_IN_ANALYSIS + "}}", **(wired or {})}
    return step_call("analyze", "analyze", settings, wired, continue_on=ContinueOn(failed=True))


def rollback_steps(settings: TemplateSettings) -> None:
    """Inside a Parallel: the two mutually exclusive rollback branches after `analyze`. They run even when analyze
    already rolled back (the safety net: then a no-op that still asks ArgoCD to sync and converges the live object)."""
    wired = {
        "reason-file": REASON_FILE,
        "reason": "",
        "verdict-json": "{{steps.analyze.outputs.parameters.verdict-json}}",
    }
    step_call("rollback", "rollback", settings, wired, when=WHEN_ROLLBACK)
    step_call("rollback-inconclusive", "rollback", settings, wired, when=WHEN_ROLLBACK_INCONCLUSIVE)


def guard_steps(settings: TemplateSettings) -> None:
    """The `guard` template's steps: analyze for `guard-duration` on the absolute limits only (no stable is
    left at 100 %), then the same rollback branches as after any analysis."""
    guard = {"duration": "{{workflow.parameters." + GUARD_DURATION + "}}", "absolute-only": "true"}
    analyze_step(settings, guard)
    with Parallel():
        rollback_steps(settings)


def preflight(settings: TemplateSettings) -> Step:
    """`rollguard notify --check` beside the first step: a bad notify URL stops the release before deploy."""
    wired = {name: "" for name in NOTIFY_CONTENT}
    wired.update({"check": "true", "workflow-name": "{{workflow.name}}"})
    return step_call("preflight", "notify", settings, wired)


def container_templates(commands: list[str], settings: TemplateSettings, kind: str = "release"
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


def release_workflow(name: str, entrypoint: str, description: str, parameters: list[FlagParameter],
                      settings: TemplateSettings) -> WorkflowTemplate:
    """canary-release or canary-analysis before its templates are added: the spec-level fields both
    share (why each: argocd/README.md, "What the templates ask of Argo, and why")."""
    return WorkflowTemplate(
        name=name,
        entrypoint=entrypoint,
        on_exit=EXIT_HANDLER,
        arguments=argument_parameters(parameters),
        annotations={"workflows.argoproj.io/description": description},
        service_account_name=settings.service_account or None,
        synchronization=Synchronization(mutexes=[RELEASE_MUTEX]),
        pod_metadata=Metadata(labels=dict(POD_LABELS)),
        active_deadline_seconds=deadline_seconds(name, settings),
        ttl_strategy=TTLStrategy(seconds_after_completion=settings.ttl_after_completion_s),
        pod_gc=PodGC(strategy="OnWorkflowSuccess", delete_delay_duration=settings.pod_gc_delay),
    )

