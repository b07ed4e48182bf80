"""Sandbox components as real processes: GitOps remote, demo app, router, load generator, supervisor."""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from rollguard.sandbox.git_remote import GitRemote, create_remote, demo_manifest, run_git
from rollguard.sandbox.loadgen import read_responses
from rollguard.sandbox.ports import free_port, wait_listening
from rollguard.sandbox.processes import ChildDied, SandboxError, Supervisor
from rollguard.sandbox.router import ADMIN_PATH, LIVE_PATH

PY = sys.executable


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _post(url: str, payload: object) -> int:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def push_split(remote: GitRemote, work: Path, stable: int, canary: int) -> float:
    """Clone, rewrite the two weights, commit and push like a GitOps step would; return the push time."""
    if not work.exists():
        run_git(["clone", "--quiet", remote.url, str(work)])
    run_git(["pull", "--quiet", "--ff-only"], cwd=work)
    manifest = work / "k8s" / "istio.yml"
    lines = []
    for line in manifest.read_text().splitlines(keepends=True):
        if line.strip().startswith("weight:") and "# stable" in line:
            line = line.split("weight:")[0] + f"weight: {stable} # stable\n"
        elif line.strip().startswith("weight:") and "# canary" in line:
            line = line.split("weight:")[0] + f"weight: {canary} # canary\n"
        lines.append(line)
    manifest.write_text("".join(lines))
    run_git(["commit", "--quiet", "-am", f"split {stable}/{canary}"], cwd=work)
    pushed = time.time()
    run_git(["push", "--quiet", "origin", "HEAD:main"], cwd=work)
    return pushed


def test_sandbox_seeds_the_manifest_argocd_ships() -> None:
    # The sandbox's GitOps remote must hold what a user's ArgoCD demo app syncs, byte for byte: a
    # change to one file without the other would make the sandbox test a different VirtualService.
    shipped = Path(__file__).resolve().parents[1] / "argocd" / "demo-app" / "istio.yml"
    assert demo_manifest() == shipped.read_text(), "sandbox/assets/k8s/istio.yml and argocd/demo-app/istio.yml differ"


def test_remote_is_seeded_and_logs_pushes(tmp_path: Path) -> None:
    remote = create_remote(tmp_path / "remote.git")
    assert remote.show() == demo_manifest()
    assert "weight: 10 # canary" in remote.show()
    before = remote.head()
    pushed_at = push_split(remote, tmp_path / "clone", 100, 0)
    pushes = remote.pushes()
    assert pushes[-1].old == before and pushes[-1].new == remote.head()
    assert pushes[-1].at >= pushed_at
    assert remote.log()[0][1] == "split 100/0"


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    with Supervisor(tmp_path / "logs") as running:
        yield running


def _start_app(supervisor: Supervisor, version: str) -> str:
    port = free_port()
    supervisor.start(f"app-{version}", [PY, "-m", "rollguard.sandbox.demo_app", "--port", str(port), "--version",
                                        version, "--seed", "1"],
                     port=port, health_url=f"http://127.0.0.1:{port}/healthz")
    return f"http://127.0.0.1:{port}"


def test_demo_app_faults_switch_at_run_time(supervisor: Supervisor) -> None:
    url = _start_app(supervisor, "v2")
    assert _get(url + "/")[0] == 200
    assert _post(url + "/control", {"error_rate": 1.0}) == 200
    assert {_get(url + "/")[0] for _ in range(5)} == {500}
    assert _post(url + "/control", {"error_rate": 0, "latency_ms": 150}) == 200
    started = time.perf_counter()
    assert _get(url + "/")[0] == 200
    assert time.perf_counter() - started >= 0.15
    assert _post(url + "/control", {"error_rate": 2}) == 400
    assert _post(url + "/control", {"colour": "red"}) == 400


def _wait_for(predicate, deadline_s: float, what: str) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {deadline_s} s")


def _start_router(
    supervisor: Supervisor, remote: GitRemote, stable: str, canary: str, port: int | None = None, *argocd: str
) -> str:
    port = port or free_port()
    supervisor.start("router", [PY, "-m", "rollguard.sandbox.router", "--port", str(port), "--git-dir",
                                str(remote.path), "--stable-url", stable, "--canary-url", canary, "--seed", "3",
                                *argocd],
                     port=port, health_url=f"http://127.0.0.1:{port}/healthz")
    return f"http://127.0.0.1:{port}"


def test_router_follows_the_remote_and_exports_istio_metrics(supervisor: Supervisor, tmp_path: Path) -> None:
    remote = create_remote(tmp_path / "remote.git")
    stable, canary = _start_app(supervisor, "v1"), _start_app(supervisor, "v2")
    router = _start_router(supervisor, remote, stable, canary)
    admin = json.loads(_get(router + ADMIN_PATH)[2])
    assert (admin["stable"], admin["canary"]) == (90, 10)

    pushed_at = push_split(remote, tmp_path / "clone", 0, 100)
    _wait_for(lambda: json.loads(_get(router + ADMIN_PATH)[2])["canary"] == 100, 10, "applying 0/100")
    versions = {_get(router + "/")[1].get("x-rollguard-version") for _ in range(20)}
    assert versions == {"v2"}

    _post(canary + "/control", {"error_rate": 1.0})
    assert _get(router + "/")[0] == 500
    metrics = _get(router + "/metrics")[2].decode()
    wanted = ['reporter="destination"', 'destination_service_name="podinfo"', 'destination_workload="podinfo-v2"',
              'destination_workload_namespace="demo"', 'destination_version="v2"', 'response_code="500"']
    lines = [line for line in metrics.splitlines() if line.startswith("istio_requests_total{")]
    assert any(all(label in line for label in wanted) for line in lines), lines
    assert "istio_request_duration_milliseconds_bucket{" in metrics

    push_split(remote, tmp_path / "clone", 100, 0)
    _wait_for(lambda: json.loads(_get(router + ADMIN_PATH)[2])["canary"] == 0, 10, "applying 100/0")
    assert {_get(router + "/")[1].get("x-rollguard-version") for _ in range(20)} == {"v1"}
    changes = json.loads(_get(router + ADMIN_PATH)[2])["changes"]
    assert [(c["stable"], c["canary"]) for c in changes] == [(90, 10), (0, 100), (100, 0)]
    assert changes[1]["applied_at"] >= pushed_at


def _admin(router: str) -> dict:
    return json.loads(_get(router + ADMIN_PATH)[2])


def test_self_heal_reverts_a_live_patch_that_git_does_not_hold(supervisor: Supervisor, tmp_path: Path) -> None:
    remote = create_remote(tmp_path / "remote.git")
    stable, canary = _start_app(supervisor, "v1"), _start_app(supervisor, "v2")
    router = _start_router(supervisor, remote, stable, canary, None, "--self-heal", "1")
    patched_at = time.time()
    assert _post(router + LIVE_PATH, {"stable": 100, "canary": 0}) == 200
    assert (_admin(router)["stable"], _admin(router)["canary"]) == (100, 0)  # the live patch cuts at once
    # ... but Git still says 90/10: ArgoCD's self-heal puts it back
    _wait_for(lambda: _admin(router)["canary"] == 10, 10, "self-heal reverting the live patch")
    changes = _admin(router)["changes"]
    assert [(c["source"], c["canary"]) for c in changes] == [("sync", 10), ("live-patch", 0), ("self-heal", 10)]
    assert changes[2]["applied_at"] >= patched_at + 1
    assert _post(router + LIVE_PATH, {"stable": 100, "canary": 5}) == 400  # a split that does not add up


def test_a_live_patch_that_git_holds_stays(supervisor: Supervisor, tmp_path: Path) -> None:
    remote = create_remote(tmp_path / "remote.git")
    stable, canary = _start_app(supervisor, "v1"), _start_app(supervisor, "v2")
    router = _start_router(supervisor, remote, stable, canary, None, "--self-heal", "1", "--sync-delay", "0.5")
    push_split(remote, tmp_path / "clone", 100, 0)  # rollguard's rollback: commit first,
    assert _post(router + LIVE_PATH, {"stable": 100, "canary": 0}) == 200  # then patch the live object
    _wait_for(lambda: _admin(router)["synced_revision"] == remote.head(), 10, "the sync of the rollback commit")
    patched = next(c for c in _admin(router)["changes"] if c["source"] == "live-patch")
    _wait_for(lambda: time.time() > patched["applied_at"] + 1.5, 5, "self-heal's delay to pass")
    admin = _admin(router)
    assert (admin["stable"], admin["canary"]) == (100, 0)
    assert "self-heal" not in [c["source"] for c in admin["changes"]]


def test_a_post_sync_hook_holds_the_sync_open_until_it_ends(supervisor: Supervisor, tmp_path: Path) -> None:
    remote = create_remote(tmp_path / "remote.git")
    stable, canary = _start_app(supervisor, "v1"), _start_app(supervisor, "v2")
    release = tmp_path / "hook.release"
    hook = [PY, "-c", "import os, sys, time\nwhile not os.path.exists(sys.argv[1]): time.sleep(0.05)",
            str(release)]
    router = _start_router(supervisor, remote, stable, canary, None, "--post-sync-hook", json.dumps(hook))
    push_split(remote, tmp_path / "clone", 50, 50)
    _wait_for(lambda: _admin(router)["canary"] == 50, 10, "the sync of 50/50")
    assert _admin(router)["operation"]["phase"] == "Running"  # the hook runs: the sync stays open
    push_split(remote, tmp_path / "clone", 100, 0)
    _wait_for(lambda: _admin(router)["waiting_revisions"] == [remote.head()], 10, "ArgoCD seeing the next commit")
    admin = _admin(router)
    assert admin["canary"] == 50, "a newer revision was synced while the PostSync hook ran"
    release.touch()
    _wait_for(lambda: _admin(router)["canary"] == 0, 10, "the next sync once the hook ended")
    _wait_for(lambda: _admin(router)["operation"] == {"phase": "Succeeded", "revision": remote.head(),
                                                      "message": "successfully synced (all tasks run)"},
              10, "the next sync's own hook to end")


def _series(metrics: str, name: str, *labels: str) -> float:
    """The sum of the `name` series whose lines hold every one of `labels`."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith(name + "{") and all(label in line for label in labels))


def test_router_answers_503_uh_like_a_callers_sidecar_when_the_canary_is_down(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    """The canary's process is gone: after one readiness probe its subset has no endpoint, and the router
    answers 503 UH itself. Only the caller's proxy reports those (reporter="source"), with no version known;
    the canary's own (destination) series stop."""
    remote = create_remote(tmp_path / "remote.git")
    stable, canary = _start_app(supervisor, "v1"), _start_app(supervisor, "v2")
    router = _start_router(supervisor, remote, stable, canary)
    push_split(remote, tmp_path / "clone", 0, 100)
    _wait_for(lambda: json.loads(_get(router + ADMIN_PATH)[2])["canary"] == 100, 10, "applying 0/100")
    assert _get(router + "/")[0] == 200
    served = _series(_get(router + "/metrics")[2].decode(), "istio_requests_total", 'reporter="destination"',
                     'destination_version="v2"')
    supervisor.stop("app-v2")
    time.sleep(1.2)  # two readiness probes
    answers = [_get(router + "/") for _ in range(10)]
    assert {(status, headers.get("x-rollguard-version")) for status, headers, _ in answers} == {(503, "v2")}
    assert b"no healthy upstream" in answers[0][2]
    metrics = _get(router + "/metrics")[2].decode()
    uh = ('reporter="source"', 'response_flags="UH"', 'response_code="503"', 'destination_version="unknown"',
          'destination_workload="unknown"', 'destination_canonical_revision="latest"',
          'destination_service_name="podinfo"', 'destination_service_namespace="demo"')
    assert _series(metrics, "istio_requests_total", *uh) == 10
    assert _series(metrics, "istio_requests_total", 'reporter="destination"', 'destination_version="v2"') == served


def test_router_relays_grpc_status_faithfully(supervisor: Supervisor, tmp_path: Path) -> None:
    """A real gRPC server and client (grpcio) through the router: UNAVAILABLE comes back as UNAVAILABLE, and
    Istio's series say HTTP 200 with grpc_response_status 14, from both proxies."""
    import grpc

    from rollguard.sandbox.grpc_service import call_once

    remote = create_remote(tmp_path / "remote.git")
    apps, grpc_ports = {}, {}
    for version in ("v1", "v2"):
        port, grpc_ports[version] = free_port(), free_port()
        supervisor.start(f"app-{version}", [PY, "-m", "rollguard.sandbox.demo_app", "--port", str(port), "--version",
                                            version, "--grpc-port", str(grpc_ports[version])],
                         port=port, health_url=f"http://127.0.0.1:{port}/healthz")
        apps[version] = f"http://127.0.0.1:{port}"
    port, relay = free_port(), free_port()
    supervisor.start("router", [PY, "-m", "rollguard.sandbox.router", "--port", str(port), "--git-dir",
                                str(remote.path), "--stable-url", apps["v1"], "--canary-url", apps["v2"],
                                "--grpc-port", str(relay), "--stable-grpc", f"127.0.0.1:{grpc_ports['v1']}",
                                "--canary-grpc", f"127.0.0.1:{grpc_ports['v2']}"],
                     port=port, health_url=f"http://127.0.0.1:{port}/healthz")
    router = f"http://127.0.0.1:{port}"
    push_split(remote, tmp_path / "clone", 0, 100)
    _wait_for(lambda: json.loads(_get(router + ADMIN_PATH)[2])["canary"] == 100, 10, "applying 0/100")
    _post(apps["v2"] + "/control", {"error_rate": 1.0})
    with grpc.insecure_channel(f"127.0.0.1:{relay}") as channel:
        assert {call_once(channel) for _ in range(5)} == {(14, "v2")}
        _post(apps["v2"] + "/control", {})
        assert {call_once(channel) for _ in range(5)} == {(0, "v2")}
    metrics = _get(router + "/metrics")[2].decode()
    for reporter in ("destination", "source"):
        grpc_labels = (f'reporter="{reporter}"', 'request_protocol="grpc"', 'response_code="200"',
                       'destination_version="v2"')
        assert _series(metrics, "istio_requests_total", *grpc_labels, 'grpc_response_status="14"') == 5
        assert _series(metrics, "istio_requests_total", *grpc_labels, 'grpc_response_status="0"') == 5


def test_router_keeps_the_split_when_a_push_breaks_the_file(supervisor: Supervisor, tmp_path: Path) -> None:
    remote = create_remote(tmp_path / "remote.git")
    stable, canary = _start_app(supervisor, "v1"), _start_app(supervisor, "v2")
    router = _start_router(supervisor, remote, stable, canary)
    work = tmp_path / "clone"
    run_git(["clone", "--quiet", remote.url, str(work)])
    (work / "k8s" / "istio.yml").write_text("kind: [unclosed\n")
    run_git(["commit", "--quiet", "-am", "break it"], cwd=work)
    run_git(["push", "--quiet", "origin", "HEAD:main"], cwd=work)
    _wait_for(lambda: json.loads(_get(router + ADMIN_PATH)[2])["last_error"] is not None, 10, "an error report")
    admin = json.loads(_get(router + ADMIN_PATH)[2])
    assert (admin["stable"], admin["canary"]) == (90, 10)
    assert "keeping the current one" in admin["last_error"]


def test_loadgen_records_every_response(supervisor: Supervisor, tmp_path: Path) -> None:
    app = _start_app(supervisor, "v1")
    out = tmp_path / "responses.csv"
    child = supervisor.start("loadgen", [PY, "-m", "rollguard.sandbox.loadgen", "--url", app + "/", "--rps", "40",
                                         "--out", str(out), "--duration", "1"])
    child.process.wait(timeout=20)
    responses = read_responses(out)
    assert 35 <= len(responses) <= 40
    assert {r.status for r in responses} == {200}


def test_supervisor_refuses_a_busy_port_and_reports_a_dead_child(supervisor: Supervisor) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SandboxError, match=f"port {port} .* already in use"):
            supervisor.start("app", [PY, "-m", "rollguard.sandbox.demo_app", "--port", str(port), "--version", "v1"],
                             port=port)
    child = supervisor.start("sleeper", [PY, "-c", "import time; time.sleep(60)"])
    supervisor.check()
    child.process.kill()
    child.process.wait()
    with pytest.raises(ChildDied, match=r"sleeper \(pid \d+\) was killed by SIGKILL"):
        supervisor.check()


def test_supervisor_stops_everything_it_started(tmp_path: Path) -> None:
    with Supervisor(tmp_path / "logs") as supervising:
        url = _start_app(supervising, "v1")
        port = int(url.rsplit(":", 1)[1])
        process = supervising.children[0].process
    assert process.poll() is not None
    assert not wait_listening(port, 0.3), "something still listens on the app's port"


def test_sandbox_alert_fires_on_a_failing_canary(tmp_path: Path) -> None:
    """The shipped paging rule, evaluated by the sandbox's real Prometheus, fires on a canary serving 500s."""
    from rollguard.sandbox.alert_rules import ERROR_ALERT, AlertSettings
    from rollguard.sandbox.demo_app import Behaviour
    from rollguard.sandbox.environment import SandboxSettings, start_sandbox
    from rollguard.sandbox.prometheus_queries import instant

    settings = SandboxSettings(workdir=tmp_path / "sandbox", alert=AlertSettings(window="5s", for_s=2.0))
    with Supervisor(tmp_path / "logs") as supervising:
        sandbox = start_sandbox(settings, supervising)
        assert "for: 2s" in (settings.workdir / "alert-rules.yml").read_text()
        sandbox.start_load(50, tmp_path / "responses.csv")
        sandbox.wait_for_traffic()
        sandbox.set_canary(Behaviour(error_rate=1.0))
        query = f'ALERTS{{alertname="{ERROR_ALERT}",alertstate="firing"}}'
        _wait_for(lambda: bool(instant(sandbox.prometheus_url, query)), 40, f"{ERROR_ALERT} firing")


def test_router_sync_delay_emulates_argocd_polling(supervisor: Supervisor, tmp_path: Path) -> None:
    remote = create_remote(tmp_path / "remote.git")
    stable, canary = _start_app(supervisor, "v1"), _start_app(supervisor, "v2")
    port = free_port()
    supervisor.start("router", [PY, "-m", "rollguard.sandbox.router", "--port", str(port), "--git-dir",
                                str(remote.path), "--stable-url", stable, "--canary-url", canary,
                                "--sync-delay", "1.5"],
                     port=port, health_url=f"http://127.0.0.1:{port}/healthz")
    admin = f"http://127.0.0.1:{port}{ADMIN_PATH}"
    push_split(remote, tmp_path / "clone", 100, 0)
    _wait_for(lambda: json.loads(_get(admin)[2])["canary"] == 0, 10, "applying 100/0 after the delay")
    change = json.loads(_get(admin)[2])["changes"][-1]
    assert change["applied_at"] - change["detected_at"] >= 1.5


def test_alert_rules_use_the_analysis_query_verbatim() -> None:
    from rollguard.sandbox.alert_rules import AlertSettings, rules_text
    from rollguard.steps.metrics.istio_queries import error_rate_query, p99_latency_query

    text = rules_text(AlertSettings(window="10s", max_error_rate=0.01, max_p99_ms=500.0, for_s=60.0))
    assert f"({error_rate_query('demo', 'podinfo', 'v2', '10s')}) > 0.01" in text
    assert f"({p99_latency_query('demo', 'podinfo', 'v2', '10s')}) > 500.0" in text
    assert text.count("for: 1m") == 2


def test_free_ports_lie_below_the_ephemeral_range_and_are_never_handed_out_twice() -> None:
    """An OS-picked port is in the ephemeral range, where an outgoing connection can take it before the server
    binds it (a gRPC router failed to bind in CI); free_port stays below that range."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(10000 <= port < low for port in ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[0]))  # free indeed
