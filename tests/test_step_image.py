"""The built step image, run for real, and the checks on step-image archives.

Slow, marked `slow`: the tests that run commands inside build/image/rollguard-VERSION.oci.tar, the
archive `./run.sh image` writes (about a minute, as root). Without that archive they are skipped,
unless ROLLGUARD_BUILD_IMAGE=1, which builds it first. Every command runs the way the local executor
runs a step: in its own mount namespace, chroot into the unpacked image, as uid 65532.

Fast: bad archives (missing, corrupt, not OCI, another entry point), a non-root caller, and the
unpacking of small hand-made archives (layers in order, whiteouts, hard links, links out of it).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kube_api import FakeKubeApi, application_object, virtual_service_object
from git_remote import MANIFEST_PATH, commit_message, make_remote, remote_file
from support_prometheus import NAMESPACE, IstioEnvironment
from test_git_credentials import GOOD_TOKEN

from rollguard.sandbox import step_image
from rollguard.sandbox.executor.pod import Pod
from rollguard.sandbox.git_http_remote import GitHttpRemote
from rollguard.sandbox.step_image import StepImage, StepImageError, open_step_image
from rollguard.sandbox.step_image_run import ImageSteps, step_command, step_environment
from rollguard.sandbox.synthetic_traffic import TrafficProfile
from rollguard.steps.exit_codes import ExitCode
from rollguard.steps.traffic.virtualservice import read_split

REPO = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)[1]  # type: ignore[index]
ARCHIVE = REPO / "build" / "image" / f"rollguard-{VERSION}.oci.tar"
IS_ROOT = os.geteuid() == 0
UID = 65532


# ----- the built image ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> StepImage:
    if not IS_ROOT:
        pytest.skip("running the step image needs root (chroot)")
    if not ARCHIVE.is_file():
        if os.environ.get("ROLLGUARD_BUILD_IMAGE") != "1":
            pytest.skip(f"no {ARCHIVE.relative_to(REPO)}: ./run.sh image builds it, or set ROLLGUARD_BUILD_IMAGE=1")
        subprocess.run([str(REPO / "run.sh"), "image"], check=True, timeout=1200)
    return open_step_image(ARCHIVE, tmp_path_factory.mktemp("image-cache"))


def run_in(image: StepImage, argv: list[str], tmp: Path, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:  # fmt: skip
    command = step_command(image, argv, tmp_dir=tmp)
    return subprocess.run(command, env=step_environment(image, env or {}), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip


@pytest.mark.slow
def test_help_git_and_ssh_run_as_65532_with_a_passwd_entry(image: StepImage, tmp_path: Path) -> None:
    done = run_in(image, ["rollguard", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("analyze", "deploy", "promote", "rollback", "status", "next-weight"):
        assert command in done.stdout
    assert run_in(image, [], tmp_path).returncode == 0  # the entry point alone: CMD is --help
    done = run_in(image, ["sh", "-c", "id -u; id -un; git --version; ssh -G host"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == [str(UID), "rollguard"] and lines[2].startswith("git version 2.")
    assert "user rollguard" in lines and "hostname host" in lines
    # ssh gets as far as connecting (a uid without a passwd entry stops it before: "No user exists")
    done = run_in(image, ["ssh", "-o", "BatchMode=yes", "-p", "9", "127.0.0.1", "true"], tmp_path)
    assert "Connection refused" in done.stderr, done.stderr


@pytest.mark.slow
def test_image_has_none_of_what_was_cut(image: StepImage) -> None:
    root = image.rootfs
    site = next(root.glob("opt/rollguard/lib/python3.*/site-packages"))
    assert not (root / "usr/bin/perl").exists() and not list(root.glob("usr/lib/*-linux-gnu/perl*"))
    assert not list((root / "usr/share/man").glob("*")) and not list((root / "usr/share/locale").glob("*"))
    assert not (site / "kubernetes" / "aio").exists()
    assert not list(site.rglob("tests")) and not list((site / "kubernetes").rglob("*_test.py"))
    assert not list((site / "kubernetes/client/api").glob("*.py")), "generated API modules: bytecode only"
    assert list((site / "rollguard/steps").glob("__pycache__/cli.*.pyc")), "bytecode compiled in the image"
    assert not (root / "etc/resolv.conf").stat().st_size and not (root / "etc/hostname").exists()
    passwd = (root / "etc/passwd").read_text(encoding="utf-8")
    assert f"rollguard:x:{UID}:{UID}:rollguard step:/tmp:/usr/sbin/nologin" in passwd.splitlines()
    assert f"rollguard:x:{UID}:" in (root / "etc/group").read_text(encoding="utf-8").splitlines()


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[FakeKubeApi]:
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    with FakeKubeApi(tls=True).start(cert_dir) as api:
        api.put(virtual_service_object())
        api.put(application_object())
        yield api


@pytest.mark.slow
def test_rollback_against_a_bare_repo_with_argocd_and_live_patch(
    image: StepImage, tmp_path: Path, fake_api: FakeKubeApi
) -> None:
    """git clone/commit/push over a path, the Kubernetes client over TLS (bytecode-only API modules)."""
    step_tmp = tmp_path / "step"
    step_tmp.mkdir()
    remote = make_remote(step_tmp)  # /tmp/remote.git inside, pushed to by uid 65532
    shutil.chown(step_tmp, UID, UID)
    for path in [remote, *remote.rglob("*")]:
        os.chown(path, UID, UID, follow_symlinks=False)
    assert fake_api.ca_file is not None
    shutil.copy(fake_api.ca_file, step_tmp / "ca.crt")
    (step_tmp / "kubeconfig").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": fake_api.url, "certificate-authority": "/tmp/ca.crt"}}],
        "users": [{"name": "fake", "user": {}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
    }))  # fmt: skip
    fake_api.set_argocd_behaviour("argocd", "reviews", "sync", delay_s=0.2)
    done = run_in(image, [
        "rollguard", "rollback", "--repo", "/tmp/remote.git", "--path", MANIFEST_PATH, "--virtual-service", "reviews",
        "--reason", "canary v2 error rate 12 % > 1 % (µ-check ✓)", "--kubeconfig", "/tmp/kubeconfig",
        "--live-patch", "--argocd-app", "reviews", "--result-file", "/tmp/result.json",
    ], step_tmp)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)
    assert "µ-check ✓" in commit_message(remote)
    result = json.loads((step_tmp / "result.json").read_text())
    assert result["live_patch"]["outcome"] == "patched" and result["argocd"]["outcome"] == "synced"
    assert [p.path.split("/")[-2] for p in fake_api.patches()] == ["applications", "virtualservices"]
    again = run_in(image, ["rollguard", "rollback", "--repo", "/tmp/remote.git", "--path", MANIFEST_PATH,
                           "--virtual-service", "reviews"], step_tmp)  # fmt: skip
    assert again.returncode == 0 and "already" in (again.stdout + again.stderr).lower(), again.stderr


@pytest.mark.slow
def test_rollback_over_https_style_http_with_a_token(image: StepImage, tmp_path: Path) -> None:
    """git-remote-http (libcurl) and the askpass helper (/bin/sh) inside the image."""
    served = tmp_path / "served"
    served.mkdir()
    remote = make_remote(served)
    with GitHttpRemote(remote, ("x-access-token", GOOD_TOKEN)) as server:
        done = run_in(image, ["rollguard", "rollback", "--repo", server.url, "--path", MANIFEST_PATH,
                              "--virtual-service", "reviews"], tmp_path / "step",
                      env={"ROLLGUARD_GIT_TOKEN": GOOD_TOKEN})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "credentials: token" in done.stderr and GOOD_TOKEN not in done.stdout + done.stderr
    assert read_split(remote_file(remote), "reviews", "v1", "v2") == (100, 0)


@pytest.mark.slow
def test_analyze_fails_a_broken_canary_from_a_real_prometheus(
    image: StepImage, tmp_path: Path, istio_env: IstioEnvironment
) -> None:
    """The http.client Prometheus client, tenacity, the judgment: analyze in the image queries the host's Prometheus."""
    istio_env.traffic.set("imaged", "v1", TrafficProfile(requests_per_s=100, error_rate=0.005, latency_ms=30))
    istio_env.traffic.set("imaged", "v2", TrafficProfile(requests_per_s=40, error_rate=1.0))
    istio_env.wait_for_requests("imaged", "v1")
    istio_env.wait_for_requests("imaged", "v2")
    done = run_in(image, [
        "rollguard", "analyze", "--prometheus-url", istio_env.url, "--namespace", NAMESPACE, "--service", "imaged",
        "--stable-version", "v1", "--canary-version", "v2", "--interval", "1s", "--duration", "2m",
        "--verdict-file", "/tmp/verdict.json",
    ], tmp_path / "step")  # fmt: skip
    assert done.returncode == ExitCode.FAIL, done.stdout + done.stderr
    verdict = json.loads((tmp_path / "step" / "verdict.json").read_text())
    assert verdict["verdict"] == "fail" and len(verdict["checks"]) <= 8


@pytest.mark.slow
def test_the_image_is_unpacked_once_and_has_the_build_s_config(image: StepImage) -> None:
    again = open_step_image(ARCHIVE, image.rootfs.parents[1])
    assert again == image
    assert (image.entrypoint, image.cmd) == (["rollguard"], ["--help"])
    assert (image.user, image.workdir) == ("65532:65532", "/tmp")
    assert image.env["HOME"] == "/tmp" and image.env["PATH"].startswith("/opt/rollguard/bin:")


# ----- archives made here: bad input and unpacking (fast) --------------------------------------------


def _blob(layout: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    layout[f"blobs/sha256/{digest}"] = data
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(entries: list[tuple[str, bytes | str | None]]) -> bytes:
    """A gzipped layer: (name, bytes) files, (name, None) folders, (name, "->target") symlinks, (name, "=>target")
    hard links."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str):
                info.type = tarfile.SYMTYPE if content.startswith("->") else tarfile.LNKTYPE
                info.linkname = content[2:]
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue())


def make_archive(path: Path, layers: list[bytes], entrypoint: list[str] | None = None) -> Path:
    layout: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}'}
    config = {"architecture": "amd64", "os": "linux", "config": {
        "Entrypoint": ["rollguard"] if entrypoint is None else entrypoint, "User": "65532:65532",
        "WorkingDir": "/tmp", "Env": ["PATH=/opt/rollguard/bin:/usr/bin:/bin", "HOME=/tmp"]}}  # fmt: skip
    oci = "application/vnd.oci.image"
    manifest = {
        "schemaVersion": 2, "mediaType": f"{oci}.manifest.v1+json",
        "config": {"mediaType": f"{oci}.config.v1+json", **_blob(layout, json.dumps(config).encode())},
        "layers": [{"mediaType": f"{oci}.layer.v1.tar+gzip", **_blob(layout, layer)} for layer in layers],
    }  # fmt: skip
    entry = {"mediaType": f"{oci}.manifest.v1+json", **_blob(layout, json.dumps(manifest).encode())}
    index = {"schemaVersion": 2, "manifests": [entry]}
    layout["index.json"] = json.dumps(index).encode()
    with tarfile.open(path, "w") as tar:
        for name, data in layout.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


BASE = _layer([("bin", None), ("bin/tool", b"one"), ("bin/same", "=>bin/tool"), ("etc", None),
               ("etc/old", b"x"), ("etc/conf.d", None), ("etc/conf.d/a", b"a"), ("lib", "->/usr/lib")])  # fmt: skip


@pytest.mark.skipif(not IS_ROOT, reason="unpacking a step image needs root")
def test_layers_unpack_in_order_with_whiteouts_and_hard_links(tmp_path: Path) -> None:
    top = _layer([("etc/.wh.old", b""), ("etc/conf.d/.wh..wh..opq", b""), ("etc/conf.d/b", b"b"), ("bin/tool2", b"2")])
    image = open_step_image(make_archive(tmp_path / "a.tar", [BASE, top]), tmp_path / "cache")
    root = image.rootfs
    assert (root / "bin/tool").read_bytes() == b"one" and (root / "bin/tool2").read_bytes() == b"2"
    assert (root / "bin/same").stat().st_ino == (root / "bin/tool").stat().st_ino
    assert not (root / "etc/old").exists() and sorted(p.name for p in (root / "etc/conf.d").iterdir()) == ["b"]
    assert os.readlink(root / "lib") == "/usr/lib"
    assert (image.user, image.workdir, image.env["HOME"]) == ("65532:65532", "/tmp", "/tmp")
    assert (root / "dev/null").exists() and (root / "proc").is_dir() and (root / "etc/hosts").exists()
    assert image.rootfs.parent.parent == tmp_path / "cache" and (image.rootfs.parent / "unpacked").is_file()


@pytest.mark.skipif(not IS_ROOT, reason="unpacking a step image needs root")
@pytest.mark.parametrize("entries", [
    [("../escape", b"x")],
    [("lib", "->/"), ("lib/escape", b"x")],
    [("hard", "=>../../etc/passwd")],
])  # fmt: skip
def test_an_entry_leaving_the_root_filesystem_is_refused(
    tmp_path: Path, entries: list[tuple[str, bytes | str | None]]
) -> None:
    with pytest.raises(StepImageError, match=r"leaves the root filesystem|out of it"):
        open_step_image(make_archive(tmp_path / "bad.tar", [_layer(entries)]), tmp_path / "cache")
    assert not (tmp_path / "escape").exists()


@pytest.mark.skipif(not IS_ROOT, reason="checks run as root; the non-root refusal has its own test")
def test_bad_archives_are_refused_with_a_clear_message(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(StepImageError, match=r"no such file.*run.sh image"):
        open_step_image(tmp_path / "missing.tar", cache)
    (tmp_path / "junk.tar").write_bytes(os.urandom(3000))
    with pytest.raises(StepImageError, match=r"not a readable OCI archive"):
        open_step_image(tmp_path / "junk.tar", cache)
    with tarfile.open(tmp_path / "plain.tar", "w") as tar:
        tar.add(__file__, "something.py")
    with pytest.raises(StepImageError, match=r"not an OCI archive \(index.json is missing\)"):
        open_step_image(tmp_path / "plain.tar", cache)
    with pytest.raises(StepImageError, match=r"entry point is \['/bin/sh'\], not 'rollguard'"):
        open_step_image(make_archive(tmp_path / "sh.tar", [BASE], entrypoint=["/bin/sh"]), cache)
    good = make_archive(tmp_path / "good.tar", [BASE]).read_bytes()
    (tmp_path / "truncated.tar").write_bytes(good[:1200])  # cut inside the first blob
    with pytest.raises(StepImageError, match=r"not a readable OCI archive|is missing"):
        open_step_image(tmp_path / "truncated.tar", cache)
    layer_blob = tmp_path / "layer-swapped.tar"
    with tarfile.open(tmp_path / "good.tar") as source, tarfile.open(layer_blob, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.startswith("blobs/") and data[:2] == b"\x1f\x8b":
                data = gzip.compress(gzip.decompress(data)[:-1024] + bytes(1024) + b"tampered")
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    with pytest.raises(StepImageError, match=r"does not match its digest"):
        open_step_image(layer_blob, cache)
    assert not any((cache).rglob("rootfs")), "nothing is left unpacked from a refused archive"


def test_a_non_root_caller_is_refused_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_image.os, "geteuid", lambda: 1000)
    with pytest.raises(StepImageError, match=r"--step-image needs root.*chroot"):
        open_step_image(tmp_path / "any.tar", tmp_path / "cache")


def test_step_command_runs_as_the_image_user_and_keeps_secrets_off_the_command_line(tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("the step's /tmp is handed to uid 65532 (chown)")
    image = StepImage(Path("x.tar"), "sha256:" + "0" * 64, tmp_path / "rootfs", ["rollguard"], "65532:65532", "/tmp",
                      {"PATH": "/opt/rollguard/bin:/usr/bin", "HOME": "/tmp"})  # fmt: skip
    repo = tmp_path / "repos"
    repo.mkdir()
    command = step_command(image, ["rollguard", "status"], tmp_dir=tmp_path / "step", binds=[repo])
    script = command[-1]
    assert command[0].endswith("unshare") and "--mount" in command
    assert f"--userspec=65532:65532 {tmp_path / 'rootfs'} /usr/bin/env" in script
    assert script.rstrip().endswith("-C /tmp -- rollguard status")
    assert f"--bind {tmp_path / 'step'} {tmp_path / 'rootfs' / 'tmp'}" in script
    assert f"--bind {repo} {tmp_path / 'rootfs'}{repo}" in script
    assert (tmp_path / "step").stat().st_uid == UID
    env = step_environment(image, {"ROLLGUARD_GIT_TOKEN": "s3cret", "HOME": "/home/x"})
    assert env == {"PATH": "/opt/rollguard/bin:/usr/bin", "HOME": "/home/x", "ROLLGUARD_GIT_TOKEN": "s3cret"}
    assert "s3cret" not in " ".join(command)
    with pytest.raises(StepImageError, match=r"cannot bind"):
        step_command(image, ["x"], tmp_dir=tmp_path / "step", binds=[Path("/proc/self")])


# ----- the local executor with --step-image --------------------------------------------------------

IN_IMAGE = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: in-image}
spec:
  entrypoint: main
  templates:
    - name: main
      steps:
        - - {name: plan, template: plan}
        - - name: show
            template: show
            arguments:
              parameters: [{name: weight, value: "{{steps.plan.outputs.parameters.weight}}"}]
    - name: plan
      outputs:
        parameters:
          - name: weight
            valueFrom: {path: /tmp/weight}
      container:
        image: rollguard:0.1.0
        command: [rollguard, next-weight]
        env:
          - {name: ROLLGUARD_SCHEDULE, value: "25,100"}
          - {name: ROLLGUARD_WEIGHT_FILE, value: /tmp/weight}
          - {name: ROLLGUARD_REST_FILE, value: /tmp/rest}
    - name: show
      inputs:
        parameters: [{name: weight}]
        artifacts:
          - name: note
            path: /tmp/in/note.txt
            raw: {data: "weight {{inputs.parameters.weight}}"}
      volumes:
        - name: creds
          secret: {secretName: creds}
      container:
        image: rollguard:0.1.0
        command: [sh, -c]
        args:
          - >-
            echo uid=$(id -u) home=$HOME pwd=$(pwd)
            tmp=$(python3 -c 'import tempfile; print(tempfile.gettempdir())');
            cat /tmp/in/note.txt; echo; ls /tmp; env | cut -d= -f1 | sort | xargs;
            cat $TOKEN_FILE; echo; echo $ARGO_CONTAINER_NAME
        env:
          - {name: DECLARED, value: "yes"}
          - {name: TOKEN_FILE, value: /var/run/secrets/creds/token}
        volumeMounts:
          - {name: creds, mountPath: /var/run/secrets/creds, readOnly: true}
"""


def test_image_steps_map_tmp_paths_to_the_pod_s_directory_and_leave_bound_paths(tmp_path: Path) -> None:
    image = StepImage(Path("x.tar"), "sha256:" + "0" * 64, tmp_path / "rootfs", ["rollguard"])
    steps = ImageSteps(image, binds=[Path("/tmp/shared")])
    pod = Pod(tmp_path / "pods" / "001-release.plan")
    assert steps.host_path(Path("/tmp/weight"), pod) == pod.directory / "weight"
    assert steps.host_path(Path("/tmp/x/y"), pod) == pod.directory / "x/y"
    assert steps.host_path(Path("/tmp"), pod) == pod.directory
    assert steps.host_path(Path("/tmp/shared/out.json"), pod) == Path("/tmp/shared/out.json")
    assert steps.host_path(Path("/work/out.json"), pod) == Path("/work/out.json")
    assert steps.host_path(Path("/tmpfile"), pod) == Path("/tmpfile")


def test_image_steps_give_only_the_container_s_environment_with_pod_paths_as_the_container_sees_them(
    tmp_path: Path,
) -> None:
    if not IS_ROOT:
        pytest.skip("the pod's directory is handed to uid 65532 (chown)")
    image = StepImage(Path("x.tar"), "sha256:" + "0" * 64, tmp_path / "rootfs", ["rollguard"], "65532:65532", "/tmp",
                      {"PATH": "/opt/rollguard/bin:/usr/bin", "HOME": "/tmp", "LANG": "C.UTF-8"})  # fmt: skip
    pod = Pod(tmp_path / "pods" / "001-deploy", environment={"PATH": "/host/bin", "HOME": "/host", "TMPDIR": "/x"},
              container_environment={"ARGO_NODE_ID": "wf-1", "TOKEN_FILE": f"{tmp_path}/pods/001-deploy/volumes/git/t"})
    pod.directory.mkdir(parents=True)
    command, environment = ImageSteps(image).command(["rollguard", "deploy", f"{pod.directory}/volumes/git"], pod)
    assert environment == {"PATH": "/opt/rollguard/bin:/usr/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
                           "ARGO_NODE_ID": "wf-1", "TOKEN_FILE": "/tmp/volumes/git/t"}  # fmt: skip
    assert command[-1].rstrip().endswith("-C /tmp -- rollguard deploy /tmp/volumes/git")
    assert f"--bind {pod.directory} {tmp_path / 'rootfs' / 'tmp'}" in command[-1]
    assert pod.directory.stat().st_uid == UID


def test_run_local_refuses_a_bad_step_image_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from rollguard.steps.cli import main as cli_main

    workflow = tmp_path / "wf.yaml"
    workflow.write_text(IN_IMAGE)
    assert cli_main(["run-local", str(workflow), "--step-image", str(tmp_path / "none.tar")]) == ExitCode.USAGE
    assert "no such file" in capsys.readouterr().err
    monkeypatch.setattr(step_image.os, "geteuid", lambda: 1000)
    assert cli_main(["run-local", str(workflow), "--step-image", str(tmp_path / "none.tar")]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--step-image needs root" in err and "▶" not in err


@pytest.mark.slow
def test_run_local_runs_each_step_in_the_image_in_its_fresh_directory_with_only_its_env(
    image: StepImage, tmp_path: Path
) -> None:
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(IN_IMAGE)
    secret = tmp_path / "creds"
    secret.mkdir()
    (secret / "token").write_text("from-the-secret")
    done = subprocess.run([str(Path(sys.executable).parent / "rollguard"), "run-local", str(workflow),
                           "--step-image", str(ARCHIVE), "--secret", f"creds={secret}", "--work-dir",
                           str(tmp_path / "pods")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "XDG_CACHE_HOME": str(image.rootfs.parents[2]), "LEAK": "x"})  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    shown = [line.split("] ", 1)[1] for line in done.stdout.splitlines() if line.startswith("[main.show] ")]
    # the pod's fresh directory is the container's /tmp: its HOME, working directory and temporary directory
    assert shown[0] == "uid=65532 home=/tmp pwd=/tmp tmp=/tmp" and shown[1] == "weight 25"
    assert shown[2:4] == ["in", "volumes"], "the step's /tmp holds its input and Secret, not the plan step's files"
    names = set(shown[4].split())
    assert {"DECLARED", "HOME", "PATH", "TOKEN_FILE", "ARGO_NODE_ID", "ARGO_DEADLINE"} <= names
    assert not names & {"LEAK", "VIRTUAL_ENV", "TMPDIR", "GIT_CONFIG_NOSYSTEM"}, "this machine's variables leaked"
    assert shown[5:7] == ["from-the-secret", "main"]
    assert "Succeeded" in done.stdout.splitlines()[-1]
    pods = sorted(path.name for path in next((tmp_path / "pods").iterdir()).iterdir())
    assert [name.split("-", 1)[1] for name in pods] == ["main.plan", "main.show"]
    plan = next((tmp_path / "pods").glob("*/*-main.plan"))
    assert (plan / "weight").read_text().strip() == "25" and plan.stat().st_uid == UID


@pytest.mark.slow
def test_demo_runs_the_release_inside_the_step_image(image: StepImage, tmp_path: Path) -> None:
    from test_demo import FAST, demo, only_run

    completed = demo(tmp_path, "--scenario", "faulty", "--schedule", "10,100", "--sync-delay", "3s",
                     "--step-image", str(ARCHIVE), *FAST,
                     env={"XDG_CACHE_HOME": str(image.rootfs.parents[2])})  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "Steps run in the step image" in completed.stdout
    run, run_dir = only_run(tmp_path)
    assert run["outcome"] == "rolled_back" and isinstance(run["git_push"], float)
    pods = {path.name.split("-", 1)[1]: path for path in next((run_dir / "pods").iterdir()).iterdir()}
    assert {"release.plan", "release.judge.analyze", "release.judge.rollback"} <= set(pods)
    assert pods["release.judge.analyze"].stat().st_uid == UID
