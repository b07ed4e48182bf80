"""Live patch and ArgoCD sync against the fake Kubernetes API server (real HTTP, resourceVersion, 409s),
as library calls and through `rollguard rollback` end to end with a real bare Git repository."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kube_api import FakeKubeApi, application_object, virtual_service_object
from git_remote import MANIFEST_PATH, make_remote, remote_head

from rollguard.sandbox.ports import free_port
from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.argocd import ArgoCdError, SyncOutcome, SyncState, request_sync, wait_for_sync
from rollguard.steps.gitops.kube_api import KubeApi, KubeApiError, ObjectNotFound, load_api_client
from rollguard.steps.gitops.live_patch import LivePatchError, LivePatchState, patch_live_split
from rollguard.steps.gitops.object_refs import ObjectRef, application_ref, virtual_service_ref

SHA = "1234567890abcdef1234567890abcdef12345678"
ISTIO = "networking.istio.io"


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    with FakeKubeApi() as api:
        api.put(virtual_service_object())
        api.put(application_object())
        yield api


@pytest.fixture
def kubeconfig(fake_api: FakeKubeApi, tmp_path: Path) -> Path:
    return fake_api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[KubeApi]:
    api_client, _source = load_api_client(str(kubeconfig))
    yield KubeApi(api_client, timeout_s=5)
    api_client.close()


def sync_application(
    api: KubeApi, ref: ObjectRef, revision: str, *, timeout_s: float = 60.0, poll_interval_s: float = 0.25
) -> SyncOutcome:
    """Ask for the sync, then wait for it, as a step does."""
    request = request_sync(api, ref, revision)
    return wait_for_sync(api, ref, request, timeout_s=timeout_s, poll_interval_s=poll_interval_s)


def live_weights(fake_api: FakeKubeApi) -> list[int]:
    vs = fake_api.get(ISTIO, "shop", "virtualservices", "reviews")
    return [entry["weight"] for entry in vs["spec"]["http"][1]["route"]]


# -- live patch --------------------------------------------------------------------------------------
def test_live_patch_sends_only_new_weights_with_the_resource_version(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    before = fake_api.get(ISTIO, "shop", "virtualservices", "reviews")
    outcome = patch_live_split(kube, virtual_service_ref("shop", "reviews"), "v1", "v2", 0)
    assert outcome.state is LivePatchState.PATCHED and outcome.routes_changed == 1 and outcome.attempts == 1
    (patch,) = fake_api.patches("virtualservices")
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["metadata"] == {"resourceVersion": before["metadata"]["resourceVersion"]}
    expected_http = before["spec"]["http"]
    expected_http[1]["route"][0]["weight"], expected_http[1]["route"][1]["weight"] = 100, 0
    assert patch.body["spec"] == {"http": expected_http}  # header route and timeout sent back unchanged
    after = fake_api.get(ISTIO, "shop", "virtualservices", "reviews")
    assert after["spec"] == {**before["spec"], "http": expected_http}
    assert after["metadata"]["resourceVersion"] == outcome.resource_version != before["metadata"]["resourceVersion"]


def test_live_patch_rereads_after_409_conflicts(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    fake_api.simulate_concurrent_writes(ISTIO, "shop", "virtualservices", "reviews", times=2)
    outcome = patch_live_split(kube, virtual_service_ref("shop", "reviews"), "v1", "v2", 0)
    assert outcome.attempts == 3
    assert [r.status for r in fake_api.requests if r.method == "PATCH"] == [409, 409, 200]
    vs = fake_api.get(ISTIO, "shop", "virtualservices", "reviews")
    assert live_weights(fake_api) == [100, 0]
    assert vs["metadata"]["annotations"]["fake-kube-api/other-writer"] == "1"  # the other writer's change survived


def test_live_patch_gives_up_after_bounded_conflicts(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    fake_api.simulate_concurrent_writes(ISTIO, "shop", "virtualservices", "reviews", times=50)
    with pytest.raises(LivePatchError, match="kept changing while being patched"):
        patch_live_split(kube, virtual_service_ref("shop", "reviews"), "v1", "v2", 0, conflict_retries=2)
    assert live_weights(fake_api) == [90, 10]


def test_live_patch_when_already_there_sends_nothing(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    outcome = patch_live_split(kube, virtual_service_ref("shop", "reviews"), "v1", "v2", 10)
    assert outcome.state is LivePatchState.ALREADY and fake_api.patches() == []


def test_live_patch_of_a_missing_or_mismatched_virtual_service(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    with pytest.raises(ObjectNotFound, match=r'HTTP 404 virtualservices\.networking\.istio\.io "nope" not found'):
        patch_live_split(kube, virtual_service_ref("shop", "nope"), "v1", "v2", 0)
    with pytest.raises(LivePatchError, match="has no route with both subset 'v1' and 'v3'"):
        patch_live_split(kube, virtual_service_ref("shop", "reviews"), "v1", "v3", 0)


# -- ArgoCD ------------------------------------------------------------------------------------------
def test_argocd_refresh_and_sync_then_wait_for_the_revision(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    fake_api.set_argocd_behaviour("argocd", "reviews", "sync", delay_s=0.3)
    outcome = sync_application(kube, application_ref("argocd", "reviews"), SHA, timeout_s=10, poll_interval_s=0.05)
    assert outcome.state is SyncState.SYNCED and outcome.revision_seen == SHA
    (patch,) = fake_api.patches("applications")
    assert patch.body["metadata"]["annotations"] == {"argocd.argoproj.io/refresh": "normal"}
    assert patch.body["operation"]["sync"]["revision"] == SHA
    assert patch.body["operation"]["initiatedBy"] == {"username": "rollguard"}
    app = fake_api.get("argoproj.io", "argocd", "applications", "reviews")
    assert app["status"]["sync"] == {"status": "Synced", "revision": SHA}


def test_argocd_running_operation_is_not_waited_for(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    """The PostSync hook case: a sync is running and waits for us, so we must not wait for it."""
    fake_api.set_argocd_behaviour("argocd", "reviews", "running")
    outcome = sync_application(kube, application_ref("argocd", "reviews"), SHA, timeout_s=30)
    assert outcome.state is SyncState.SYNC_ALREADY_RUNNING
    assert "PostSync" in outcome.detail
    assert [r.method for r in fake_api.requests] == ["GET", "PATCH"]  # no polling: it did not wait
    (patch,) = fake_api.patches("applications")
    assert "operation" not in patch.body  # only the refresh annotation
    assert patch.body["metadata"]["annotations"] == {"argocd.argoproj.io/refresh": "normal"}


def test_a_running_sync_of_our_own_commit_is_waited_for(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    """A Git webhook made ArgoCD start syncing rollguard's commit first: wait for it (not the hook case)."""
    ref = application_ref("argocd", "reviews")
    app = application_object()
    app["status"]["operationState"] = {"phase": "Running", "operation": {"sync": {"revision": SHA}}}
    fake_api.put(app)
    request = request_sync(kube, ref, SHA, pushed_now=False)  # not our push: could be the hook's sync
    assert request.already_running is not None
    request = request_sync(kube, ref, SHA, pushed_now=True)
    assert request.already_running is None, "our own commit's sync was taken for the PostSync hook"
    finished = application_object(revision=SHA)
    threading.Timer(0.3, fake_api.put, [finished]).start()
    outcome = wait_for_sync(kube, ref, request, timeout_s=10, poll_interval_s=0.05)
    assert outcome.state is SyncState.SYNCED


def test_argocd_sync_not_confirmed_in_time(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    fake_api.set_argocd_behaviour("argocd", "reviews", "never")
    outcome = sync_application(kube, application_ref("argocd", "reviews"), SHA, timeout_s=0.5, poll_interval_s=0.05)
    assert outcome.state is SyncState.TIMED_OUT
    assert "not confirmed within 0.5 s" in outcome.detail


def test_argocd_sync_failure_is_reported(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    fake_api.set_argocd_behaviour("argocd", "reviews", "fail", delay_s=0.1)
    outcome = sync_application(kube, application_ref("argocd", "reviews"), SHA, timeout_s=10, poll_interval_s=0.05)
    assert outcome.state is SyncState.FAILED and "one or more objects failed to apply" in outcome.detail


def test_argocd_missing_application(fake_api: FakeKubeApi, kube: KubeApi) -> None:
    with pytest.raises(ArgoCdError, match="ArgoCD Application 'shop' not found in namespace 'argocd'"):
        sync_application(kube, application_ref("argocd", "shop"), SHA)


# -- client configuration ----------------------------------------------------------------------------
def test_unreachable_api_is_a_clear_error(tmp_path: Path) -> None:
    with FakeKubeApi() as api:  # write a kubeconfig, then point it at a port nothing listens on
        config = api.write_kubeconfig(tmp_path / "kubeconfig")
        config.write_text(config.read_text().replace(str(api.port), str(free_port())))
    api_client, _ = load_api_client(str(config))
    with pytest.raises(KubeApiError, match="unreachable"):
        KubeApi(api_client, timeout_s=2).get(virtual_service_ref("shop", "reviews"))


def test_wrong_token_is_refused_with_an_rbac_hint(tmp_path: Path) -> None:
    with FakeKubeApi(token="right-token") as api:
        api.put(virtual_service_object())
        api_client, _ = load_api_client(str(api.write_kubeconfig(tmp_path / "kubeconfig", token="wrong-token")))
        with pytest.raises(KubeApiError, match=r"HTTP 401.*RBAC"):
            KubeApi(api_client, timeout_s=5).get(virtual_service_ref("shop", "reviews"))


def test_in_cluster_service_account_over_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeKubeApi(token="service-account-token", tls=True)
    api.start(cert_dir=tmp_path)
    try:
        api.put(virtual_service_object())
        account = tmp_path / "serviceaccount"
        account.mkdir()
        (account / "token").write_text("service-account-token")
        assert api.ca_file is not None
        (account / "ca.crt").write_bytes(api.ca_file.read_bytes())
        monkeypatch.delenv("KUBECONFIG", raising=False)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        api_client, source = load_api_client(service_account_dir=account)
        assert source == "in-cluster service account"
        vs = KubeApi(api_client, timeout_s=5).get(virtual_service_ref("shop", "reviews"))
        assert vs["metadata"]["name"] == "reviews"
        assert (api.requests[-1].authorization or "").lower() == "bearer service-account-token"
        api_client.close()
    finally:
        api.stop()


# -- end to end: rollguard rollback --live-patch --argocd-app ------------------------------------------
def rollback(remote: Path, kubeconfig: Path, result_file: Path, *extra: str) -> int:
    return cli.main([
        "rollback", "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews",
        "--kubeconfig", str(kubeconfig), "--result-file", str(result_file), *extra,
    ])  # fmt: skip


def test_rollback_pushes_asks_argocd_patches_live_then_waits_for_the_sync(
    fake_api: FakeKubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    remote = make_remote(tmp_path)
    fake_api.set_argocd_behaviour("argocd", "reviews", "sync", delay_s=0.2)
    result_file = tmp_path / "result.json"
    code = rollback(remote, kubeconfig, result_file, "--live-patch", "--argocd-app", "reviews")
    assert code == ExitCode.OK
    result = json.loads(result_file.read_text())
    sha = remote_head(remote)
    assert result["commit"] == sha
    assert result["live_patch"]["outcome"] == "patched" and result["live_patch"]["namespace"] == "shop"
    assert result["argocd"]["outcome"] == "synced"
    assert result["pushed_at"] <= result["live_patch"]["patched_at"]
    patches = fake_api.patches()
    # ArgoCD is asked first (so it learns the new commit before its self-heal sees the patched object),
    # then the live object is patched, then rollguard waits for the sync.
    assert ["/applications/" in p.path for p in patches] == [True, False]
    assert patches[0].body["operation"]["sync"]["revision"] == sha
    assert patches[1].at < fake_api.get("argoproj.io", "argocd", "applications", "reviews")["status"]["synced_at"]
    assert live_weights(fake_api) == [100, 0]


def test_rollback_as_postsync_hook_does_not_deadlock(
    fake_api: FakeKubeApi, kubeconfig: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote = make_remote(tmp_path)
    fake_api.set_argocd_behaviour("argocd", "reviews", "running")
    result_file = tmp_path / "result.json"
    assert rollback(remote, kubeconfig, result_file, "--live-patch", "--argocd-app", "reviews") == ExitCode.OK
    assert "WARNING" in capfd.readouterr().err
    result = json.loads(result_file.read_text())
    assert result["argocd"]["outcome"] == "sync-already-running"
    assert live_weights(fake_api) == [100, 0]


def test_argocd_timeout_exits_4_and_says_what_was_pushed(
    fake_api: FakeKubeApi, kubeconfig: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote = make_remote(tmp_path)
    fake_api.set_argocd_behaviour("argocd", "reviews", "never")
    result_file = tmp_path / "result.json"
    code = rollback(remote, kubeconfig, result_file, "--argocd-app", "reviews", "--argocd-timeout", "500ms")
    assert code == ExitCode.ERROR
    sha = remote_head(remote)
    assert f"pushed {sha[:12]}, but ArgoCD sync of reviews to {sha[:12]} not confirmed within 0.5 s" in (
        capfd.readouterr().err
    )
    assert json.loads(result_file.read_text())["commit"] == sha


def test_repeated_rollback_still_converges_the_live_object(
    fake_api: FakeKubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    remote = make_remote(tmp_path)
    result_file = tmp_path / "result.json"
    assert rollback(remote, kubeconfig, result_file) == ExitCode.OK  # Git only
    head = remote_head(remote)
    fake_api.set_argocd_behaviour("argocd", "reviews", "sync", delay_s=0.1)
    assert rollback(remote, kubeconfig, result_file, "--live-patch", "--argocd-app", "reviews") == ExitCode.OK
    result = json.loads(result_file.read_text())
    assert remote_head(remote) == head and result["changed"] is False
    # Nothing to push, yet ArgoCD is still asked: a retried step whose first try pushed must reach the cluster.
    assert result["live_patch"]["outcome"] == "patched" and result["argocd"]["outcome"] == "synced"
    (sync_request,) = [p for p in fake_api.patches("applications") if "operation" in p.body]
    assert sync_request.body["operation"]["sync"]["revision"] == head
    assert live_weights(fake_api) == [100, 0]
    assert rollback(remote, kubeconfig, result_file, "--live-patch") == ExitCode.OK
    assert json.loads(result_file.read_text())["live_patch"]["outcome"] == "already"
    assert len(fake_api.patches("virtualservices")) == 1


def test_live_patch_failure_after_the_push_exits_4(fake_api: FakeKubeApi, kubeconfig: Path, tmp_path: Path) -> None:
    remote = make_remote(tmp_path)
    result_file = tmp_path / "result.json"
    code = rollback(remote, kubeconfig, result_file, "--live-patch", "--namespace", "other")
    assert code == ExitCode.ERROR
    result = json.loads(result_file.read_text())
    assert result["commit"] == remote_head(remote)  # Git has the rollback even though the live patch failed
    assert result["error"].startswith(f"pushed {remote_head(remote)[:12]}, but the live patch failed")


@pytest.mark.parametrize("content", [None, "clusters: [unclosed\n"])
def test_unusable_kubeconfig_is_said_before_a_rollback_pushes_and_exits_4(
    tmp_path: Path, content: str | None, capfd: pytest.CaptureFixture[str]
) -> None:
    remote = make_remote(tmp_path)
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)
    assert rollback(remote, kubeconfig, tmp_path / "result.json", "--live-patch") == ExitCode.ERROR
    err = capfd.readouterr().err
    assert f"pushed {remote_head(remote)[:12]}, but" in err
    problem = "does not exist" if content is None else "configuration is unusable"
    assert problem in err
    # Said before the push (the rollback still goes to Git: safety first), and again in the final error.
    assert err.index("the rollback is pushed anyway") < err.index(f"pushed {remote_head(remote)[:12]} to main")


@pytest.mark.parametrize("command", [["deploy", "--weight", "20"], ["promote", "--weight", "50"]])
def test_unusable_kubeconfig_stops_deploy_and_promote_before_anything_changes(
    tmp_path: Path, command: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    remote = make_remote(tmp_path)
    head, result_file = remote_head(remote), tmp_path / "result.json"
    code = cli.main([*command, "--repo", str(remote), "--path", MANIFEST_PATH, "--virtual-service", "reviews",
                     "--kubeconfig", str(tmp_path / "missing"), "--argocd-app", "reviews",
                     "--result-file", str(result_file)])  # fmt: skip
    assert code == ExitCode.USAGE
    assert "does not exist; check --kubeconfig or KUBECONFIG; --live-patch and --argocd-app need it" in (
        capfd.readouterr().err
    )
    assert remote_head(remote) == head and json.loads(result_file.read_text())["commit"] is None


def test_an_api_answering_with_html_is_a_clear_fault_with_the_result_written(
    fake_api: FakeKubeApi, kubeconfig: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    remote = make_remote(tmp_path)
    fake_api.answer_with_html()
    result_file = tmp_path / "result.json"
    assert rollback(remote, kubeconfig, result_file, "--live-patch", "--argocd-app", "reviews") == ExitCode.ERROR
    err = capfd.readouterr().err
    assert "unexpected error" not in err
    assert "answered HTTP 200 with something that is not a Kubernetes object ('<!DOCTYPE html><html><body>Sign" in err
    result = json.loads(result_file.read_text())
    assert result["commit"] == remote_head(remote)  # Git has the rollback; the step says the cluster part failed
    assert result["live_patch"]["outcome"] == "failed" and result["argocd"]["outcome"] == "failed"
