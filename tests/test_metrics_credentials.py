"""Basic-auth credentials in --prometheus-url reach Prometheus and nothing else (logs, verdict, errors)."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollguard.sandbox.ports import free_port
from rollguard.steps.metrics.prometheus_client import redacted_url, split_credentials

SECRET = "s3cr%3At-pw"  # percent-encoded ':' in the password, as a URL must carry it


@pytest.mark.parametrize(
    ("url", "clean", "credentials"),
    [
        ("http://prometheus:9090", "http://prometheus:9090", None),
        ("https://alice:pw@prom.example.com:9443/base", "https://prom.example.com:9443/base", ("alice", "pw")),
        (f"http://alice:{SECRET}@[::1]:9090", "http://[::1]:9090", ("alice", "s3cr:t-pw")),
        ("http://token@prom:9090", "http://prom:9090", ("token", "")),
    ],
)
def test_split_credentials(url: str, clean: str, credentials: tuple[str, str] | None) -> None:
    assert split_credentials(url) == (clean, credentials)
    assert "pw" not in redacted_url(url).split("@")[0].replace("https", "")


@pytest.fixture
def guarded_prometheus() -> Iterator[tuple[str, list[str]]]:
    """A loopback server speaking Prometheus's query API that demands basic auth alice:s3cr:t-pw."""
    seen: list[str] = []
    expected = "Basic " + base64.b64encode(b"alice:s3cr:t-pw").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://alice:{SECRET}@127.0.0.1:{port}", seen
    server.shutdown()


def test_credentials_reach_prometheus_and_never_the_output(
    guarded_prometheus: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = guarded_prometheus
    verdict_file = tmp_path / "verdict.json"
    completed = subprocess.run(
        [sys.executable, "-m", "rollguard.steps.cli", "analyze", "--prometheus-url", url, "--namespace", "demo",
         "--service", "podinfo", "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s",
         "--duration", "1s", "--verdict-file", str(verdict_file)],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 3, completed.stderr  # no data at the end: inconclusive, never pass
    assert seen and all(header.startswith("Basic ") for header in seen)
    assert all(base64.b64decode(header.split()[1]) == b"alice:s3cr:t-pw" for header in seen)
    output = completed.stdout + completed.stderr + verdict_file.read_text()
    for secret in ("s3cr", SECRET):
        assert secret not in output
    assert json.loads(verdict_file.read_text())["settings"]["prometheus_url"].startswith("http://127.0.0.1:")
