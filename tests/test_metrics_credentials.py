"""Basic-auth credentials in --prometheus-url reach Prometheus and nothing else: not the logs, the verdict
files, error messages, the rollback commit that quotes the verdict or its result file — whatever the
password holds (`/`, `?`, `#`, `@`, `:`)."""

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
from git_remote import MANIFEST_PATH, git, make_remote

from rollguard.sandbox.ports import free_port
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.metrics.prometheus_url import BasicAuth, PrometheusUrlError, parse_prometheus_url, redacted

SECRET = "s3cr%3At-pw"  # percent-encoded ':' in the password, as a URL must carry it
RAW_SECRET = "s3cr/et?PW#x@y"  # pasted as is: an RFC 3986 parser ends the user info at the '/'
ROLLGUARD = str(Path(sys.executable).parent / "rollguard")


@pytest.mark.parametrize(
    ("url", "clean", "credentials"),
    [
        ("http://prometheus:9090", "http://prometheus:9090", None),
        ("https://alice:pw@prom.example.com:9443/base", "https://prom.example.com:9443/base", ("alice", "pw")),
        (f"http://alice:{SECRET}@[::1]:9090", "http://[::1]:9090", ("alice", "s3cr:t-pw")),
        ("http://token@prom:9090", "http://prom:9090", ("token", "")),
        ("http://alice:s3cr/etPW@prom:9090/base/", "http://prom:9090/base", ("alice", "s3cr/etPW")),
        (f"http://alice:{RAW_SECRET}@prom:9090", "http://prom:9090", ("alice", RAW_SECRET)),
        ("HTTP://Alice:p@ss:w@prom", "http://prom", ("Alice", "p@ss:w")),
    ],
)
def test_credentials_are_split_from_the_url(url: str, clean: str, credentials: tuple[str, str] | None) -> None:
    parsed = parse_prometheus_url(url)
    assert parsed.url == clean
    assert parsed.auth == (None if credentials is None else BasicAuth(*credentials))
    assert "pw" not in redacted(url).replace("https", "") and "s3cr" not in redacted(url)
    assert "s3cr" not in repr(parsed)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://alice:s3cr/etPW@prom:99999", "port '99999' is not a number from 1 to 65535"),
        ("http://alice:s3cr/etPW@prom:90x", "port '90x' is not a number from 1 to 65535"),
        ("http://[::1:9090", "is not an IPv6 address in brackets"),
        ("http://[fd00::zz]:9090", "is not an IPv6 address in brackets"),
        ("http://fd00::1:9090", "an IPv6 address goes in brackets"),
        ("ftp://alice:s3cr/etPW@prom:9090", "must be an http:// or https:// URL"),
        ("http://alice:s3cr/etPW@:9090", "has no host"),
        ("http://prom:9090/?x=1", "leave out ?query and #fragment"),
    ],
)
def test_unusable_urls_are_refused_without_showing_the_password(url: str, message: str) -> None:
    with pytest.raises(PrometheusUrlError) as refused:
        parse_prometheus_url(url)
    assert message in str(refused.value)
    assert "s3cr" not in str(refused.value) and "etPW" not in str(refused.value)


@pytest.fixture
def guarded_prometheus() -> Iterator[tuple[str, list[str]]]:
    """A loopback server speaking Prometheus's query API that demands basic auth alice:RAW_SECRET."""
    seen: list[str] = []
    expected = "Basic " + base64.b64encode(f"alice:{RAW_SECRET}".encode()).decode()

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
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://alice:{RAW_SECRET}@127.0.0.1:{port}", seen
    server.shutdown()


def analyze(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ROLLGUARD, "analyze", "--prometheus-url", url, "--namespace", "demo", "--service", "podinfo",
         "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s", "--duration", "1s",
         "--verdict-file", str(out / "verdict.json"), "--verdict-summary-file", str(out / "summary.json"),
         "--verdict-word-file", str(out / "word"), *extra],
        capture_output=True, text=True, timeout=60,
    )


def assert_no_secret(text: str) -> None:
    for fragment in ("s3cr", "et?PW", "PW#x", "x@y"):
        assert fragment not in text


def test_credentials_reach_prometheus_and_never_the_output(
    guarded_prometheus: tuple[str, list[str]], tmp_path: Path
) -> None:
    url, seen = guarded_prometheus
    completed = analyze(url, tmp_path)
    assert completed.returncode == ExitCode.INCONCLUSIVE, completed.stderr  # no data at the end, never pass
    assert seen and all(header.startswith("Basic ") for header in seen)
    assert all(base64.b64decode(header.split()[1]).decode() == f"alice:{RAW_SECRET}" for header in seen)
    files = "".join(path.read_text() for path in tmp_path.iterdir())
    assert_no_secret(completed.stdout + completed.stderr + files)
    assert json.loads((tmp_path / "verdict.json").read_text())["settings"]["prometheus_url"] == (
        url.replace(f"alice:{RAW_SECRET}@", ""))


def test_an_unreachable_prometheus_quoted_by_the_rollback_commit_shows_no_password(tmp_path: Path) -> None:
    url = f"http://alice:{RAW_SECRET}@127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    out.mkdir()
    completed = analyze(url, out, "--query-attempts", "1", "--max-consecutive-errors", "0")
    assert completed.returncode == ExitCode.INCONCLUSIVE, completed.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    assert "Prometheus at http://127.0.0.1:" in verdict["reason"]  # the URL is there, without credentials
    remote = make_remote(tmp_path / "git")
    rolled = subprocess.run(
        [ROLLGUARD, "rollback", "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews",
         "--reason-file", str(out / "summary.json"), "--result-file", str(out / "result.json")],
        capture_output=True, text=True, timeout=60,
    )
    assert rolled.returncode == ExitCode.OK, rolled.stderr
    message = git("--git-dir", str(remote), "log", "-1", "--format=%B")
    assert "Prometheus at http://127.0.0.1:" in message
    files = "".join(path.read_text() for path in out.iterdir())
    assert_no_secret(completed.stdout + completed.stderr + rolled.stdout + rolled.stderr + message + files)


def test_a_bad_url_is_a_usage_error_that_shows_no_password(tmp_path: Path) -> None:
    completed = analyze("http://alice:s3cr/etPW@prom:99999", tmp_path)
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    assert "--prometheus-url" in completed.stderr and "port '99999'" in completed.stderr
    assert "s3cr" not in completed.stderr and "etPW" not in completed.stderr
    assert not (tmp_path / "verdict.json").exists()
