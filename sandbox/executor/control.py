"""`argo resume`, `argo stop` and `argo terminate` for a local run, and the wait of a `suspend` step.

A suspended step (Argo's `suspend` template) waits until it is resumed, its `duration` passes, the
workflow is stopped or terminated, or the workflow's deadline passes (operator.go executeSuspend,
failNodesWithoutCreatedPodsAfterDeadlineOrShutdown: "Stopped with strategy '<Stop|Terminate>'",
"Step exceeded its deadline"). A local run is resumed, stopped or terminated:

- from this process: `RunControl.resume() / stop() / terminate()` (the demo, tests), or
  `approve_after_s` (`run-local --approve` = 0 s, `--approve-after DURATION`), or the signals
  run-local installs (SIGUSR1 resume, SIGUSR2 stop; Ctrl-C terminates, as before);
- from another shell: `rollguard run-local --resume|--stop|--terminate NAME`, which leaves a file
  `NAME.resume|stop|terminate` in the control directory; the run polls for it (every 0.2 s) and
  announces itself there as `NAME.running` (holding its pid) while it runs.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

from rollguard.sandbox.executor.errors import ExecutorAborted, ExecutorError

POLL_S = 0.2
ACTIONS = ("resume", "stop", "terminate")


class Shutdown(str, Enum):
    """Argo's shutdown strategies (`spec.shutdown`): Stop runs the exit handler, Terminate does not."""

    STOP = "Stop"
    TERMINATE = "Terminate"


class WaitOutcome(str, Enum):
    """How a suspended step's wait ended."""

    RESUMED = "resumed"
    DURATION = "duration"  # suspend.duration passed: Argo resumes the node itself
    STOPPED = "stopped"
    DEADLINE = "deadline"


def default_control_dir() -> Path:
    """Where local runs look for resume/stop/terminate requests: one directory per user."""
    return Path(tempfile.gettempdir()) / f"rollguard-control-{os.getuid()}"


class RunControl:
    """Resume, stop and terminate requests for one run; see the module docstring."""

    def __init__(self, *, approve_after_s: float | None = None, control_dir: Path | None = None) -> None:
        self.approve_after_s = approve_after_s  # None: wait for a resume; 0: resume at once
        self.control_dir = control_dir
        self._resumed = threading.Event()
        self._changed = threading.Event()
        self._lock = threading.Lock()
        self._shutdown: Shutdown | None = None
        self._listeners: list[Callable[[Shutdown], None]] = []
        self._waiting = 0

    @property
    def shutdown(self) -> Shutdown | None:
        """The shutdown asked for, None while none was."""
        return self._shutdown

    def on_shutdown(self, listener: Callable[[Shutdown], None]) -> None:
        """Call `listener` when the run is stopped or terminated (the executor stops its running steps)."""
        self._listeners.append(listener)

    def resume(self) -> bool:
        """Resume the suspended steps (`argo resume`); False when none is waiting (nothing to resume)."""
        with self._lock:
            waiting = self._waiting > 0
            if waiting:
                self._resumed.set()
        self._changed.set()
        return waiting

    def stop(self) -> None:
        """`argo stop`: stop the running steps, start no more, run the exit handler."""
        self._shut(Shutdown.STOP)

    def terminate(self) -> None:
        """`argo terminate`: stop everything, the exit handler included."""
        self._shut(Shutdown.TERMINATE)

    def _shut(self, strategy: Shutdown) -> None:
        with self._lock:
            if self._shutdown is Shutdown.TERMINATE or self._shutdown is strategy:
                return
            self._shutdown = strategy
        self._changed.set()
        for listener in list(self._listeners):
            listener(strategy)

    def wait_suspended(self, duration_s: float | None, deadline_passed: Callable[[], bool],
                       aborted: Callable[[], str | None], exit_handler: bool = False) -> WaitOutcome:  # fmt: skip
        """Block while a step is suspended; how the wait ended (ExecutorAborted when the run is aborted)."""
        started = time.monotonic()
        with self._lock:
            self._waiting += 1
            self._resumed.clear()
        try:
            while True:
                reason = aborted()
                if reason is not None:
                    raise ExecutorAborted(f"run aborted while a step was suspended: {reason}")
                if self._shutdown is Shutdown.TERMINATE or (self._shutdown is Shutdown.STOP and not exit_handler):
                    return WaitOutcome.STOPPED
                if self._resumed.is_set():
                    return WaitOutcome.RESUMED
                elapsed = time.monotonic() - started
                if self.approve_after_s is not None and elapsed >= self.approve_after_s:
                    return WaitOutcome.RESUMED
                if duration_s is not None and elapsed >= duration_s:
                    return WaitOutcome.DURATION
                if deadline_passed() and not exit_handler:
                    return WaitOutcome.DEADLINE
                self._changed.wait(POLL_S)
                self._changed.clear()
        finally:
            with self._lock:
                self._waiting -= 1

    @contextmanager
    def watching(self, workflow_name: str) -> Iterator[None]:
        """While the run lasts: announce it in the control directory and act on request files left there."""
        if self.control_dir is None:
            yield
            return
        self.control_dir.mkdir(parents=True, exist_ok=True)
        running = self.control_dir / f"{workflow_name}.running"
        running.write_text(f"{os.getpid()}\n")
        done = threading.Event()

        def poll() -> None:
            while not done.wait(POLL_S):
                for action in ACTIONS:
                    request = self.control_dir / f"{workflow_name}.{action}"  # type: ignore[operator]
                    if request.exists():
                        request.unlink(missing_ok=True)
                        getattr(self, action)()

        watcher = threading.Thread(target=poll, name=f"control-{workflow_name}", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join(2)
            running.unlink(missing_ok=True)
            for action in ACTIONS:
                (self.control_dir / f"{workflow_name}.{action}").unlink(missing_ok=True)


def request(control_dir: Path, workflow_name: str, action: str) -> Path:
    """Ask the local run `workflow_name` to resume, stop or terminate; ExecutorError when no such run is going on."""
    if action not in ACTIONS:
        raise ExecutorError(f"no action {action!r}; choose one of {', '.join(ACTIONS)}")
    running = control_dir / f"{workflow_name}.running"
    if not running.exists():
        going = sorted(path.name.removesuffix(".running") for path in control_dir.glob("*.running"))
        raise ExecutorError(f"no local workflow {workflow_name!r} is running (control directory {control_dir}; "
                            f"running: {', '.join(going) or 'none'})")
    target = control_dir / f"{workflow_name}.{action}"
    target.write_text(f"{time.time()}\n")
    return target
