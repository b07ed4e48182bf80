"""A `suspend` step run locally: wait for a resume, its duration, a stop or the deadline (operator.go executeSuspend).

How to resume is rollguard.sandbox.executor.control (run-local --resume, --stop, --terminate, SIGUSR1, or an
automatic approval after a delay); this module turns the wait's outcome into the node Argo would record.
"""

from __future__ import annotations

import time
from typing import Any

from rollguard.sandbox.executor.control import RunControl, WaitOutcome
from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import substitute, yaml_text
from rollguard.sandbox.executor.nodes import Event, EventKind, EventSink, NodeResult, Phase
from rollguard.sandbox.executor.step_process import StepProcesses
from rollguard.steps.options import parse_duration


def run_suspend(
    template: dict[str, Any], variables: dict[str, str], exit_handler: bool, display: str, identity: str, where: str,
    *, workflow_name: str, control: RunControl, processes: StepProcesses, on_event: EventSink,
) -> NodeResult:
    """Wait as the `suspend` template says; the node (not yet recorded) Succeeded, or Failed on a stop or deadline.

    `exit_handler`: the step runs inside onExit, where the workflow deadline does not apply.
    """
    started = time.time()
    raw = (template.get("suspend") or {}).get("duration")
    duration_s = None
    if raw is not None:
        text = substitute(yaml_text(raw), variables, f"{where} suspend.duration")
        try:
            duration_s = parse_duration(text)
        except ValueError as exc:
            raise ExecutorError(f"{where}: suspend.duration {text!r}: {exc}") from None
    how = (f"run-local --resume {workflow_name} (or --stop, --terminate), or SIGUSR1 to run-local"
           if control.approve_after_s is None else f"resumed after {control.approve_after_s:g} s")
    on_event(Event(EventKind.STARTED, display, f"suspended, waiting for `argo resume`: {how}"))
    outcome = control.wait_suspended(duration_s, processes.deadline_passed, processes.abort_reason, exit_handler)
    phase, message = Phase.SUCCEEDED, ""  # util.ResumeWorkflow: "Resumed by: <user>" only with a user's identity
    if outcome in (WaitOutcome.RESUMED, WaitOutcome.DURATION):
        why = "resumed (argo resume)" if outcome is WaitOutcome.RESUMED else "its suspend.duration passed"
        on_event(Event(EventKind.NOTE, display, why))
    elif outcome is WaitOutcome.STOPPED:
        strategy = control.shutdown.value if control.shutdown else "Stop"
        phase, message = Phase.FAILED, f"Stopped with strategy '{strategy}'"
    elif outcome is WaitOutcome.DEADLINE:
        phase, message = Phase.FAILED, "Step exceeded its deadline"
    return NodeResult(display, str(template["name"]), phase, message=message, started_at=started,
                      finished_at=time.time(), node_id=identity)
