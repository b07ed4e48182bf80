"""The committed WorkflowTemplate YAML, run end to end by the local executor with the real step commands.

Real git (a bare repository as the GitOps remote) and the real `rollguard` steps. Most runs point
analyze at a closed loopback port, which it turns into a verdict through its `--on-error` policy;
the healthy release runs against a real Prometheus scraping synthetic Istio traffic. These runs
check the wiring Argo would follow: parameters, output files, `when` branches, recursion, exit handler.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from release_remote import FILE_IN_REPO, git, seeded_remote, split_in
from support_prometheus import istio_environment

from rollguard.sandbox.executor.loader import load_files
from rollguard.sandbox.executor.local_cluster import LocalCluster
from rollguard.sandbox.executor.nodes import Phase, WorkflowResult
from rollguard.sandbox.executor.runner import LocalExecutor
from rollguard.sandbox.ports import free_port
from rollguard.sandbox.synthetic_traffic import TrafficProfile
from rollguard.workflows.render import write_rendered
from rollguard.workflows.workflow_settings import TemplateSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare GitOps repository whose VirtualService sends 90/10 (stable/canary)."""
    return seeded_remote(tmp_path)


def run(tmp_path: Path, workflow: str, templates_dir: Path = REPO / "workflows", **parameters: str) -> WorkflowResult:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    values = {
        "repo": str(tmp_path / "gitops.git"),
        "path": FILE_IN_REPO,
        "virtual-service": "podinfo",
        "namespace": "demo",
        "service": "podinfo",
        "stable-version": "v1",
        "canary-version": "v2",
        "prometheus-url": f"http://127.0.0.1:{free_port()}",  # nothing listens: every query errors
        "interval": "200ms",
        "query-attempts": "1",
        "max-consecutive-errors": "1",
        "verdict-file": str(out / "verdict.json"),
        "verdict-word-file": str(out / "verdict-word"),
        "canary-weight-file": str(out / "canary-weight"),
        "weight-file": str(out / "weight"),
        "rest-file": str(out / "rest"),
        "rolled-back-file": str(out / "rolled-back"),
        "rollback-result-file": str(out / "analysis-rollback.json"),
    }
    values.update({name.replace("_", "-"): value for name, value in parameters.items()})
    library = load_files(sorted(p for p in templates_dir.glob("*.yaml") if p.name != "kustomization.yaml"))
    events: list[object] = []
    # the test's own lock directory: the templates' mutex would otherwise be shared with every run on the machine
    executor = LocalExecutor(library, on_event=events.append, work_dir=tmp_path / "pods",
                             cluster=LocalCluster(lock_dir=tmp_path / "locks"))
    known = {p["name"] for p in library.get(workflow, "test").spec["arguments"]["parameters"]}
    return executor.run(workflow, {name: value for name, value in values.items() if name in known})


def ran(result: WorkflowResult) -> dict[str, Phase]:
    """Step name (the last part of the node's display path) -> phase, for the nodes that ran."""
    return {node.display_name.split(".")[-1]: node.phase for node in result.nodes if node.phase is not Phase.SKIPPED}


def test_release_rolls_back_on_a_fail_verdict(remote: Path, tmp_path: Path) -> None:
    result = run(tmp_path, "canary-release", on_error="fail")
    # A rolled-back release ends Failed, with the reason as the workflow's message (the exit handler's
    # termination message), after its rollback landed, and without a second rollback.
    assert result.phase is Phase.FAILED
    assert result.message.startswith("Error (exit code 1): canary rolled back: 2 checks in a row could not be judged")
    nodes = ran(result)
    assert {"plan", "deploy", "analyze", "rollback"} <= set(nodes)
    assert nodes["analyze"] is Phase.FAILED  # exit 1, continueOn
    assert not {"rollback-inconclusive", "advance", "promote"} & set(nodes)
    assert split_in(remote) == (100, 0)
    messages = git(remote, "log", "--format=%B", "main")
    assert "could not be judged" in messages  # the verdict's reason, carried to the rollback commit
    assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "rolled_back"
    assert len(git(remote, "log", "--format=%H", "main").split()) == 2  # the seed and one rollback: none twice
    # rollback's reason file is a file of its own: analyze's full verdict (with its checks) survives.
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["verdict"] == "fail" and verdict["checks"], "the verdict file was overwritten"


def outputs_of(result: WorkflowResult, step: str) -> dict[str, str]:
    (node,) = [node for node in result.nodes if node.display_name.split(".")[-1] == step
               and node.phase is not Phase.SKIPPED]  # fmt: skip
    return node.outputs


@pytest.mark.parametrize("workflow", ["canary-release", "canary-analysis"])
def test_analyze_rolls_back_itself_and_the_rollback_step_commits_nothing(
    remote: Path, tmp_path: Path, workflow: str
) -> None:
    result = run(tmp_path, workflow, on_error="fail")  # rollback-in-analysis: true, the default
    assert split_in(remote) == (100, 0)
    commits = git(remote, "log", "--format=%H", "main").split()
    assert len(commits) == 2  # the seed and analyze's rollback
    assert "Verdict: fail: " in git(remote, "log", "-1", "--format=%B", "main")
    analyze = outputs_of(result, "analyze")
    assert analyze["rolled-back"] == "true" and analyze["verdict"] == "fail"
    assert json.loads(analyze["rollback-result"])["commit"] == commits[0]
    # The rollback step after it, the safety net: ran and succeeded, with nothing to commit.
    assert ran(result)["rollback"] is Phase.SUCCEEDED
    safety_net = json.loads(outputs_of(result, "rollback")["result"])
    assert safety_net["changed"] is False and safety_net["commit"] is None and safety_net["head"] == commits[0]
    assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "rolled_back"


def test_without_rollback_in_analysis_the_rollback_step_rolls_back(remote: Path, tmp_path: Path) -> None:
    result = run(tmp_path, "canary-release", on_error="fail", rollback_in_analysis="false")
    commits = git(remote, "log", "--format=%H", "main").split()
    assert split_in(remote) == (100, 0) and len(commits) == 2
    assert outputs_of(result, "analyze")["rolled-back"] == "false"
    assert outputs_of(result, "analyze")["rollback-result"] == ""
    assert json.loads(outputs_of(result, "rollback")["result"])["commit"] == commits[0]


def test_release_holds_the_split_on_inconclusive_under_stop(remote: Path, tmp_path: Path) -> None:
    result = run(tmp_path, "canary-release", on_error="inconclusive", on_inconclusive="stop", schedule="20,100")
    assert result.phase is Phase.FAILED  # held, not released: not a success either
    assert "canary held at 20 %: verdict inconclusive" in result.message
    assert {"deploy", "analyze"} <= set(ran(result))
    assert not {"rollback", "rollback-inconclusive", "advance", "advance-inconclusive"} & set(ran(result))
    assert split_in(remote) == (80, 20)


def test_inconclusive_rolls_back_under_the_default_policy(remote: Path, tmp_path: Path) -> None:
    result = run(tmp_path, "canary-release", on_error="inconclusive", fail_on_rollback="false")  # the old phase
    assert result.phase is Phase.SUCCEEDED, result.message
    assert "rollback-inconclusive" in ran(result) and "rollback" not in ran(result)
    assert split_in(remote) == (100, 0)


def test_exit_handler_rolls_back_a_workflow_that_failed(remote: Path, tmp_path: Path) -> None:
    assert split_in(remote) == (90, 10)  # a release under way
    result = run(tmp_path, "canary-release", schedule="50,20")  # the first step fails: bad schedule
    assert result.phase is not Phase.SUCCEEDED
    assert result.exit_handler is not None and result.exit_handler.phase is Phase.SUCCEEDED
    assert result.exit_handler.outputs["outcome"] == "error"
    assert split_in(remote) == (100, 0)
    assert "Reason: release error: plan: Error (exit code 2)" in git(remote, "log", "-1", "--format=%B", "main")


def test_analysis_hook_does_nothing_when_the_canary_has_no_traffic(remote: Path, tmp_path: Path) -> None:
    first = run(tmp_path, "canary-analysis", on_error="fail")
    assert first.phase is Phase.FAILED and "canary rolled back:" in first.message
    assert {"status", "analyze", "rollback"} <= set(ran(first))
    assert split_in(remote) == (100, 0)
    head = git(remote, "rev-parse", "main")
    # The rollback commit makes ArgoCD sync again, and the hook runs again: now it only reads Git.
    second = run(tmp_path, "canary-analysis", on_error="fail")
    assert second.phase is Phase.SUCCEEDED, second.message
    assert set(ran(second)) == {"status", "preflight", "onExit"}  # judge (analyze, rollback) skipped
    assert second.exit_handler is not None and second.exit_handler.outputs["outcome"] == "skipped"
    assert git(remote, "rev-parse", "main") == head


def test_the_guard_after_the_promotion_rolls_back_on_a_fail(remote: Path, tmp_path: Path) -> None:
    """schedule 100 with a guard: deploy 100 %, then the guard's analysis (Prometheus unreachable, --on-error
    fail) fails on the absolute limits, and its rollback puts everything back on stable."""
    result = run(tmp_path, "canary-release", schedule="100", guard_duration="5s", on_error="fail")
    assert result.phase is Phase.FAILED and "canary rolled back:" in result.message
    paths = {node.display_name: node.phase for node in result.nodes if node.phase is not Phase.SKIPPED}
    assert paths.get("release.guard.analyze") is Phase.FAILED  # exit 1: the verdict fail
    assert paths.get("release.guard.rollback") is Phase.SUCCEEDED
    assert not any(".judge" in path for path in paths)
    assert split_in(remote) == (100, 0)
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert verdict["settings"]["absolute_only"] is True and verdict["settings"]["duration"] == "5s"
    assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "rolled_back"


def test_an_open_ended_guard_is_refused_before_the_release_deploys(remote: Path, tmp_path: Path) -> None:
    result = run(tmp_path, "canary-release", schedule="100", guard_duration="forever", on_error="fail")
    assert result.phase is not Phase.SUCCEEDED
    nodes = ran(result)
    assert nodes["plan"] is Phase.FAILED and "deploy" not in nodes and "guard" not in nodes
    assert result.exit_handler is not None and result.exit_handler.outputs["outcome"] == "error"
    assert "plan: Error (exit code 2)" in git(remote, "log", "-1", "--format=%B", "main")  # a usage error
    assert split_in(remote) == (100, 0)  # never at 100 %: the seed's 10 % went back to stable


def test_no_guard_without_a_guard_duration(remote: Path, tmp_path: Path) -> None:
    result = run(tmp_path, "canary-release", schedule="100", on_error="fail")
    assert result.phase is Phase.SUCCEEDED, result.message
    assert "analyze" not in ran(result) and split_in(remote) == (0, 100)


@pytest.mark.slow
def test_healthy_canary_walks_the_whole_schedule(remote: Path, tmp_path: Path) -> None:
    healthy = TrafficProfile(requests_per_s=60, error_rate=0.0, latency_ms=20)
    with istio_environment() as env:
        env.traffic.set("podinfo", "v1", healthy)
        env.traffic.set("podinfo", "v2", healthy)
        env.wait_for_requests("podinfo", "v1")
        env.wait_for_requests("podinfo", "v2")
        result = run(tmp_path, "canary-release", prometheus_url=env.url, interval="500ms", duration="2s",
                     min_requests="10", guard_duration="2s")
    assert result.phase is Phase.SUCCEEDED, result.message
    paths = [node.display_name for node in result.nodes if node.phase is not Phase.SKIPPED]
    # 10 % -> pass -> 50 % -> pass -> 100 % -> the guard passes: two analyses, two promotions, one guard.
    assert [p.split(".")[-1] for p in paths if p.split(".")[-1] in ("deploy", "analyze", "promote")] == [
        "deploy", "analyze", "promote", "analyze", "promote", "analyze"]  # fmt: skip
    assert "release.judge.advance.judge.advance.promote" in paths
    assert "release.judge.advance.judge.advance.guard.analyze" in paths
    guard = json.loads((tmp_path / "out" / "verdict.json").read_text())
    assert guard["verdict"] == "pass" and guard["settings"]["absolute_only"] is True
    assert not any(p.endswith(("rollback", "rollback-inconclusive", "rollback-unfinished")) for p in paths)
    assert split_in(remote) == (0, 100)
    subjects = git(remote, "log", "--format=%s", "main").splitlines()
    # The seed already sends 10 %, so deploy 10 pushes nothing; then one commit per promotion.
    assert len(subjects) == 3 and "50 %" in subjects[1] and "100 %" in subjects[0]


def test_a_release_past_its_deadline_is_rolled_back_by_the_exit_handler(remote: Path, tmp_path: Path) -> None:
    # Rendered with a short deadline: 1 s per step pod and a 1 s bake time; the analysis is then given
    # 60 s, so the deadline (6 pods + 1 analysis = 7 s for 20,100) passes while it runs. Argo fails the
    # running step and still runs the exit handler (workflowpod.go: exit handlers ignore the deadline).
    rendered = tmp_path / "short-deadline"
    write_rendered(rendered, TemplateSettings(step_allowance_s=1, defaults={"schedule": "20,100", "duration": "1s"}))
    result = run(tmp_path, "canary-release", rendered, on_error="continue", duration="60s")
    assert result.phase is not Phase.SUCCEEDED
    assert result.exit_handler is not None and result.exit_handler.phase is Phase.SUCCEEDED
    assert result.exit_handler.outputs["outcome"] == "error"
    assert split_in(remote) == (100, 0)
    assert "the workflow ran past its deadline (in analyze)" in git(remote, "log", "-1", "--format=%B", "main")


@pytest.mark.slow
def test_with_the_opt_in_verdict_artifact_and_no_repository_a_pass_ends_in_a_rollback(
    remote: Path, tmp_path: Path
) -> None:
    # Why the verdict artifact is opt-in: without an artifact repository Argo's wait container cannot
    # upload it, fails the *passing* analyze node with Error, continueOn.failed does not cover Error,
    # and the exit handler rolls back a healthy canary. The default rendering has no artifact.
    rendered = tmp_path / "with-artifact"
    write_rendered(rendered, TemplateSettings(verdict_artifact=True))
    healthy = TrafficProfile(requests_per_s=60, error_rate=0.0, latency_ms=20)
    with istio_environment() as env:
        env.traffic.set("podinfo", "v1", healthy)
        env.traffic.set("podinfo", "v2", healthy)
        env.wait_for_requests("podinfo", "v1")
        env.wait_for_requests("podinfo", "v2")
        result = run(tmp_path, "canary-release", rendered, prometheus_url=env.url, interval="500ms", duration="2s",
                     min_requests="10", schedule="20,100")  # fmt: skip
    assert ran(result)["analyze"] is Phase.ERROR
    assert result.phase is not Phase.SUCCEEDED and result.exit_handler is not None
    assert result.exit_handler.outputs["outcome"] == "error"
    assert split_in(remote) == (100, 0)
