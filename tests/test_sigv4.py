"""AWS SigV4 for Amazon Managed Prometheus: the signing library against AWS's published test vectors, an
independent verifier (written here from AWS's documented algorithm, checked against the same vectors) in a
local endpoint that answers only correctly signed queries, and credentials from the environment and from a
web identity exchanged with a local STS.

Vectors: AWS Signature Version 4 test suite (aws4_testsuite, 2015-08-30; now awslabs/aws-c-auth
tests/aws-signing-test-suite/v4): get-vanilla and get-vanilla-query-order-key-case, with the suite's
credentials AKIDEXAMPLE / wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, us-east-1, service "service".
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
import requests
from requests_aws4auth import AWS4Auth

from rollguard.sandbox.ports import free_port
from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.metrics.prometheus_client import PrometheusQuerier
from rollguard.steps.metrics.prometheus_endpoint import PrometheusEndpoint, SigV4Options
from rollguard.steps.metrics.prometheus_url import parse_prometheus_url
from rollguard.steps.metrics.query_results import QueryStatus

SUITE_KEY = "AKIDEXAMPLE"
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
VECTORS = [  # (url, published signature)
    ("https://example.amazonaws.com/", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("https://example.amazonaws.com/?Param2=value2&Param1=value1",
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
]
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SECRET = "local-secret-K7MDENG-0123456789"
SESSION = "local-session-token-abcdef"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def independent_signature(method: str, path: str, query: str, headers: Mapping[str, str], signed: list[str],
                          secret: str, amz_date: str, region: str, service: str) -> str:
    """SigV4 as AWS documents it (create-signed-request.html), as the server side computes it: query pairs
    decoded, re-encoded RFC 3986 style and sorted; lower-cased header names, trimmed values."""
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(query, keep_blank_values=True))
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    lowered = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    canonical = "\n".join([method, quote(path or "/", safe="/-_.~"), canonical_query, canonical_headers,
                           ";".join(signed), EMPTY_SHA256])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), amz_date[:8]), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("url", "signature"), VECTORS)
def test_the_library_signs_the_published_vectors(url: str, signature: str) -> None:
    auth = AWS4Auth(SUITE_KEY, SUITE_SECRET, "us-east-1", "service", date="20150830",
                    include_hdrs=["host", "x-amz-date"])
    request = requests.Request("GET", url, headers={"X-Amz-Date": "20150830T123600Z"}).prepare()
    assert auth(request).headers["Authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={SUITE_KEY}/20150830/us-east-1/service/aws4_request, "
        f"SignedHeaders=host;x-amz-date, Signature={signature}")


@pytest.mark.parametrize(("url", "signature"), VECTORS)
def test_the_independent_verifier_computes_the_published_vectors(url: str, signature: str) -> None:
    parts = urlsplit(url)
    headers = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    assert independent_signature("GET", parts.path, parts.query, headers, ["host", "x-amz-date"], SUITE_SECRET,
                                 "20150830T123600Z", "us-east-1", "service") == signature


@pytest.fixture
def signed_prometheus() -> Iterator[tuple[str, list[str]]]:
    """A local endpoint of the Prometheus query API that verifies each request's SigV4 signature (region
    eu-west-1, service aps, the session token signed too) before answering; 403 otherwise."""
    outcomes: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            authorization = self.headers.get("Authorization", "")
            fields = dict(item.strip().split("=", 1) for item in authorization.removeprefix(
                "AWS4-HMAC-SHA256 ").split(",") if "=" in item)
            signed = fields.get("SignedHeaders", "").split(";")
            expected = independent_signature(
                "GET", parts.path, parts.query, dict(self.headers.items()), signed, SECRET,
                self.headers.get("X-Amz-Date", ""), "eu-west-1", "aps")
            good = (fields.get("Credential", "").startswith("AKIDLOCAL/") and "/eu-west-1/aps/" in fields["Credential"]
                    and "x-amz-security-token" in signed and self.headers.get("X-Amz-Security-Token") == SESSION
                    and hmac.compare_digest(fields.get("Signature", ""), expected))
            outcomes.append("verified" if good else "refused")
            if good:
                body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
                    {"metric": {}, "value": [1, "1"]}]}}).encode()
                self.send_response(200)
            else:
                body = b'{"message":"The request signature we calculated does not match the signature you provided."}'
                self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/workspaces/ws-1234", outcomes
    server.shutdown()


def aws_environment(monkeypatch: pytest.MonkeyPatch, secret: str = SECRET) -> None:
    for name in ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDLOCAL")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION)


def querier(url: str) -> PrometheusQuerier:
    endpoint = PrometheusEndpoint(parse_prometheus_url(url), sigv4=SigV4Options("eu-west-1", "aps"))
    return PrometheusQuerier(endpoint, attempts=1)


def test_a_signed_query_with_a_promql_selector_is_verified_by_the_endpoint(
    signed_prometheus: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, outcomes = signed_prometheus
    aws_environment(monkeypatch)
    # Quotes, braces, spaces, =~ and a '+' : the query string is where a '+' / %20 mismatch would break signatures.
    result = querier(url).scalar('sum(rate(istio_requests_total{response_code=~"5..", a="b c+d"}[1m]))')
    assert result.status is QueryStatus.VALUE, result.detail
    assert outcomes == ["verified"]


def test_a_wrong_secret_is_an_error_that_names_authentication_and_hides_the_secret(
    signed_prometheus: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, outcomes = signed_prometheus
    aws_environment(monkeypatch, secret="wrong-secret-for-this-test")
    result = querier(url).scalar("vector(1)")
    assert result.status is QueryStatus.ERROR and not result.unreachable
    assert "refused authentication (HTTP 403" in (result.detail or "")
    assert outcomes == ["refused"]


def test_credentials_from_a_web_identity_through_sts(
    signed_prometheus: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """EKS IRSA: the projected token is exchanged with STS's AssumeRoleWithWebIdentity (here a local one)."""
    url, outcomes = signed_prometheus
    seen: list[dict[str, str]] = []

    class Sts(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(parse_qsl(urlsplit(self.path).query)))
            body = (
                '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                "<AssumeRoleWithWebIdentityResult><Credentials>"
                f"<AccessKeyId>AKIDLOCAL</AccessKeyId><SecretAccessKey>{SECRET}</SecretAccessKey>"
                f"<SessionToken>{SESSION}</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
                "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    sts = http.server.ThreadingHTTPServer(("127.0.0.1", port), Sts)
    threading.Thread(target=sts.serve_forever, daemon=True).start()
    try:
        aws_environment(monkeypatch)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(name)
        token = tmp_path / "token"
        token.write_text("eyJprojected.service-account.token")
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
        monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/rollguard")
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{port}")
        result = querier(url).scalar("vector(1)")
    finally:
        sts.shutdown()
    assert result.status is QueryStatus.VALUE, result.detail
    assert outcomes == ["verified"]
    assert seen[0]["Action"] == "AssumeRoleWithWebIdentity"
    assert seen[0]["WebIdentityToken"] == "eyJprojected.service-account.token"


def test_analyze_signs_every_query_and_the_verdict_names_region_not_secrets(
    signed_prometheus: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, outcomes = signed_prometheus
    aws_environment(monkeypatch)
    code = cli.main(["analyze", "--prometheus-url", url, "--namespace", "demo", "--service", "podinfo",
                     "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s", "--duration", "1s",
                     "--prometheus-sigv4", "--prometheus-sigv4-region", "eu-west-1",
                     "--verdict-file", str(tmp_path / "verdict.json")])
    log = capsys.readouterr().err
    assert code in (ExitCode.OK, ExitCode.FAIL, ExitCode.INCONCLUSIVE)
    assert outcomes and set(outcomes) == {"verified"}
    verdict = (tmp_path / "verdict.json").read_text()
    assert json.loads(verdict)["settings"]["prometheus_sigv4"] == {"region": "eu-west-1", "service": "aps"}
    assert SECRET not in verdict + log and SESSION not in verdict + log
