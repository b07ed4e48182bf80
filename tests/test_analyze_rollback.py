"""`rollguard analyze --rollback-on-fail`: the step rolls back itself the moment it decides, with rollback's code.

A real Prometheus (1 s scrape) with synthetic Istio traffic, real bare Git repositories, the fake Kubernetes
API over HTTP. Each fault is run twice, through analyze and through `rollguard rollback` on a twin
repository: both must end in the same state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_kube_api import FakeKubeApi, application_object, virtual_service_object
from git_remote import FIXTURE, MANIFEST_PATH, commit_message, make_remote, race_next_push, remote_file, remote_head
from support_prometheus import NAMESPACE, IstioEnvironment

from rollguard.sandbox.ports import free_port
from rollguard.sandbox.synthetic_traffic import TrafficProfile
from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.traffic.virtualservice import read_split

ORIGINAL = FIXTURE.read_text(encoding="utf-8")
HEALTHY = TrafficProfile(requests_per_s=40, error_rate=0.0, latency_ms=30)
SECRET_TOKEN = "s3cret-git-token-4711"
# Differences between two results that are not outcomes: who ran it, when, and the commit ids.
VOLATILE = ("started_at", "pushed_at", "commit", "head", "repo", "error", "argocd", "live_patch")


def location(remote: Path) -> list[str]:
    return ["--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews"]


def analyze(env_url: str, service: str, out: Path, *extra: str) -> int:
    """`rollguard analyze --rollback-on-fail` in this process, its files in `out`; the exit code."""
    out.mkdir(exist_ok=True)
    return cli.main([
        "analyze", "--prometheus-url", env_url, "--namespace", NAMESPACE, "--service", service,
        "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s",
        "--verdict-file", str(out / "verdict.json"), "--rolled-back-file", str(out / "rolled-back"),
        "--rollback-result-file", str(out / "result.json"), *extra,
    ])  # fmt: skip


def rollback(remote: Path, out: Path, *extra: str) -> int:
    """`rollguard rollback` as the workflow's rollback step runs it: the verdict file as the reason."""
    return cli.main(["rollback", *location(remote), "--reason-file", str(out / "verdict.json"),
                     "--result-file", str(out / "rollback-result.json"), *extra])  # fmt: skip


def fail_at_once(env: IstioEnvironment, service: str) -> list[str]:
    """Flags that make analyze fail at its first check: the canary has no traffic and no data fails."""
    env.traffic.set(service, "v1", HEALTHY)
    return ["--on-no-data", "fail", "--duration", "1m"]


def outcome(result_file: Path, remote: Path) -> dict[str, Any]:
    """The result without what differs between two runs; its error with the repository and commit ids neutral."""
    result = json.loads(result_file.read_text())
    kept = {key: value for key, value in result.items() if key not in VOLATILE}
    error = result["error"] or ""
    for sha in (result["commit"], result["head"]):
        error = error.replace(sha[:12], "SHA") if sha else error
    return {**kept, "error": error.replace(str(remote), "REMOTE")}


def test_faulty_canary_is_rolled_back_by_analyze_and_the_rollback_step_commits_nothing(
    istio_env: IstioEnvironment, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote, out = make_remote(tmp_path), tmp_path / "out"
    istio_env.traffic.set("inproc-broken", "v1", HEALTHY)
    istio_env.traffic.set("inproc-broken", "v2", TrafficProfile(requests_per_s=40, error_rate=1.0))
    istio_env.wait_for_requests("inproc-broken", "v2")
    capfd.readouterr()
    code = analyze(istio_env.url, "inproc-broken", out, "--duration", "2m", "--rollback-on-fail", *location(remote))
    log = capfd.readouterr().err
    assert code == ExitCode.FAIL  # the exit code still tells the verdict
    assert (out / "rolled-back").read_text() == "true"
    verdict = json.loads((out / "verdict.json").read_text())
    assert (verdict["settings"]["rollback_on_fail"], verdict["settings"]["on_inconclusive"]) == (True, "rollback")
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)
    message = commit_message(remote)
    assert message.startswith("rollguard: roll back reviews to stable v1 (canary v2 0 %)\n")
    assert f"Verdict: fail: {verdict['reason']}" in message
    assert f"Evidence: metric {verdict['failed_check']['metric']}" in message
    assert "Rollguard-Action: rollback" in message and "Rollguard-Verdict: fail" in message
    result = json.loads((out / "result.json").read_text())
    assert result["action"] == "rollback" and result["commit"] == remote_head(remote) and result["error"] is None
    # Logged by analyze, in order: the verdict, then the rollback, on one line each.
    assert log.index(" analyze INFO VERDICT FAIL") < log.index("rolling the canary back in this step")
    assert " analyze INFO pushed " in log
    # The workflow's rollback step after it, the safety net: nothing to commit, exit 0.
    head = remote_head(remote)
    assert rollback(remote, out) == ExitCode.OK
    assert remote_head(remote) == head
    assert json.loads((out / "rollback-result.json").read_text())["changed"] is False


def test_a_pass_never_touches_git(
    istio_env: IstioEnvironment, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote, out = make_remote(tmp_path), tmp_path / "out"
    istio_env.traffic.set("inproc-healthy", "v1", HEALTHY)
    istio_env.traffic.set("inproc-healthy", "v2", HEALTHY)
    istio_env.wait_for_requests("inproc-healthy", "v2")
    head = remote_head(remote)
    out.mkdir()
    (out / "result.json").write_text('{"commit": "an earlier run\'s"}')  # no stale result survives
    capfd.readouterr()
    code = analyze(istio_env.url, "inproc-healthy", out, "--duration", "2s", "--min-requests", "1",
                   "--rollback-on-fail", *location(remote))  # fmt: skip
    log = capfd.readouterr().err
    assert code == ExitCode.OK
    assert (out / "rolled-back").read_text() == "false"
    assert remote_head(remote) == head and not (out / "result.json").exists()
    assert "a fail verdict (and inconclusive, policy rollback) is rolled back by this step" in log
    assert "rolling the canary back" not in log and "rollback: " not in log  # nothing cloned


@pytest.mark.parametrize(("policy", "rolled_back"), [("rollback", True), ("stop", False), ("promote", False)])
def test_the_inconclusive_policy_applies_the_same_way(
    istio_env: IstioEnvironment, tmp_path: Path, policy: str, rolled_back: bool
) -> None:
    remote, out = make_remote(tmp_path), tmp_path / "out"
    istio_env.traffic.set(f"inproc-idle-{policy}", "v1", HEALTHY)  # no canary traffic: inconclusive at the end
    code = analyze(istio_env.url, f"inproc-idle-{policy}", out, "--duration", "1s", "--rollback-on-fail",
                   "--on-inconclusive", policy, *location(remote))  # fmt: skip
    assert code == ExitCode.INCONCLUSIVE
    assert (out / "rolled-back").read_text() == str(rolled_back).lower()
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == ((100, 0) if rolled_back else (90, 10))


@pytest.mark.parametrize("push_retries", ["5", "0"])
def test_a_push_race_ends_as_it_does_for_the_rollback_command(
    istio_env: IstioEnvironment, tmp_path: Path, push_retries: str
) -> None:
    """Another commit lands between the clone and the push: re-applied on top of it (or, with no retries left,
    nothing pushed), exactly as `rollguard rollback` does on a twin repository."""
    ends = []
    for side in ("analyze", "command"):
        remote, out = make_remote(tmp_path / side), tmp_path / side / "out"
        other = ORIGINAL.replace("# Testers always get the canary.", "# Testers (QA team) get the canary.")
        race_next_push(remote, MANIFEST_PATH, other, "Clarify the testers route")
        flags = ["--push-retries", push_retries]
        if side == "analyze":
            code = analyze(istio_env.url, "inproc-race", out, *fail_at_once(istio_env, "inproc-race"),
                           "--rollback-on-fail", *location(remote), *flags)  # fmt: skip
            assert code == ExitCode.FAIL
            result_file = out / "result.json"
            assert (out / "rolled-back").read_text() == ("true" if push_retries != "0" else "false")
        else:
            assert rollback(remote, tmp_path / "analyze" / "out", *flags) == (
                ExitCode.OK if push_retries != "0" else ExitCode.ERROR)
            result_file = tmp_path / "analyze" / "out" / "rollback-result.json"
        final = remote_file(remote)
        assert "# Testers (QA team) get the canary." in final  # the other commit is kept, never force-pushed
        ends.append((final, outcome(result_file, remote)))
    assert ends[0] == ends[1]
    expected = (100, 0) if push_retries != "0" else (90, 10)
    assert read_split(ends[0][0], "reviews", "v1", "v2") == expected


def test_an_unreachable_argocd_ends_as_it_does_for_the_rollback_command(
    istio_env: IstioEnvironment, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Git gets the rollback, the cluster side fails: analyze keeps its verdict's exit code and says it did not
    finish the rollback (false), `rollguard rollback` exits 4; the results agree; the safety net then converges."""
    monkeypatch.setenv("ROLLGUARD_GIT_TOKEN", SECRET_TOKEN)
    with FakeKubeApi() as api:  # a kubeconfig that points at a port nothing listens on
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
        kubeconfig.write_text(kubeconfig.read_text().replace(str(api.port), str(free_port())))
    cluster = ["--argocd-app", "reviews", "--kubeconfig", str(kubeconfig), "--kube-timeout", "1s"]
    ends = []
    for side in ("analyze", "command"):
        remote, out = make_remote(tmp_path / side), tmp_path / side / "out"
        capfd.readouterr()
        if side == "analyze":
            code = analyze(istio_env.url, "inproc-argocd", out, *fail_at_once(istio_env, "inproc-argocd"),
                           "--rollback-on-fail", *location(remote), *cluster)  # fmt: skip
            assert code == ExitCode.FAIL
            assert (out / "rolled-back").read_text() == "false"
            result_file = out / "result.json"
        else:
            assert rollback(remote, tmp_path / "analyze" / "out", *cluster) == ExitCode.ERROR
            result_file = tmp_path / "analyze" / "out" / "rollback-result.json"
        log = capfd.readouterr().err
        assert SECRET_TOKEN not in log
        result = json.loads(result_file.read_text())
        assert result["commit"] == remote_head(remote)  # Git has the rollback
        assert result["error"].startswith(f"pushed {remote_head(remote)[:12]}, but")
        ends.append((remote_file(remote), outcome(result_file, remote)))
        if side == "analyze":
            assert "the workflow's rollback step tries again" in log
    assert ends[0] == ends[1]
    # The safety net, with the cluster back: nothing to commit, ArgoCD and the live object converge.
    remote, out = tmp_path / "analyze" / "remote.git", tmp_path / "analyze" / "out"
    head = remote_head(remote)
    with FakeKubeApi() as api:
        api.put(virtual_service_object())
        api.put(application_object())
        api.set_argocd_behaviour("argocd", "reviews", "sync", delay_s=0.1)
        assert rollback(remote, out, "--argocd-app", "reviews", "--live-patch", "--namespace", "shop",
                        "--kubeconfig", str(api.write_kubeconfig(tmp_path / "kubeconfig-up"))) == ExitCode.OK
    result = json.loads((out / "rollback-result.json").read_text())
    assert remote_head(remote) == head and result["changed"] is False
    assert result["argocd"]["outcome"] == "synced" and result["live_patch"]["outcome"] == "patched"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--path", MANIFEST_PATH, "--virtual-service", "reviews"], "--rollback-on-fail needs --repo"),
        (["--repo", "REMOTE", "--path", MANIFEST_PATH], "--rollback-on-fail needs --virtual-service"),
        (["--repo", "REMOTE", "--path", MANIFEST_PATH, "--virtual-service", "reviews", "--git-token-file",
          "/nonexistent/token"], "--git-token-file /nonexistent/token: no such file"),
        (["--repo", "REMOTE", "--path", MANIFEST_PATH, "--virtual-service", "reviews", "--rollback-result-file",
          "/nonexistent/dir/result.json"], "--rollback-result-file /nonexistent/dir/result.json: directory"),
    ],
)
def test_what_the_rollback_needs_is_checked_before_any_query(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    remote, out = make_remote(tmp_path), tmp_path / "out"
    head = remote_head(remote)
    prometheus = f"http://127.0.0.1:{free_port()}"  # nothing listens: a query would be an error, not exit 2
    extra = [str(remote) if value == "REMOTE" else value for value in extra]
    argv = ["analyze", "--prometheus-url", prometheus, "--namespace", NAMESPACE, "--service", "any",
            "--stable-version", "v1", "--canary-version", "v2", "--verdict-file", str(out / "verdict.json"),
            "--rolled-back-file", str(out / "rolled-back"), "--rollback-on-fail", *extra]  # fmt: skip
    if "--rollback-result-file" not in extra:
        argv += ["--rollback-result-file", str(out / "result.json")]
    out.mkdir()
    assert cli.main(argv) == ExitCode.USAGE
    err = capfd.readouterr().err
    assert named in err and "query" not in err
    assert list(out.iterdir()) == [] and remote_head(remote) == head  # nothing written, nothing changed
