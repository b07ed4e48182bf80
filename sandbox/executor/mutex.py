"""A workflow-level `synchronization` mutex, held by local runs on one machine as Argo's controller holds it.

Argo (workflow/controller/operator.go operate(), v3.6.19) takes the workflow's locks before anything
runs; a workflow that cannot get them all stays Pending with the message "Waiting for <ns>/Mutex/
<name> lock. Lock status: 0/1" (workflow/sync/semaphore.go; a mutex is a semaphore of size 1),
and releases them when the workflow completes, exit handler included. The lock key is
`<namespace>/Mutex/<name>` (workflow/sync/lock_name.go), the namespace being the mutex's own or the
workflow's. Names may use global variables such as `{{workflow.parameters.namespace}}`: Argo
substitutes them in the spec before taking the lock (setExecWorkflow, since v3.1).

Spellings: `mutexes: [{name: ...}]` (v3.6 and later; v4 knows only this) and the legacy
`mutex: {name: ...}` (v3.5 to v3.7). Locally each key is an flock on a file under a lock directory
every run on the machine shares (run-local --lock-dir); the waiting run polls, so Ctrl-C and an
abort still stop it. Its workflow deadline starts once it holds the locks (StartedAt is set then).
"""

from __future__ import annotations

import fcntl
import os
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from rollguard.sandbox.executor.errors import ExecutorAborted
from rollguard.sandbox.executor.expressions import substitute, yaml_text
from rollguard.sandbox.executor.nodes import Event, EventKind, EventSink

POLL_S = 0.2


def mutex_keys(spec: dict[str, Any], variables: dict[str, str], namespace: str) -> list[str]:
    """The lock keys of the workflow's `synchronization` (none without one), global variables substituted."""
    synchronization = spec.get("synchronization") or {}
    mutexes = list(synchronization.get("mutexes") or [])
    if synchronization.get("mutex"):
        mutexes.append(synchronization["mutex"])
    keys = []
    for mutex in mutexes:
        name = substitute(yaml_text(mutex.get("name", "")), variables, "spec.synchronization mutex name")
        own = substitute(yaml_text(mutex.get("namespace") or ""), variables, "spec.synchronization mutex namespace")
        keys.append(f"{own or namespace}/Mutex/{name}")
    return keys


class WorkflowLocks:
    """Holds every key's lock from `with` to its end; waits (Pending) while another run holds one."""

    def __init__(
        self, keys: list[str], lock_dir: Path, holder: str, on_event: EventSink, aborted: Callable[[], str | None]
    ) -> None:
        self.keys = keys
        self.lock_dir = lock_dir
        self.holder = holder
        self.on_event = on_event
        self.aborted = aborted
        self._held: list[IO[str]] = []

    def __enter__(self) -> WorkflowLocks:
        if not self.keys:
            return self
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        waiting_for: str | None = None
        while True:
            busy = self._try_all()
            if busy is None:
                break
            if busy != waiting_for:
                waiting_for = busy
                self.on_event(Event(EventKind.NOTE, "", f"Pending: Waiting for {busy} lock. Lock status: 0/1 "
                                    f"(held by {self._holder_of(busy)})"))
            reason = self.aborted()
            if reason is not None:
                raise ExecutorAborted(f"run aborted while waiting for the {busy} lock: {reason}")
            time.sleep(POLL_S)
        if waiting_for is not None:
            self.on_event(Event(EventKind.NOTE, "", f"acquired the {', '.join(self.keys)} lock"))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._release()

    def _path(self, key: str) -> Path:
        return self.lock_dir / (urllib.parse.quote(key, safe="") + ".lock")

    def _try_all(self) -> str | None:
        """Take every lock, or none: the key that is busy (all released again), None when all are held."""
        for key in self.keys:
            stream = self._path(key).open("a+")
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                stream.close()
                self._release()
                return key
            stream.seek(0)
            stream.truncate()
            stream.write(f"{self.holder} (pid {os.getpid()})\n")
            stream.flush()
            self._held.append(stream)
        return None

    def _holder_of(self, key: str) -> str:
        try:
            return self._path(key).read_text().strip() or "another run"
        except OSError:
            return "another run"

    def _release(self) -> None:
        for stream in self._held:
            fcntl.flock(stream, fcntl.LOCK_UN)
            stream.close()
        self._held = []
