"""Operating a release through the committed WorkflowTemplates and the local executor: the approval gate,
`argo stop` and `argo terminate` at every stage (deploy, analyze, the approval wait, promote), the release's
notification to a real HTTP server, and its template metrics scraped by a real Prometheus with the shipped
alert rules. Real Git, real steps; a real Prometheus with healthy synthetic traffic where a pass is needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from release_remote import FILE_IN_REPO, git, seeded_remote, split_in
from ruamel.yaml import YAML
from support_prometheus import IstioEnvironment, istio_environment, query
from webhook_server import webhook_server

from rollguard.sandbox.demo_app import LoopbackServer
from rollguard.sandbox.executor.control import RunControl, request
from rollguard.sandbox.executor.errors import SubmissionRefused
from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.local_cluster import LocalCluster
from rollguard.sandbox.executor.metrics import MetricsRegistry, MetricsSink, RemoteMetrics
from rollguard.sandbox.executor.nodes import Event, EventKind, Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.sandbox.ports import free_port
from rollguard.sandbox.prometheus_server import PrometheusServer, ScrapeJob
from rollguard.sandbox.synthetic_traffic import TrafficProfile
from rollguard.sandbox.workflow_metrics import make_handler
from rollguard.steps import trailers

REPO = Path(__file__).resolve().parents[1]
HEALTHY = TrafficProfile(requests_per_s=60, error_rate=0.0, latency_ms=20)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare GitOps repository whose VirtualService sends 90/10 (stable/canary)."""
    return seeded_remote(tmp_path)


@pytest.fixture(scope="module")
def healthy() -> Iterator[IstioEnvironment]:
    """A real Prometheus scraping a healthy stable and canary: analyses pass."""
    with istio_environment() as env:
        env.traffic.set("podinfo", "v1", HEALTHY)
        env.traffic.set("podinfo", "v2", HEALTHY)
        env.wait_for_requests("podinfo", "v1")
        env.wait_for_requests("podinfo", "v2")
        yield env


def parameters(tmp_path: Path, prometheus_url: str | None = None, **extra: str) -> dict[str, str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    values = {
        "repo": str(tmp_path / "gitops.git"), "path": FILE_IN_REPO, "virtual-service": "podinfo",
        "namespace": "demo", "service": "podinfo", "stable-version": "v1", "canary-version": "v2",
        "prometheus-url": prometheus_url or f"http://127.0.0.1:{free_port()}",
        "interval": "500ms", "duration": "2s", "min-requests": "10", "query-attempts": "1",
        "max-consecutive-errors": "1", "schedule": "20,100",
    }  # fmt: skip
    for name in ("verdict-file", "verdict-word-file", "verdict-summary-file", "canary-weight-file", "weight-file",
                 "rest-file", "commit-file", "result-file", "outcome-file", "final-weight-file",
                 "breach-to-cut-file"):  # fmt: skip
        values[name] = str(out / name)
    values.update({name.replace("_", "-"): value for name, value in extra.items()})
    return values


def known_to(workflow: str, values: dict[str, str]) -> dict[str, str]:
    """The values the workflow declares (canary-release has no canary-weight-file, canary-analysis no schedule)."""
    library = load_files([REPO / "workflows" / f"{workflow}.yaml"])
    declared = {p["name"] for p in library.get(workflow, "test").spec["arguments"]["parameters"]}
    return {name: value for name, value in values.items() if name in declared}


def run(tmp_path: Path, values: dict[str, str], control: RunControl | None = None,
        on_event: Callable[[Event], None] | None = None, metrics: MetricsSink | None = None,
        workflow: str = "canary-release") -> WorkflowResult:  # fmt: skip
    library = load_files(sorted(p for p in (REPO / "workflows").glob("*.yaml") if p.name != "kustomization.yaml"))
    events: list[Event] = []

    def sink(event: Event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    executor = LocalExecutor(library, on_event=sink, work_dir=tmp_path / "pods",
                             cluster=LocalCluster(lock_dir=tmp_path / "locks"), control=control, metrics=metrics)
    return executor.run(workflow, known_to(workflow, values))


def names(result: WorkflowResult) -> list[str]:
    return [node.display_name.split(".")[-1] for node in result.nodes if node.phase is not Phase.SKIPPED]


# --- the approval gate ----------------------------------------------------------------------------


def test_approval_answered_at_once_promotes_with_metrics(remote: Path, tmp_path: Path,
                                                         healthy: IstioEnvironment) -> None:
    registry = MetricsRegistry()
    result = run(tmp_path, parameters(tmp_path, healthy.url, approval="true"), RunControl(approve_after_s=0),
                 metrics=registry)  # fmt: skip
    assert result.phase is Phase.SUCCEEDED, result.message
    assert names(result).index("approve") < names(result).index("promote")
    assert split_in(remote) == (0, 100)
    assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "promoted"
    promoted = trailers.read_release_trailers(git(remote, "log", "-1", "--format=%B", "main"))
    assert promoted is not None and (promoted.action, promoted.evidence.verdict) == ("promote", "pass")
    assert promoted.workflow == result.name  # the workflow's name reaches the commit trailers
    text = registry.exposition()
    assert ('argo_workflows_rollguard_releases_total{kind="release",namespace="demo",outcome="promoted",'
            'virtual_service="podinfo"} 1') in text
    assert 'argo_workflows_rollguard_canary_weight_percent{namespace="demo",virtual_service="podinfo"} 100' in text
    assert re.search(r'argo_workflows_rollguard_analysis_duration_seconds_count\{namespace="demo",service="podinfo",'
                     r'verdict="pass"\} 1', text)
    assert "# TYPE argo_workflows_rollguard_analysis_duration_seconds histogram" in text
    assert "breach_to_cut" not in text  # unknown for a promotion: not emitted (its `when`)


def test_approval_before_every_step_waits_for_a_resume_from_elsewhere(remote: Path, tmp_path: Path,
                                                                     healthy: IstioEnvironment) -> None:
    control = RunControl(control_dir=tmp_path / "control")
    waits: list[float] = []

    def on_event(event: Event) -> None:
        if event.kind is EventKind.STARTED and event.step.endswith(".approve"):
            waits.append(time.monotonic())
            name = next(p.name.removesuffix(".running") for p in (tmp_path / "control").glob("*.running"))

            def resume_later() -> None:  # another shell: `rollguard run-local --resume NAME`
                time.sleep(0.5)
                request(tmp_path / "control", name, "resume")

            threading.Thread(target=resume_later, daemon=True).start()

    values = parameters(tmp_path, healthy.url, approval_every_step="true", schedule="20,50,100")
    started = time.monotonic()
    result = run(tmp_path, values, control, on_event)
    assert result.phase is Phase.SUCCEEDED, result.message
    assert names(result).count("approve") == 2 and len(waits) == 2
    assert time.monotonic() - started >= 1.0  # each approval waited for its resume
    assert split_in(remote) == (0, 100)


def test_a_bad_approval_value_is_refused_at_submission(tmp_path: Path) -> None:
    with pytest.raises(SubmissionRefused, match=r"spec.arguments.approval.value should be present in .*enum"):
        run(tmp_path, parameters(tmp_path, approval="yes"))


# --- argo stop / argo terminate at every stage -------------------------------------------------------

TRIGGERS = {
    # stage: (which event starts the action, the split Git holds if nothing rolls back)
    "deploy": (lambda e: e.kind is EventKind.LOG and e.step.endswith(".deploy") and "pushed" in e.text, (80, 20)),
    "analyze": (lambda e: e.kind is EventKind.LOG and e.step.endswith(".analyze") and "check" in e.text, (80, 20)),
    "approval": (lambda e: e.kind is EventKind.STARTED and e.step.endswith(".approve"), (80, 20)),
    "promote": (lambda e: e.kind is EventKind.LOG and e.step.endswith(".promote") and "pushed" in e.text, (0, 100)),
}


@pytest.mark.parametrize("stage", list(TRIGGERS))
@pytest.mark.parametrize("action", ["stop", "terminate"])
def test_stop_leaves_traffic_on_stable_at_every_stage_and_terminate_leaves_it_where_it_was(
    remote: Path, tmp_path: Path, healthy: IstioEnvironment, stage: str, action: str
) -> None:
    control = RunControl(approve_after_s=None if stage == "approval" else 0)
    trigger, left_by_terminate = TRIGGERS[stage]
    fired = threading.Event()

    def on_event(event: Event) -> None:
        if not fired.is_set() and trigger(event):
            fired.set()
            getattr(control, action)()

    result = run(tmp_path, parameters(tmp_path, healthy.url, approval="true"), control, on_event)
    assert fired.is_set(), f"the release never reached {stage}"
    assert result.phase is Phase.FAILED
    strategy = "Stop" if action == "stop" else "Terminate"
    assert result.message == f"Stopped with strategy '{strategy}'"
    if action == "stop":  # the exit handler runs and rolls back
        assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "aborted"
        assert split_in(remote) == (100, 0)
        reason = trailers.read_release_trailers(git(remote, "log", "-1", "--format=%B", "main"))
        assert reason is not None and reason.evidence.reason.startswith("release aborted: stopped (argo stop) during")
    else:  # no exit handler: the weight stays in Git until someone (or the next hook run) acts
        assert result.exit_handler is None
        assert split_in(remote) == left_by_terminate
        done = subprocess.run([sys.executable, "-m", "rollguard.steps.cli", "rollback", "--repo", str(remote),
                               "--path", FILE_IN_REPO, "--virtual-service", "podinfo",
                               "--reason", "release terminated"], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert split_in(remote) == (100, 0)  # the documented remedy


# --- the notification, from the workflow's exit handler ---------------------------------------------


def test_a_rolled_back_release_notifies_once_with_its_evidence(remote: Path, tmp_path: Path) -> None:
    with webhook_server() as server:
        result = run(tmp_path, parameters(tmp_path, on_error="fail", notify_url=server.url(),
                                          notify_format="json"))  # fmt: skip
    assert result.phase is Phase.FAILED and "canary rolled back:" in result.message
    (received,) = server.received
    sent = received.json()
    assert (sent["outcome"], sent["service"], sent["namespace"], sent["canary_weight"]) == (
        "rolled_back", "podinfo", "demo", 0)
    assert sent["verdict"]["verdict"] == "fail" and sent["verdict"]["metric"] == "canary_error_rate"
    assert sent["commit"]["sha"] == git(remote, "rev-parse", "main").strip()
    assert sent["workflow"]["name"] == result.name


def test_a_bad_notify_url_stops_the_release_before_deploy(remote: Path, tmp_path: Path) -> None:
    head = git(remote, "rev-parse", "main")
    result = run(tmp_path, parameters(tmp_path, notify_url="ftp://hooks.example.com/x"))
    assert result.phase is Phase.FAILED
    assert "deploy" not in names(result) and git(remote, "rev-parse", "main") == head
    preflight = next(node for node in result.nodes if node.display_name.endswith("preflight"))
    assert preflight.phase is Phase.FAILED and preflight.exit_code == 2
    assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "error"


# --- the metrics, in the sandbox's Prometheus, with the shipped alert rules ---------------------------


def test_metrics_reach_prometheus_and_the_shipped_rule_fires(remote: Path, tmp_path: Path) -> None:
    rules = YAML(typ="safe").load((REPO / "argocd" / "monitoring" / "rollguard-rules.yaml").read_text())["spec"]
    rules_file = tmp_path / "rollguard-rules.yml"
    rules_file.write_text(json.dumps(rules))
    port = free_port()
    server = LoopbackServer(("127.0.0.1", port), make_handler(MetricsRegistry()))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        prometheus = PrometheusServer([ScrapeJob("argo-workflows", [f"127.0.0.1:{port}"])], scrape_interval_s=1.0,
                                      evaluation_interval_s=1.0, rule_files=[rules_file])  # fmt: skip
        with prometheus:
            result = run(tmp_path, parameters(tmp_path, on_error="fail"),
                         metrics=RemoteMetrics(f"http://127.0.0.1:{port}"))  # fmt: skip
            assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "rolled_back"
            deadline = time.monotonic() + 30
            firing: list[dict] = []
            while time.monotonic() < deadline and not firing:
                firing = query(prometheus.url, 'ALERTS{alertname="RollguardCanaryRolledBack",alertstate="firing"}')
                time.sleep(0.5)
            assert firing and firing[0]["metric"]["virtual_service"] == "podinfo"
            outcome = query(prometheus.url, "argo_workflows_rollguard_releases_total")
            assert [(s["metric"]["outcome"], s["value"][1]) for s in outcome] == [("rolled_back", "1")]
            weight = query(prometheus.url, "argo_workflows_rollguard_canary_weight_percent")
            assert weight[0]["value"][1] == "0"
    finally:
        server.shutdown()
        server.server_close()


# --- the same through the command line: run-local, resumed from another shell ------------------------


def test_run_local_waits_for_an_approval_and_run_local_resume_answers_it(remote: Path, tmp_path: Path,
                                                                         healthy: IstioEnvironment) -> None:
    control_dir = tmp_path / "control"
    values = known_to("canary-release", parameters(tmp_path, healthy.url, approval="true"))
    arguments = [f"-p{name}={value}" for name, value in values.items()]
    template = str(REPO / "workflows" / "canary-release.yaml")
    command = [sys.executable, "-m", "rollguard.steps.cli", "run-local", template, *arguments,
               "--control-dir", str(control_dir), "--lock-dir", str(tmp_path / "locks")]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    name = ""
    for line in process.stdout:
        lines.append(line)
        found = re.match(r"-- workflow (\S+) ", line)
        name = found.group(1) if found else name
        if "suspended, waiting for `argo resume`" in line:
            break
    assert name and split_in(remote) == (80, 20), "".join(lines)
    resumed = subprocess.run([sys.executable, "-m", "rollguard.steps.cli", "run-local", "--resume", name,
                              "--control-dir", str(control_dir)], capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0 and f"asked local workflow {name} to resume" in resumed.stdout
    rest, _ = process.communicate(timeout=120)
    assert process.returncode == 0, "".join(lines) + rest
    assert f"workflow {name} Succeeded" in rest and split_in(remote) == (0, 100)
