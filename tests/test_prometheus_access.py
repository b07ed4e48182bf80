"""The Prometheus access flags: bad input is exit 2 before any query, naming the flag; a tenant header and a
bearer token reach a server that demands them; TLS with a private CA and a client certificate (mTLS), and an
explicit skip-verify that warns; the whole-request deadline holds through a TLS handshake that never ends; and
secrets stay out of every output channel (log, verdict, summary, word file, rollback commit, its result file).
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from git_remote import MANIFEST_PATH, git, make_remote

from rollguard.sandbox.ports import free_port
from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.metrics import http_get as http_get_module
from rollguard.steps.metrics.prometheus_client import PrometheusQuerier
from rollguard.steps.metrics.prometheus_endpoint import HeaderSpec, PrometheusEndpoint, TlsOptions
from rollguard.steps.metrics.prometheus_url import parse_prometheus_url
from rollguard.steps.metrics.query_results import QueryStatus

TOKEN = "tok-9f8e7d6c5b4a-secret"
API_KEY = "apikey-0a1b2c3d4e5f-secret"
TENANT = "team-a"
ROLLGUARD = str(Path(sys.executable).parent / "rollguard")
ANSWER = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1, "1"]}]}}).encode()


@dataclass
class Guarded:
    url: str
    requests: list[dict[str, str]]


def _serve(handler: type[http.server.BaseHTTPRequestHandler], context: ssl.SSLContext | None = None
           ) -> tuple[http.server.ThreadingHTTPServer, int]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture
def guarded() -> Iterator[Guarded]:
    """A Mimir-like endpoint: needs X-Scope-OrgID team-a and the bearer token; a refusal echoes what it got
    (some proxies do), so a leak of the secrets into rollguard's outputs would show."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = dict(self.headers.items())
            seen.append(headers)
            good = headers.get("X-Scope-OrgID") == TENANT and headers.get("Authorization") == f"Bearer {TOKEN}"
            body = ANSWER if good else f"unauthorized: no org id or bad token in {headers}".encode()
            self.send_response(200 if good else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server, port = _serve(Handler)
    yield Guarded(f"http://127.0.0.1:{port}", seen)
    server.shutdown()


def analyze_args(url: str, out: Path, *extra: str) -> list[str]:
    return ["analyze", "--prometheus-url", url, "--namespace", "demo", "--service", "podinfo", "--stable-version",
            "v1", "--canary-version", "v2", "--interval", "1s", "--duration", "1s", "--verdict-file",
            str(out / "verdict.json"), "--verdict-summary-file", str(out / "summary.json"), "--verdict-word-file",
            str(out / "word"), *extra]


@pytest.mark.parametrize(
    ("extra", "flag", "words"),
    [
        (["--prometheus-header", "X-Scope-OrgID"], "--prometheus-header", "is not NAME=VALUE"),
        (["--prometheus-header", "=team-a"], "--prometheus-header", "is not NAME=VALUE"),
        (["--prometheus-header", "X-Key=env:ROLLGUARD_TEST_UNSET_VARIABLE"], "--prometheus-header X-Key",
         "is not set or empty"),
        (["--prometheus-header", "X-Key=file:/nonexistent/key"], "--prometheus-header X-Key", "does not exist"),
        (["--prometheus-bearer-token-file", "/nonexistent/token"], "--prometheus-bearer-token-file",
         "does not exist"),
        (["--prometheus-bearer-token-file", "EMPTY"], "--prometheus-bearer-token-file", "is empty"),
        (["--prometheus-ca-file", "NOT_A_CERT"], "--prometheus-ca-file", "is not a PEM certificate bundle"),
        (["--prometheus-ca-file", "/nonexistent/ca.pem"], "--prometheus-ca-file", "does not exist"),
        (["--prometheus-cert-file", "NOT_A_CERT"], "--prometheus-cert-file", "go together"),
        (["--prometheus-sigv4"], "--prometheus-sigv4", "needs --prometheus-sigv4-region"),
        (["--prometheus-sigv4-region", "eu-west-1"], "--prometheus-sigv4-region", "--prometheus-sigv4 is not"),
        (["--prometheus-bearer-token-file", "TOKEN", "--prometheus-header", "Authorization=Basic x"],
         "--prometheus-bearer-token-file and --prometheus-header Authorization", "give one"),
    ],
)
def test_bad_access_input_is_exit_2_before_any_query(
    guarded: Guarded, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    extra: list[str], flag: str, words: str,
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "ROLLGUARD_TEST_UNSET_VARIABLE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "empty").write_text("\n")
    not_a_cert = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    (tmp_path / "not-a-cert.pem").write_text(not_a_cert)
    (tmp_path / "token").write_text(TOKEN)
    paths = {"EMPTY": "empty", "NOT_A_CERT": "not-a-cert.pem", "TOKEN": "token"}
    extra = [str(tmp_path / paths[value]) if value in paths else value for value in extra]
    code = cli.main(analyze_args(guarded.url, tmp_path, *extra))
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE, err
    assert flag in err and words in err, err
    assert TOKEN not in err
    assert not (tmp_path / "verdict.json").exists()
    assert guarded.requests == []  # not one query


def test_the_tenant_header_and_the_token_reach_the_server(guarded: Guarded, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setenv("PROM_API_KEY", API_KEY)
    endpoint = PrometheusEndpoint(parse_prometheus_url(guarded.url), bearer_token_file=str(token))
    with_tenant = PrometheusEndpoint(endpoint.endpoint, (HeaderSpec("X-Scope-OrgID", "value", TENANT),
                                                         HeaderSpec("X-Api-Key", "env", "PROM_API_KEY")),
                                     str(token))
    refused = PrometheusQuerier(endpoint, attempts=1).scalar("vector(1)")
    assert refused.status is QueryStatus.ERROR and "refused authentication (HTTP 401" in (refused.detail or "")
    assert TOKEN not in (refused.detail or "")
    answered = PrometheusQuerier(with_tenant, attempts=1).scalar("vector(1)")
    assert answered.status is QueryStatus.VALUE, answered.detail
    assert guarded.requests[-1]["X-Api-Key"] == API_KEY


def test_secrets_stay_out_of_every_output_channel(guarded: Guarded, tmp_path: Path) -> None:
    """A wrong tenant, so the server refuses and echoes the token and the API key back: the log, the verdict,
    its summary and word files, the rollback commit quoting it and rollback's result file show neither."""
    out = tmp_path / "out"
    out.mkdir()
    token = tmp_path / "token"
    token.write_text(TOKEN)
    completed = subprocess.run(
        [ROLLGUARD, *analyze_args(guarded.url, out, "--prometheus-bearer-token-file", str(token), "--prometheus-header",
                                  "X-Scope-OrgID=team-b", "--prometheus-header", "X-Api-Key=env:PROM_API_KEY",
                                  "--query-attempts", "1", "--max-consecutive-errors", "0")],
        capture_output=True, text=True, timeout=60, env={**_env(), "PROM_API_KEY": API_KEY},
    )
    assert completed.returncode == ExitCode.INCONCLUSIVE, completed.stderr
    assert guarded.requests and guarded.requests[0]["Authorization"] == f"Bearer {TOKEN}"
    verdict = json.loads((out / "verdict.json").read_text())
    assert "refused authentication" in verdict["reason"]
    assert verdict["settings"]["prometheus_headers"] == ["X-Scope-OrgID=<value>", "X-Api-Key=env:PROM_API_KEY"]
    remote = make_remote(tmp_path / "git")
    rolled = subprocess.run(
        [ROLLGUARD, "rollback", "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews",
         "--reason-file", str(out / "summary.json"), "--result-file", str(out / "result.json")],
        capture_output=True, text=True, timeout=60,
    )
    assert rolled.returncode == ExitCode.OK, rolled.stderr
    message = git("--git-dir", str(remote), "log", "-1", "--format=%B")
    assert "refused authentication" in message
    channels = {
        "analyze log": completed.stdout + completed.stderr, "rollback log": rolled.stdout + rolled.stderr,
        "commit": message, **{path.name: path.read_text() for path in out.iterdir()},
    }
    assert {"verdict.json", "summary.json", "word", "result.json"} <= set(channels)
    for channel, text in channels.items():
        assert TOKEN not in text and API_KEY not in text, channel


def _env() -> dict[str, str]:
    import os

    return {name: value for name, value in os.environ.items() if not name.startswith("ROLLGUARD_")}


# --- TLS -------------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    directory = tmp_path_factory.mktemp("pki")

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=directory, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rollguard test CA")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, extra in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", *extra)
    return Pki(*(directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))


class AnswerHandler(http.server.BaseHTTPRequestHandler):
    """A query API that answers every GET with the same one-value vector."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mtls_prometheus(pki: Pki) -> Iterator[str]:
    """An https:// query API that demands a client certificate signed by the test CA."""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.load_verify_locations(pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server, port = _serve(AnswerHandler, context)
    yield f"https://127.0.0.1:{port}"
    server.shutdown()


def tls_querier(url: str, tls: TlsOptions, timeout_s: float = 5.0) -> PrometheusQuerier:
    return PrometheusQuerier(PrometheusEndpoint(parse_prometheus_url(url), tls=tls), timeout_s=timeout_s, attempts=1)


def test_mtls_with_the_ca_and_a_client_certificate_answers(mtls_prometheus: str, pki: Pki) -> None:
    result = tls_querier(mtls_prometheus, TlsOptions(str(pki.ca), str(pki.client_cert), str(pki.client_key))
                         ).scalar("vector(1)")
    assert result.status is QueryStatus.VALUE, result.detail


def test_without_the_ca_the_server_is_not_trusted(mtls_prometheus: str, pki: Pki) -> None:
    result = tls_querier(mtls_prometheus, TlsOptions(None, str(pki.client_cert), str(pki.client_key))
                         ).scalar("vector(1)")
    assert result.status is QueryStatus.ERROR and not result.unreachable  # not retried: asking again will not help
    assert "is not trusted (" in (result.detail or "") and "give its CA with --prometheus-ca-file" in (
        result.detail or "")


def test_without_a_client_certificate_the_server_refuses(mtls_prometheus: str, pki: Pki) -> None:
    result = tls_querier(mtls_prometheus, TlsOptions(str(pki.ca))).scalar("vector(1)")
    assert result.status is QueryStatus.ERROR


def test_insecure_skip_verify_answers_and_warns(
    mtls_prometheus: str, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    result = tls_querier(mtls_prometheus, TlsOptions(None, str(pki.client_cert), str(pki.client_key),
                                                     insecure_skip_verify=True)).scalar("vector(1)")
    assert result.status is QueryStatus.VALUE, result.detail
    assert "TLS certificate verification of Prometheus is OFF" in caplog.text


def test_the_deadline_ends_a_tls_handshake_that_never_finishes(pki: Pki) -> None:
    """A server that accepts the connection and never answers the ClientHello: the query's whole-request
    timeout still ends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        result = tls_querier(f"https://127.0.0.1:{port}", TlsOptions(str(pki.ca)), timeout_s=0.5).scalar("vector(1)")
        took = time.monotonic() - started
    finally:
        listener.close()
    assert result.status is QueryStatus.ERROR and "timed out" in (result.detail or "")
    assert took < 3.0


# --- the experiment's cluster target (breach, alert and failed-request queries) ------------------------------


def test_the_experiment_queries_send_the_same_credentials_and_hide_them(guarded: Guarded, tmp_path: Path) -> None:
    from rollguard.sandbox.prometheus_queries import PrometheusQueryError, instant
    from rollguard.steps.metrics.prometheus_connection import PrometheusConnection

    token = tmp_path / "token"
    token.write_text(TOKEN)
    endpoint = parse_prometheus_url(guarded.url)
    good = PrometheusConnection(PrometheusEndpoint(endpoint, (HeaderSpec("X-Scope-OrgID", "value", TENANT),),
                                                   str(token)))
    assert instant(good, 'ALERTS{alertname="CanaryHighErrorRate"}') == [({}, 1.0)]
    wrong_tenant = PrometheusConnection(PrometheusEndpoint(endpoint, (HeaderSpec("X-Scope-OrgID", "value", "x"),),
                                                           str(token)))
    with pytest.raises(PrometheusQueryError) as refused:
        instant(wrong_tenant, "vector(1)")
    assert "refused authentication: HTTP 401" in str(refused.value) and TOKEN not in str(refused.value)


def test_the_experiment_refuses_bad_access_input_with_exit_2(tmp_path: Path) -> None:
    completed = subprocess.run(
        [ROLLGUARD, "experiment", "--target", "cluster", "--namespace", "demo", "--service", "podinfo",
         "--report-dir", str(tmp_path / "report"), "--prometheus-bearer-token-file", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=60, env=_env(),
    )
    assert completed.returncode == ExitCode.USAGE, completed.stderr
    assert "--prometheus-bearer-token-file" in completed.stderr and "does not exist" in completed.stderr


def test_the_default_tls_context_is_built_once_and_never_for_plain_http(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading the CA store costs ~30 ms of CPU: per query, 50 analyses on one node spent most of their time
    there (benchmarks/concurrent_analyses.py). http:// needs no context; https:// builds the default one once."""

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    tls_server, tls_port = _serve(AnswerHandler, context)
    plain_server, plain_port = _serve(AnswerHandler, None)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))  # the system store does not know the test CA
    built = http_get_module._tls_context_for.cache_info().misses
    try:
        for _ in range(3):
            answer = http_get_module.http_get(f"http://127.0.0.1:{plain_port}/api/v1/query", {"query": "1"},
                                              deadline=time.monotonic() + 5)
            assert answer.status == 200
        assert http_get_module._tls_context_for.cache_info().misses == built  # no context for http://
        for _ in range(3):
            answer = http_get_module.http_get(f"https://127.0.0.1:{tls_port}/api/v1/query", {"query": "1"},
                                              deadline=time.monotonic() + 5)
            assert answer.status == 200 and answer.body == ANSWER
        assert http_get_module._tls_context_for.cache_info().misses <= built + 1  # one context for three queries
    finally:
        tls_server.shutdown()
        plain_server.shutdown()
