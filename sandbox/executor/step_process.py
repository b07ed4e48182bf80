"""One container step's command as a local process: started in its own process group, its output streamed as
events, stopped on a timeout, and stopped (with every other running step) when the run is aborted.

Step processes also die with this process, even on SIGKILL. The command `rollguard` runs this
installation's CLI (`python -m rollguard.steps.cli`).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from rollguard.sandbox.executor.errors import ExecutorAborted
from rollguard.sandbox.executor.nodes import Event, EventKind, EventSink, NodeResult, Phase
from rollguard.sandbox.processes import die_with_parent, stop_process_group

POD_DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
# workflow/controller/exec_control.go applyExecutionControl, operator.go failNodesWithoutCreatedPods...:
# past the workflow's activeDeadlineSeconds, running and pending pods (not the exit handler's) are
# terminated and their nodes Failed with this message
STEP_DEADLINE_MESSAGE = "Step exceeded its deadline"
# exec_control.go applyExecutionControl (a running pod killed: two spaces) and workflowpod.go createWorkflowPod
# (no pod created: one space), when the workflow is stopped or terminated
KILLED_AT_SHUTDOWN = "workflow shutdown with strategy:  {}"
NOT_STARTED_AT_SHUTDOWN = "workflow shutdown with strategy: {}"
LOG_TAIL_LINES = 80  # the kubelet's FallbackToLogsOnError keeps at most 80 lines or 2048 bytes of the log


class StepProcesses:
    """The step processes running now, so that an abort (Ctrl-C, a broken sandbox) can stop every one."""

    def __init__(self, on_event: EventSink) -> None:
        self.on_event = on_event
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified on an abort, a shutdown, the deadline
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._exempt: set[int] = set()  # pids of exit-handler steps, which the workflow deadline spares
        self._stopped_at_deadline: set[int] = set()
        self._stopped_at_shutdown: set[int] = set()
        self._shutdown: str | None = None  # "Stop" or "Terminate" once the workflow is shut down
        self._abort_reason: str | None = None
        self._aborted = threading.Event()
        self._deadline_passed = threading.Event()

    def pass_deadline(self) -> None:
        """The workflow's deadline has passed: stop its running steps (not the exit handler's), start none."""
        with self._lock:
            self._deadline_passed.set()
            running = [process for pid, process in self._running.items() if pid not in self._exempt]
            self._stopped_at_deadline.update(process.pid for process in running)
            self._changed.notify_all()
        for process in running:
            stop_process_group(process.pid, None, grace_s=2.0)

    def shutdown(self, strategy: str) -> None:
        """The workflow is stopped (its exit handler still runs) or terminated (nothing more runs): stop the
        running steps it spares none of, start no more such steps."""
        with self._lock:
            self._shutdown = strategy
            running = [process for pid, process in self._running.items()
                       if strategy == "Terminate" or pid not in self._exempt]
            self._stopped_at_shutdown.update(process.pid for process in running)
            self._changed.notify_all()
        for process in running:
            stop_process_group(process.pid, None, grace_s=2.0)

    @property
    def shutdown_strategy(self) -> str | None:
        """"Stop" or "Terminate" once the workflow is shut down, else None."""
        return self._shutdown

    def deadline_passed(self) -> bool:
        """True once the workflow's deadline has passed."""
        return self._deadline_passed.is_set()

    def shut_down_for(self, exit_handler: bool) -> str | None:
        """The shutdown strategy that stops a step of this kind ("Stop" spares the exit handler), else None."""
        strategy = self._shutdown
        if strategy is None or (strategy == "Stop" and exit_handler):
            return None
        return strategy

    def abort(self, reason: str) -> None:
        """Stop the running steps and start no more (from another thread, e.g. when the sandbox breaks)."""
        with self._lock:
            self._abort_reason = reason
            running = list(self._running.values())
            self._changed.notify_all()
        self._aborted.set()
        for process in running:
            stop_process_group(process.pid, None, grace_s=2.0)

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` (a retry's backoff); an abort ends the wait with ExecutorAborted."""
        if self._aborted.wait(seconds):
            raise ExecutorAborted(f"run aborted during a retry's backoff: {self._abort_reason}")

    def abort_reason(self) -> str | None:
        """Why the run was aborted, None while it was not."""
        return self._abort_reason

    def run(
        self, argv: list[str], environment: dict[str, str], cwd: Path | None, display: str, template: str,
        timeout_s: float | None, attempt: int, exit_handler: bool = False, command: list[str] | None = None,
        pod_start_s: float = 0.0,
    ) -> NodeResult:
        """Run `argv` to its end (or its timeout); Succeeded on exit 0, else Failed; Error if it cannot start.

        `pod_start_s` (run-local --pod-start-delay) is how long the pod takes to start — scheduling, image
        pull, container creation — before main runs: the node is Pending ("pod starting") that long, and
        a stop, terminate, abort or the workflow deadline in that time ends it without running main, as
        Argo deletes a pending pod (exec_control.go applyExecutionControl, PodPending). The node's
        `started_at` is its creation, `running_at` main's start. The template's own timeout counts
        from main's start.

        `command` is what actually runs `argv` when that is not a local process (a step image's); the
        progress events show `argv`. An exit handler's step is not subject to the workflow deadline
        (workflowpod.go: "ignore the workflow deadline for exit handler so they still run if the
        deadline has passed").
        """
        command = _resolve_command(argv) if command is None else command
        started = time.time()
        if self._abort_reason is not None:
            raise ExecutorAborted(f"run aborted before {display} started: {self._abort_reason}")
        strategy = self.shut_down_for(exit_handler)
        if strategy is not None:  # no pod is created during a shutdown (workflowpod.go createWorkflowPod)
            return NodeResult(display, template, Phase.FAILED, message=NOT_STARTED_AT_SHUTDOWN.format(strategy),
                              started_at=started, finished_at=started)
        if self._deadline_passed.is_set() and not exit_handler:
            return NodeResult(display, template, Phase.FAILED, message=STEP_DEADLINE_MESSAGE, started_at=started,
                              finished_at=started)
        if pod_start_s > 0:
            ended = self._start_pod(display, template, started, pod_start_s, exit_handler)
            if ended is not None:
                return ended
        shown = " ".join(argv) + (f" (attempt {attempt + 1})" if attempt else "")
        running_at = time.time()
        self.on_event(Event(EventKind.STARTED, display, shown))
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=environment, cwd=cwd,
                                       start_new_session=True,
                                       # dies with us even on SIGKILL; safe from a worker thread, which
                                       # waits for the process (the signal follows the forking thread)
                                       preexec_fn=die_with_parent)
        except OSError as exc:
            return NodeResult(display, template, Phase.ERROR, message=f"cannot start {argv[0]}: {exc}",
                              started_at=started, finished_at=time.time())
        with self._lock:
            self._running[process.pid] = process
            if exit_handler:
                self._exempt.add(process.pid)
            aborted = self._abort_reason is not None
            late = self._deadline_passed.is_set() and not exit_handler
            if late:
                self._stopped_at_deadline.add(process.pid)
            shut = self.shut_down_for(exit_handler) is not None
            if shut:
                self._stopped_at_shutdown.add(process.pid)
        if aborted or late or shut:  # abort(), the deadline or a shutdown came before the registration: stop it
            stop_process_group(process.pid, None, grace_s=2.0)
        timed_out = threading.Event()
        timer = None
        if timeout_s is not None:
            def expire() -> None:
                timed_out.set()
                stop_process_group(process.pid, None, grace_s=2.0)

            timer = threading.Timer(timeout_s, expire)
            timer.daemon = True
            timer.start()
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                tail.append(line)
                self.on_event(Event(EventKind.LOG, display, line))
            code = process.wait()
        except BaseException:
            stop_process_group(process.pid, process, grace_s=3.0)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._running.pop(process.pid, None)
                self._exempt.discard(process.pid)
        if self._abort_reason is not None:
            raise ExecutorAborted(f"run aborted while {display} ran: {self._abort_reason}")
        if process.pid in self._stopped_at_shutdown:
            return NodeResult(display, template, Phase.FAILED, code,
                              message=KILLED_AT_SHUTDOWN.format(self._shutdown), started_at=started,
                              finished_at=time.time(), running_at=running_at)
        if process.pid in self._stopped_at_deadline:
            return NodeResult(display, template, Phase.FAILED, code, message=STEP_DEADLINE_MESSAGE,
                              started_at=started, finished_at=time.time(), running_at=running_at)
        if timed_out.is_set():  # the kubelet ends a pod past its activeDeadlineSeconds: node Failed, its message
            return NodeResult(display, template, Phase.FAILED, code, message=POD_DEADLINE_MESSAGE,
                              started_at=started, finished_at=time.time(), running_at=running_at)
        phase = Phase.SUCCEEDED if code == 0 else Phase.FAILED
        # workflow/controller/operator.go inferFailedReason: "<reason> (exit code N)"; the kubelet's reason is Error
        message = "" if code == 0 else f"Error (exit code {code})"
        return NodeResult(display, template, phase, code, message=message, started_at=started,
                          finished_at=time.time(), log_tail=list(tail), running_at=running_at)

    def _start_pod(
        self, display: str, template: str, created: float, pod_start_s: float, exit_handler: bool
    ) -> NodeResult | None:
        """Wait `pod_start_s` as a starting pod would; the node's result when a shutdown or the deadline ended
        the wait (the pending pod is deleted, main never runs), None when main may start."""
        self.on_event(Event(EventKind.PENDING, display, f"pod starting: {pod_start_s:g} s, --pod-start-delay"))
        until = time.monotonic() + pod_start_s

        def interrupted() -> bool:
            return (self._abort_reason is not None or self.shut_down_for(exit_handler) is not None
                    or (self._deadline_passed.is_set() and not exit_handler))

        with self._changed:
            while not interrupted():
                remaining = until - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
        if self._abort_reason is not None:
            raise ExecutorAborted(f"run aborted while {display}'s pod started: {self._abort_reason}")
        # exec_control.go applyExecutionControl, PodPending: the pod is deleted, the node Failed with the
        # running pod's message ("workflow shutdown with strategy:  Stop", "Step exceeded its deadline")
        strategy = self.shut_down_for(exit_handler)
        message = KILLED_AT_SHUTDOWN.format(strategy) if strategy is not None else STEP_DEADLINE_MESSAGE
        return NodeResult(display, template, Phase.FAILED, message=message, started_at=created,
                          finished_at=time.time())


def _resolve_command(argv: list[str]) -> list[str]:
    if argv and argv[0] == "rollguard":
        return [sys.executable, "-m", "rollguard.steps.cli", *argv[1:]]
    return argv
