"""Real Prometheus-compatible backends for tests: VictoriaMetrics (single-node, scraping synthetic Istio traffic
with -promscrape.config) and vmauth, its authenticating proxy; both from the Debian package victoria-metrics,
which ./run.sh installs."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rollguard.sandbox.ports import free_port


def binary(name: str) -> str:
    """The binary's path; skip (locally) when ./run.sh has not installed the package yet."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (./run.sh installs the Debian package victoria-metrics)")
    return found


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers (vmauth answers 401 without a token)
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {deadline_s}s: {log.read_text()[-2000:]}")


@contextmanager
def _process(command: list[str], ready_url: str, workdir: Path) -> Iterator[None]:
    log = workdir / (Path(command[0]).name + ".log")
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        _wait_ready(ready_url, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def victoria_metrics(targets: list[str], scrape_interval_s: float = 1.0) -> Iterator[str]:
    """A VictoriaMetrics scraping `targets` every second; yields its base URL (the Prometheus query API)."""
    executable = binary("victoria-metrics")
    with tempfile.TemporaryDirectory(prefix="rollguard-vm-") as directory:
        workdir = Path(directory)
        config = workdir / "scrape.yml"
        config.write_text(
            f"global:\n  scrape_interval: {scrape_interval_s:g}s\nscrape_configs:\n"
            f"  - job_name: istio\n    static_configs:\n      - targets: [{', '.join(targets)}]\n"
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            executable, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={workdir / 'data'}",
            f"-promscrape.config={config}",
            # VictoriaMetrics hides the last 30 s from queries by default (samples still arriving);
            # a 1 s scrape needs the newest samples, as a Prometheus gives them.
            "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=ERROR",
        ]
        with _process(command, f"{url}/health", workdir):
            yield url


@contextmanager
def vmauth(upstream: str, bearer_token: str) -> Iterator[str]:
    """vmauth in front of `upstream`, letting through only requests with `Authorization: Bearer <token>`."""
    executable = binary("vmauth")
    with tempfile.TemporaryDirectory(prefix="rollguard-vmauth-") as directory:
        workdir = Path(directory)
        config = workdir / "auth.yml"
        config.write_text(f"users:\n  - bearer_token: {bearer_token!r}\n    url_prefix: {upstream!r}\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [executable, f"-httpListenAddr=127.0.0.1:{port}", f"-auth.config={config}", "-loggerLevel=ERROR"]
        with _process(command, f"{url}/api/v1/query?query=1", workdir):
            yield url


@contextmanager
def nginx_tenant_gateway(upstream: str, tenant: str, bearer_token: str) -> Iterator[str]:
    """nginx (Debian package nginx) in front of `upstream` as a Mimir/Cortex gateway is run: it refuses with
    401 a request without `X-Scope-OrgID: <tenant>` or without `Authorization: Bearer <token>`."""
    executable = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if executable is None:
        pytest.skip("nginx is not installed (./run.sh installs the Debian package nginx)")
    with tempfile.TemporaryDirectory(prefix="rollguard-nginx-") as directory:
        workdir = Path(directory)
        port = free_port()
        temp = " ".join(f"{kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
        (workdir / "nginx.conf").write_text(f"""
daemon off; master_process off; pid {workdir / 'nginx.pid'}; error_log {workdir / 'error.log'} warn;
events {{}}
http {{
  access_log off; {temp}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      if ($http_x_scope_orgid != "{tenant}") {{ return 401 "no tenant: X-Scope-OrgID missing or unknown\\n"; }}
      if ($http_authorization != "Bearer {bearer_token}") {{ return 401 "unauthorized\\n"; }}
      proxy_pass {upstream};
    }}
  }}
}}
""")
        url = f"http://127.0.0.1:{port}"
        with _process([executable, "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                      f"{url}/api/v1/query?query=1", workdir):
            yield url
