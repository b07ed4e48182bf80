"""A workflow's activeDeadlineSeconds, as Argo's controller enforces it.

The deadline counts from the workflow's start (operator.go getWorkflowDeadline: Status.StartedAt,
set once the workflow runs — so after its mutexes — truncated to the second). When it passes,
running and not yet started steps are stopped and Failed with "Step exceeded its deadline"
(exec_control.go applyExecutionControl; operator.go failNodesWithoutCreatedPodsAfterDeadlineOrShutdown),
retries stop ("retry exceeded workflow deadline ..."), the workflow ends Failed with its entry
node's message, and the exit handler still runs (workflowpod.go: "ignore the workflow deadline for
exit handler so they still run if the deadline has passed").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rollguard.sandbox.executor.container import ContainerRunner
from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.expressions import substitute, yaml_text
from rollguard.sandbox.executor.nodes import Event, EventKind, EventSink
from rollguard.sandbox.executor.step_process import StepProcesses


@contextmanager
def workflow_deadline(
    spec: dict[str, Any], variables: dict[str, str], where: str, containers: ContainerRunner,
    processes: StepProcesses, on_event: EventSink,
) -> Iterator[None]:
    """Enforce spec.activeDeadlineSeconds (if any) while the `with` block runs the workflow."""
    raw = spec.get("activeDeadlineSeconds")
    if raw is None:
        yield
        return
    text = substitute(yaml_text(raw), variables, f"{where} activeDeadlineSeconds")
    try:
        seconds = int(text)
    except ValueError:
        raise ExecutorError(f"{where}: activeDeadlineSeconds {text!r} is not a whole number of seconds") from None
    deadline = int(time.time()) + seconds
    containers.workflow_deadline = deadline

    def expire() -> None:
        on_event(Event(EventKind.NOTE, "", f"workflow deadline (activeDeadlineSeconds {seconds}) exceeded: stopping "
                       "the running steps; the exit handler still runs"))
        processes.pass_deadline()

    timer = threading.Timer(max(0.0, deadline - time.time()), expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
