"""Supervision of the sandbox's child processes: start, health-wait, watch, and always stop.

Every child runs in its own session (its own process group), so stopping it also stops anything it
started. A Supervisor stops its children when its `with` block ends, at interpreter exit (atexit),
and on SIGTERM/SIGINT (turned into KeyboardInterrupt, so the normal clean-up path runs).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from rollguard.sandbox.ports import port_is_free, wait_listening

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[Supervisor] = weakref.WeakSet()

_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None
if sys.platform == "linux":
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the supervising process dies, even by SIGKILL."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class SandboxError(RuntimeError):
    """A sandbox component could not start or died; the message names it and says why."""


class ChildDied(SandboxError):
    """A supervised child exited while the sandbox was supposed to be running."""


@dataclass
class Child:
    """One supervised process and the file that holds its output."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 6) -> str:
        """Last lines of the child's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no output)"
        return " | ".join(text[-lines:]) or "(no output)"


@dataclass(eq=False)
class Supervisor:
    """Starts children with health checks and stops all of them, in reverse order, exactly once."""

    log_dir: Path
    tie_to_parent: bool = True  # children get SIGTERM if this process dies (off for `sandbox up`)
    children: list[Child] = field(default_factory=list)
    cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    watched: list[tuple[str, Callable[[], int | None]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        _LIVE.add(self)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        port: int | None = None,
        health_url: str | None = None,
        deadline_s: float = 20.0,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start `argv` as `name`; wait until `health_url` answers 200 (or `port` listens)."""
        if port is not None and not port_is_free(port):
            raise SandboxError(f"{name}: port {port} on 127.0.0.1 is already in use; stop what listens there "
                               "or let the sandbox pick free ports")
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("ab") as output:
            try:
                tie = self.tie_to_parent and threading.current_thread() is threading.main_thread()
                process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           start_new_session=True, env={**os.environ, **(env or {})},
                                           preexec_fn=die_with_parent if tie else None)
            except OSError as exc:
                raise SandboxError(f"{name}: cannot start {argv[0]}: {exc}") from None
        child = Child(name, argv, process, log_path)
        with self._lock:
            self.children.append(child)
        self._wait_healthy(child, port, health_url, deadline_s)
        log.info("%s started (pid %d)", name, process.pid)
        return child

    def _wait_healthy(self, child: Child, port: int | None, health_url: str | None, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise SandboxError(f"{child.name} exited with code {child.process.returncode} while starting: "
                                   f"{child.log_tail()}")
            if health_url is not None:
                try:
                    with urllib.request.urlopen(health_url, timeout=1) as response:
                        if response.status == 200:
                            return
                except (urllib.error.URLError, OSError):
                    pass
            elif port is not None:
                if wait_listening(port, 0.2):
                    return
            else:
                return
            time.sleep(0.05)
        raise SandboxError(f"{child.name} did not become healthy within {deadline_s:.0f} s: {child.log_tail()}")

    def add_cleanup(self, name: str, stop: Callable[[], None], poll: Callable[[], int | None] | None = None) -> None:
        """Stop `name` with `stop()` when the supervisor stops; `poll()` (exit code or None) lets check() watch it."""
        with self._lock:
            self.cleanups.append((name, stop))
            if poll is not None:
                self.watched.append((name, poll))

    def stop(self, name: str, grace_s: float = 5.0) -> Child:
        """Stop the child `name` on purpose (SIGTERM, SIGKILL after `grace_s`) and stop watching it; returns it."""
        with self._lock:
            found = [child for child in self.children if child.name == name]
            if not found:
                raise SandboxError(f"no running sandbox component named {name!r}")
            self.children = [child for child in self.children if child.name != name]
        stop_process_group(found[0].process.pid, found[0].process, grace_s=grace_s)
        return found[0]

    def check(self) -> None:
        """Raise ChildDied naming the first child that has exited."""
        for child in list(self.children):
            code = child.process.poll()
            if code is not None:
                raise ChildDied(f"{child.name} (pid {child.process.pid}) {describe_exit(code)}; its last output: "
                                f"{child.log_tail()}")
        for name, poll in list(self.watched):
            code = poll()
            if code is not None:
                raise ChildDied(f"{name} {describe_exit(code)}")

    def stop_all(self) -> None:
        """Stop every child (SIGTERM to its process group, SIGKILL after 5 s) and run the clean-ups."""
        with self._lock:
            children, self.children = self.children, []
            cleanups, self.cleanups = self.cleanups, []
            self.watched = []
        for child in reversed(children):
            stop_process_group(child.process.pid, child.process)
        for name, stop in reversed(cleanups):
            try:
                stop()
            except Exception as exc:  # clean-up must go on with the others
                log.warning("stopping %s failed: %s", name, exc)

    def detach(self) -> list[Child]:
        """Forget the children without stopping them (for `rollguard sandbox up`); returns them."""
        with self._lock:
            children, self.children = self.children, []
            self.cleanups, self.watched = [], []
        return children

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop_all()


def describe_exit(code: int) -> str:
    """`died with exit code 3` or `was killed by SIGKILL` (Popen's negative codes are signals)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"died with exit code {code}"


def stop_process_group(pid: int, process: subprocess.Popen[bytes] | None = None, grace_s: float = 5.0) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it if still alive after `grace_s`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        if process is not None:
            process.poll()
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                break
        elif not _alive(pid):
            break
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)  # the leader may be gone while a grandchild lingers
    except (ProcessLookupError, PermissionError):
        pass
    if process is not None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("process %d did not exit after SIGKILL", pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_everything() -> None:
    for supervisor in list(_LIVE):
        supervisor.stop_all()


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def install_signal_handlers() -> None:
    """Turn SIGTERM (and SIGINT, SIGHUP) into KeyboardInterrupt so `with` blocks stop the children."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _interrupt)


atexit.register(_stop_everything)
