"""Run a real `prometheus` process on loopback with a generated config (tests, sandbox, experiment).

The binary is `$PROMETHEUS_BIN` if set, else `prometheus` on PATH (Debian package `prometheus`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from ruamel.yaml import YAML

from rollguard.sandbox.ports import free_port, port_is_free
from rollguard.sandbox.processes import die_with_parent
from rollguard.steps.output_files import write_atomically

log = logging.getLogger(__name__)


class PrometheusError(RuntimeError):
    """Prometheus could not be found or started; the message says why and what to do."""


@dataclass(frozen=True)
class ScrapeJob:
    """One scrape job: a name and `host:port` targets."""

    name: str
    targets: list[str]
    metrics_path: str = "/metrics"


def find_binary() -> str:
    """Path of the prometheus binary, or a PrometheusError explaining how to get one."""
    configured = os.environ.get("PROMETHEUS_BIN")
    if configured:
        if not (Path(configured).is_file() and os.access(configured, os.X_OK)):
            raise PrometheusError(f"PROMETHEUS_BIN={configured} is not an executable file")
        return configured
    found = shutil.which("prometheus")
    if found:
        return found
    raise PrometheusError(
        "the `prometheus` binary was not found on PATH. Install it with `./run.sh setup` (Debian "
        "package `prometheus`), or set PROMETHEUS_BIN to the path of a prometheus binary."
    )


@dataclass
class PrometheusServer:
    """A prometheus process with its own data directory, scraping `jobs` every `scrape_interval_s`.

    Use as a context manager, or call start() / stop(). `rule_files` are copied into the config as
    given (absolute paths). The process is stopped and its directory removed on stop().
    """

    jobs: list[ScrapeJob]
    scrape_interval_s: float = 1.0
    evaluation_interval_s: float = 1.0
    rule_files: list[Path] = field(default_factory=list)
    port: int | None = None
    start_timeout_s: float = 30.0
    workdir: Path | None = None
    die_with_parent: bool = True  # SIGTERM to prometheus if this process dies, even by SIGKILL (Linux)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _owned_dir: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:9090."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """File that receives Prometheus's own log."""
        assert self.workdir is not None
        return self.workdir / "prometheus.log"

    def config_text(self) -> str:
        """The prometheus.yml this server runs with."""
        config = {
            "global": {
                "scrape_interval": _seconds(self.scrape_interval_s),
                "scrape_timeout": _seconds(min(self.scrape_interval_s, 10.0)),
                "evaluation_interval": _seconds(self.evaluation_interval_s),
            },
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "metrics_path": job.metrics_path,
                    "static_configs": [{"targets": list(job.targets)}],
                }
                for job in self.jobs
            ],
        }
        yaml = YAML()
        yaml.default_flow_style = False
        from io import StringIO

        buffer = StringIO()
        yaml.dump(config, buffer)
        return buffer.getvalue()

    def start(self) -> PrometheusServer:
        """Start the process and wait (bounded) until /-/ready answers 200."""
        binary = find_binary()
        if self.workdir is None:
            self._owned_dir = tempfile.TemporaryDirectory(prefix="rollguard-prometheus-")
            self.workdir = Path(self._owned_dir.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        elif not port_is_free(self.port):
            raise PrometheusError(
                f"port {self.port} on 127.0.0.1 is already in use; stop what listens there or choose another port"
            )
        config_path = self.workdir / "prometheus.yml"
        write_atomically(config_path, self.config_text())
        data_dir = self.workdir / "data"
        data_dir.mkdir(exist_ok=True)
        command = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        log_file = self.log_path.open("ab")
        # The parent-death signal is tied to the thread that forks: only ask for it from the main thread.
        tie = self.die_with_parent and threading.current_thread() is threading.main_thread()
        self.process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent if tie else None,
        )
        log_file.close()
        self._wait_ready()
        log.info("prometheus started at %s (pid %s, scrape every %ss)", self.url, self.process.pid,
                 self.scrape_interval_s)
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise PrometheusError(
                    f"prometheus exited with code {self.process.returncode} while starting on port "
                    f"{self.port}: {tail}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200 and self.process.poll() is None:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise PrometheusError(f"prometheus did not become ready within {self.start_timeout_s}s: {tail}")

    def log_tail(self, lines: int = 5) -> str:
        """Last lines of Prometheus's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or "(empty log)"

    def kill(self) -> None:
        """Kill the process abruptly (SIGKILL) — for fault tests; the data directory stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s) and remove its directory if owned."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._owned_dir is not None:
            self._owned_dir.cleanup()
            self._owned_dir = None
            self.workdir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _seconds(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value)}s"
    return f"{round(value * 1000)}ms"
