"""`rollguard analyze` against real Prometheus-compatible backends: VictoriaMetrics scraping synthetic Istio
traffic (healthy passes, a faulty canary fails, as against Prometheus), and vmauth in front of it demanding a
bearer token (refused without it or with a wrong one — an `error` that names authentication — passed with it),
and nginx as a Mimir/Cortex-style gateway demanding the tenant header X-Scope-OrgID and a token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support_prometheus import NAMESPACE
from support_victoria import nginx_tenant_gateway, victoria_metrics, vmauth

from rollguard.sandbox.synthetic_traffic import SyntheticTraffic, TrafficProfile
from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode

HEALTHY = TrafficProfile(requests_per_s=40, error_rate=0.005, latency_ms=30)
STABLE = TrafficProfile(requests_per_s=100, error_rate=0.005, latency_ms=30)
TOKEN = "vm-t0ken-for-tests-6f1d"


@dataclass
class Backend:
    traffic: SyntheticTraffic
    url: str  # VictoriaMetrics itself
    proxy: str  # vmauth in front of it


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    with SyntheticTraffic(NAMESPACE, seed=11) as traffic, victoria_metrics([traffic.target]) as url, \
            vmauth(url, TOKEN) as proxy:
        yield Backend(traffic, url, proxy)


def wait_for_requests(url: str, service: str, version: str, deadline_s: float = 30.0) -> None:
    query = (f'sum(istio_requests_total{{reporter="destination",destination_service_name="{service}",'
             f'destination_version="{version}"}})')
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}") as answer:
            if json.load(answer)["data"]["result"]:
                return
        time.sleep(0.2)
    raise AssertionError(f"VictoriaMetrics saw no requests of {service} {version} within {deadline_s}s")


def start(backend: Backend, service: str, canary: TrafficProfile) -> None:
    backend.traffic.set(service, "v1", STABLE)
    backend.traffic.set(service, "v2", canary)
    wait_for_requests(backend.url, service, "v1")
    wait_for_requests(backend.url, service, "v2")


def analyze(url: str, service: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
            *extra: str) -> tuple[int, dict[str, Any], str]:
    verdict_file = tmp_path / f"{service}.json"
    code = cli.main([
        "analyze", "--prometheus-url", url, "--namespace", NAMESPACE, "--service", service,
        "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s", "--verdict-file", str(verdict_file),
        *extra,
    ])
    return code, json.loads(verdict_file.read_text()), capsys.readouterr().err


def test_healthy_canary_passes_on_victoria_metrics(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(backend, "vm-healthy", HEALTHY)
    code, verdict, _ = analyze(backend.url, "vm-healthy", tmp_path, capsys, "--duration", "5s", "--min-requests",
                               "100")
    assert code == ExitCode.OK, verdict["reason"]
    assert verdict["checks"][-1]["canary"]["requests_since_start"] >= 100


def test_faulty_canary_fails_on_victoria_metrics(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(backend, "vm-broken", HEALTHY)
    backend.traffic.set("vm-broken", "v2", TrafficProfile(requests_per_s=40, error_rate=1.0))
    code, verdict, _ = analyze(backend.url, "vm-broken", tmp_path, capsys, "--duration", "2m")
    assert code == ExitCode.FAIL, verdict["reason"]
    assert verdict["failed_check"]["metric"] in ("canary_error_rate", "canary_vs_stable_error_rate")
    # At the first decisive failure, far from the 121 checks of the 2 minutes; a few checks later than on
    # Prometheus: VictoriaMetrics makes freshly scraped samples searchable after its in-memory buffer flushes.
    assert len(verdict["checks"]) <= 20


def test_latency_regression_fails_on_victoria_metrics(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start(backend, "vm-slow", TrafficProfile(requests_per_s=40, latency_ms=30, slow_rate=1.0, slow_latency_ms=900))
    code, verdict, _ = analyze(backend.url, "vm-slow", tmp_path, capsys, "--duration", "2m")
    assert code == ExitCode.FAIL, verdict["reason"]
    assert verdict["failed_check"]["metric"] == "canary_p99_latency_ms"


def test_vmauth_refuses_a_query_without_the_token(backend: Backend) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{backend.proxy}/api/v1/query?query=1", timeout=5)
    assert refused.value.code == 401


def test_through_vmauth_with_the_token_file_a_faulty_canary_fails(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    start(backend, "vm-proxied", HEALTHY)
    backend.traffic.set("vm-proxied", "v2", TrafficProfile(requests_per_s=40, error_rate=1.0))
    code, verdict, log = analyze(backend.proxy, "vm-proxied", tmp_path, capsys, "--duration", "2m",
                                 "--prometheus-bearer-token-file", str(token_file))
    assert code == ExitCode.FAIL, verdict["reason"]
    assert verdict["settings"]["prometheus_bearer_token_file"] == str(token_file)
    assert TOKEN not in log + json.dumps(verdict)


def test_through_vmauth_a_wrong_token_is_an_error_that_names_authentication(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token-0042")
    code, verdict, log = analyze(backend.proxy, "vm-healthy", tmp_path, capsys, "--duration", "2s",
                                 "--max-consecutive-errors", "1", "--prometheus-bearer-token-file", str(token_file))
    assert code == ExitCode.INCONCLUSIVE  # --on-error inconclusive, never a pass
    details = [m["detail"] for check in verdict["checks"] for m in check["metrics"] if m["phase"] == "error"]
    assert details, verdict
    # vmauth 1.79 answers an unknown token with HTTP 400 "cannot find the provided auth token" (and echoes it)
    assert all("refused authentication (HTTP 400" in detail for detail in details), details
    assert not any("unreachable" in detail for detail in details)
    assert "refused authentication" in log
    assert "not-the-token-0042" not in log + json.dumps(verdict)


def test_through_vmauth_a_rotated_token_is_read_again(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A projected service-account token is replaced in place; the next query sends the new one."""
    from rollguard.steps.metrics.prometheus_client import PrometheusQuerier
    from rollguard.steps.metrics.prometheus_connection import PrometheusConnection
    from rollguard.steps.metrics.prometheus_endpoint import PrometheusEndpoint
    from rollguard.steps.metrics.prometheus_url import parse_prometheus_url
    from rollguard.steps.metrics.query_results import QueryStatus

    token_file = tmp_path / "token"
    token_file.write_text("old-expired-token")
    querier = PrometheusQuerier(PrometheusEndpoint(parse_prometheus_url(backend.proxy),
                                                   bearer_token_file=str(token_file)), attempts=1)
    assert isinstance(querier.connection, PrometheusConnection)
    assert querier.scalar("vector(1)").status is QueryStatus.ERROR
    replacement = tmp_path / "token.new"
    replacement.write_text(TOKEN)
    replacement.replace(token_file)  # as the kubelet swaps the projected volume's files
    result = querier.scalar("vector(1)")
    assert result.status is QueryStatus.VALUE and result.value == 1.0, result.detail


TENANT = "team-a"


def test_through_an_nginx_tenant_gateway_the_header_and_token_pass_and_without_the_header_it_refuses(
    backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with nginx_tenant_gateway(backend.url, TENANT, TOKEN) as gateway:
        start(backend, "vm-tenant", HEALTHY)
        backend.traffic.set("vm-tenant", "v2", TrafficProfile(requests_per_s=40, error_rate=1.0))
        code, verdict, _ = analyze(gateway, "vm-tenant", tmp_path, capsys, "--duration", "2m",
                                   "--prometheus-bearer-token-file", str(token_file),
                                   "--prometheus-header", f"X-Scope-OrgID={TENANT}")
        assert code == ExitCode.FAIL, verdict["reason"]
        code, verdict, log = analyze(gateway, "vm-tenant", tmp_path, capsys, "--duration", "2s",
                                     "--max-consecutive-errors", "1", "--prometheus-bearer-token-file",
                                     str(token_file))
    assert code == ExitCode.INCONCLUSIVE
    details = [m["detail"] for check in verdict["checks"] for m in check["metrics"] if m["phase"] == "error"]
    assert details and all("refused authentication (HTTP 401: no tenant" in detail for detail in details), details
    assert TOKEN not in log + json.dumps(verdict)
