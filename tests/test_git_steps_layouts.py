"""deploy, promote, rollback and status on real repositories in each layout: a Kustomize base + overlay (JSON 6902
and strategic-merge patches, rendered by kubectl kustomize before and after), Helm values; races and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from git_remote import git, land_commit, make_remote, remote_file, remote_head, remote_log
from layout_repos import (
    HELM_VALUES,
    JSON_6902_PATCH,
    OVERLAY,
    PATCH_PATH,
    STRATEGIC_MERGE_PATCH,
    kustomize_files,
    needs_kustomize,
    render_overlay,
)

from rollguard.steps import cli
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.gitops.credentials import GitCredentials
from rollguard.steps.gitops.git_publish import PublishState, ReadFile, publish_change
from rollguard.steps.traffic.layouts import SplitSource, locate_split
from rollguard.steps.traffic.virtualservice import read_split
from rollguard.steps.weight_change.change import WeightChange, WeightPlan

VALUES_PATH = "charts/reviews/values.yaml"


def run(remote: Path, command: str, *extra: str, path: str = PATCH_PATH) -> int:
    args = [command, "--repo", str(remote), "--path", path, "--virtual-service", "reviews", *extra]
    try:
        return cli.main(args)
    except SystemExit as exc:
        return int(exc.code or 0)


def rendered_weights(remote: Path, tmp_path: Path) -> tuple[int, int]:
    """The VirtualService's split as kubectl kustomize renders the overlay at the remote's head."""
    checkout = tmp_path / f"checkout-{len(list(tmp_path.glob('checkout-*')))}"
    git("clone", "--quiet", str(remote), str(checkout))
    return read_split(render_overlay(checkout), "reviews", "v1", "v2")


@needs_kustomize
def test_deploy_edits_the_json_6902_patch_and_the_overlay_renders_it(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, kustomize_files())
    assert rendered_weights(remote, tmp_path) == (80, 20)
    result_file = tmp_path / "result.json"
    assert run(remote, "deploy", "--weight", "30", "--result-file", str(result_file)) == ExitCode.OK
    assert remote_file(remote, PATCH_PATH) == JSON_6902_PATCH.replace("value: 80 ", "value: 70 ").replace(
        "value: 20}", "value: 30}")  # fmt: skip
    assert rendered_weights(remote, tmp_path) == (70, 30)
    result = json.loads(result_file.read_text())
    assert result["layout"] == "kustomize-json6902" and result["render_check"]["outcome"] == "passed"
    assert run(remote, "rollback") == ExitCode.OK
    assert rendered_weights(remote, tmp_path) == (100, 0)
    assert git("--git-dir", str(remote), "diff", "--stat", "HEAD~2", "HEAD").count("|") == 1  # the patch alone


def test_status_reads_each_layout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    files = {**kustomize_files(), VALUES_PATH: HELM_VALUES, "lonely/weights.yaml": JSON_6902_PATCH}
    remote = make_remote(tmp_path, files)
    result_file = tmp_path / "status.json"
    assert run(remote, "status", "--result-file", str(result_file)) == ExitCode.OK
    assert "stable v1 80 %, canary v2 20 % (kustomize-json6902, overlays/prod/weights.yaml" in capfd.readouterr().out
    assert json.loads(result_file.read_text())["layout"] == "kustomize-json6902"
    assert run(remote, "status", "--values-key", "reviews.canary.weight", path=VALUES_PATH) == ExitCode.OK
    out = capfd.readouterr().out
    assert "canary v2 20 % (helm-values" in out and "not verified: that the chart's templates" in out
    assert run(remote, "status", "--stable-weight-path", "/spec/http/1/route/0/weight", "--canary-weight-path",
               "/spec/http/1/route/1/weight", path="lonely/weights.yaml") == ExitCode.OK  # fmt: skip
    out = capfd.readouterr().out
    assert "stable v1 80 %, canary v2 20 %" in out and "not verified: which subsets these destinations are" in out
    assert run(remote, "status", path="lonely/weights.yaml") == ExitCode.USAGE
    assert "its base VirtualService was not found" in capfd.readouterr().err


@pytest.mark.parametrize(("files", "path", "extra", "message"), [
    (kustomize_files("- op: replace\n  path: /spec/http/1/timeout\n  value: 5s\n"), PATCH_PATH, (),
     "overlays/prod/weights.yaml has no operation on the split's weights"),
    ({VALUES_PATH: HELM_VALUES}, VALUES_PATH, ("--values-key", "reviews.canary.percent"),
     "values key 'reviews.canary.percent' does not exist in charts/reviews/values.yaml"),
    ({VALUES_PATH: HELM_VALUES}, VALUES_PATH, ("--values-key", "reviews.image"),
     "'reviews.image' in charts/reviews/values.yaml is {"),
    (kustomize_files("- op: add\n  path: /spec/http/0/route/0/weight\n  value: 100\n"), PATCH_PATH, (),
     "point at /spec/http/0/route/0/weight, not at the split"),
])  # fmt: skip
def test_bad_layouts_exit_2_and_commit_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], files: dict[str, str], path: str, extra: tuple[str, ...],
    message: str,
) -> None:  # fmt: skip
    remote = make_remote(tmp_path, files)
    head = remote_head(remote)
    assert run(remote, "deploy", "--weight", "30", *extra, path=path) == ExitCode.USAGE
    assert remote_head(remote) == head
    assert message in capfd.readouterr().err


def test_helm_values_deploy_promote_rollback(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    remote = make_remote(tmp_path, {VALUES_PATH: HELM_VALUES})
    keys = ("--values-key", "reviews.canary.weight", "--stable-values-key", "reviews.stable.weight")
    assert run(remote, "promote", "--weight", "50", *keys, path=VALUES_PATH) == ExitCode.OK
    assert remote_file(remote, VALUES_PATH) == HELM_VALUES.replace("weight: 80 ", "weight: 50 ").replace(
        "weight: 20 ", "weight: 50 ")  # fmt: skip
    assert "render check skipped" in capfd.readouterr().err
    assert run(remote, "rollback", *keys, path=VALUES_PATH) == ExitCode.OK
    assert "<<: *defaults" in remote_file(remote, VALUES_PATH) and "# canary share" in remote_file(remote, VALUES_PATH)
    assert remote_log(remote)[0].startswith("rollguard: roll back reviews")
    assert run(remote, "rollback", *keys, path=VALUES_PATH) == ExitCode.OK  # idempotent
    assert len(remote_log(remote)) == 3


@needs_kustomize
def test_strategic_merge_patch_deploy_renders(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, kustomize_files(STRATEGIC_MERGE_PATCH, how="patchesStrategicMerge"))
    assert rendered_weights(remote, tmp_path) == (80, 20)
    assert run(remote, "deploy", "--weight", "40") == ExitCode.OK
    assert rendered_weights(remote, tmp_path) == (60, 40)


@needs_kustomize
def test_render_check_refuses_an_overlay_that_overrides_the_edit(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    later = "- op: replace\n  path: /spec/http/1/route/1/weight\n  value: 20\n" \
        "- op: replace\n  path: /spec/http/1/route/0/weight\n  value: 80\n"  # fmt: skip
    files = kustomize_files(extra="  - path: pinned.yaml\n    target: {kind: VirtualService, name: reviews}\n")
    files[f"{OVERLAY}/pinned.yaml"] = later
    remote = make_remote(tmp_path, files)
    head = remote_head(remote)
    assert run(remote, "deploy", "--weight", "30") == ExitCode.USAGE
    assert remote_head(remote) == head
    assert "render check: `" in (err := capfd.readouterr().err) and "not the intended 70 % / 30 %" in err
    capfd.readouterr()
    assert run(remote, "rollback") == ExitCode.ERROR  # a rollback says so, pushes anyway, and exits 4
    assert remote_head(remote) != head
    assert "pushed the rollback, but render check: `" in capfd.readouterr().err


def test_render_check_is_skipped_and_said_so_without_kubectl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    remote = make_remote(tmp_path, kustomize_files())
    result_file = tmp_path / "result.json"
    assert run(remote, "deploy", "--weight", "30", "--result-file", str(result_file)) == ExitCode.OK
    assert "render check skipped: neither kustomize nor kubectl is installed here" in capfd.readouterr().err
    assert json.loads(result_file.read_text())["render_check"]["outcome"] == "skipped"
    assert run(remote, "deploy", "--weight", "40", "--render-check", "always") == ExitCode.USAGE


def test_push_race_on_the_base_reapplies_the_patch_edit(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, kustomize_files())
    source = SplitSource(PATCH_PATH, "reviews")
    attempts: list[int] = []

    def make_change(text: str, _previous: WeightChange | None, read: ReadFile) -> WeightChange:
        attempts.append(1)
        if len(attempts) == 1:  # a colleague renames the split's route in the base and moves it to the front
            base = remote_file(remote, "base/istio.yaml").replace("  # The weighted split", "  # The split")
            land_commit(remote, "base/istio.yaml", text=base, message="Reword the base")
        edit = locate_split(text, read, source).edit(0)
        return WeightChange(edit, WeightPlan(0, "already"), "rollguard: roll back", "kustomize-json6902")

    outcome = publish_change(repo=str(remote), branch="main", path=PATCH_PATH, make_change=make_change,
                             author="rollguard <rollguard@localhost>", credentials=GitCredentials())  # fmt: skip
    assert outcome.state is PublishState.PUSHED and outcome.attempts == 2
    assert remote_log(remote)[:2] == ["rollguard: roll back", "Reword the base"]
    assert "value: 100 " in remote_file(remote, PATCH_PATH) and "value: 0}" in remote_file(remote, PATCH_PATH)
