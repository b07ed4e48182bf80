"""The step image on this machine: read an OCI archive, unpack it once, run a step inside it.

`open_step_image(archive)` checks the archive (an OCI image archive as `./run.sh image` writes or
`skopeo copy ... oci-archive:` makes: index.json, a manifest, a config, layers), refuses an image
whose entry point is not `rollguard`, and unpacks its layers once into a cache folder named by the
manifest's digest (a second call, or a second run, reuses it). It needs root: extracting files owned
by other users and `chroot` do. `step_command(image, argv, ...)` is the command line that runs one
container step inside that root filesystem the way a container runtime would: in its own mount
namespace (`unshare`), with its own /tmp (a host folder of the caller's), /proc, a few devices and
the host's /etc/hosts and /etc/resolv.conf bound in, `chroot` as the image's user (65532), in the
image's working directory, on the host's network (loopback included). The step's environment is
passed through the process environment (never on a command line): `step_environment` gives the
image's own variables (PATH, HOME...) under the template's.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

ENTRYPOINT = "rollguard"
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": False,
    "application/vnd.oci.image.layer.v1.tar+gzip": True,
    "application/vnd.docker.image.rootfs.diff.tar": False,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": True,
}
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_HOST_FILES = ("/etc/hosts", "/etc/resolv.conf")
_COMPLETE = "unpacked"  # beside rootfs/, written once it is complete


class StepImageError(Exception):
    """The archive cannot serve as the step image, or this caller cannot use it (said in the message)."""


@dataclass(frozen=True)
class StepImage:
    """An unpacked step image: its root filesystem and the parts of its config a runtime needs."""

    archive: Path
    digest: str  # of the manifest, "sha256:..."
    rootfs: Path
    entrypoint: list[str]
    user: str = "65532:65532"
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    cmd: list[str] = field(default_factory=list)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rollguard" / "step-images"


def require_root(flag: str = "--step-image") -> None:
    if os.geteuid() != 0:
        raise StepImageError(
            f"{flag} needs root: the steps run in the image's root filesystem through chroot and a mount "
            f"namespace, which only root may create (run as root, e.g. with sudo, or leave out {flag})"
        )


def open_step_image(archive: Path, cache_dir: Path | None = None) -> StepImage:
    """Check `archive` and unpack it (once per manifest digest) into `cache_dir`; see the module docstring."""
    require_root()
    archive = Path(archive)
    if not archive.is_file():
        raise StepImageError(f"step image {archive}: no such file (build one with ./run.sh image)")
    try:
        with tarfile.open(archive) as tar:
            digest, config, layers = _read_image(tar, archive)
            image = _step_image(archive, digest, config, Path(cache_dir or default_cache_dir()))
            folder = image.rootfs.parent
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / "lock").open("w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # another run unpacking the same image: wait for it
                if not (folder / _COMPLETE).is_file():
                    _unpack(tar, layers, image.rootfs, archive)
                    (folder / _COMPLETE).write_text(f"{archive}\n", encoding="utf-8")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise StepImageError(f"step image {archive}: not a readable OCI archive ({exc})") from None
    return image


def step_environment(image: StepImage, declared: Mapping[str, str]) -> dict[str, str]:
    """The environment a container gets: the image's variables, then the template's on top."""
    return {**image.env, **declared}


def step_command(
    image: StepImage,
    argv: Sequence[str],
    *,
    tmp_dir: Path,
    workdir: str | None = None,
    binds: Sequence[Path] = (),
) -> list[str]:
    """The host command that runs `argv` (a container's command + args) inside the image.

    Run it with `env=step_environment(image, declared)`: the variables pass through `unshare` and
    `chroot` unchanged. `tmp_dir` (a host folder) becomes the step's /tmp, writable by the image's
    user. Each path of `binds` (a host folder or file, e.g. a Git repository the step pushes to) is
    bound at the same path inside. An empty `argv` runs the image's entry point and command (CMD).
    """
    tools = {name: shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") for name in ("unshare", "mount", "chroot")}
    missing = [name for name, found in tools.items() if found is None]
    if missing:
        raise StepImageError(f"--step-image needs {', '.join(missing)} (util-linux, coreutils) on this machine")
    root = image.rootfs
    _own_tmp(Path(tmp_dir), image.user)
    q = shlex.quote
    mount = q(str(tools["mount"]))
    lines = [
        "set -e",
        f"{mount} --bind {q(str(tmp_dir))} {q(str(root / 'tmp'))}",
        f"{mount} -t proc proc {q(str(root / 'proc'))}",
    ]
    for device in _DEVICES:
        if Path("/dev", device).exists():
            lines.append(f"{mount} --bind /dev/{device} {q(str(root / 'dev' / device))}")
    for host_file in _HOST_FILES:
        if Path(host_file).is_file():
            lines.append(f"{mount} --bind {host_file} {q(str(root / host_file.lstrip('/')))}")
    for bind in binds:
        source = Path(bind).resolve()
        inside = PurePosixPath(str(source))
        if inside.parts[1] in ("proc", "dev") or inside == PurePosixPath("/"):
            raise StepImageError(f"cannot bind {source} into the step image")
        # the mount point: under /tmp it belongs in the step's own /tmp (mounted first), else in the image
        if inside.parts[1] == "tmp":
            target = Path(tmp_dir) / str(inside.relative_to("/tmp"))
        else:
            target = root / str(inside).lstrip("/")
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch(exist_ok=True)
        lines.append(f"{mount} --bind {q(str(source))} {q(str(root / str(inside).lstrip('/')))}")
    command = list(argv) or [*image.entrypoint, *image.cmd]
    uid, gid = image.user.split(":", 1)
    if (root / "usr/bin/setpriv").is_file():  # the user changed inside, so the parent-death signal survives it
        user = ["/usr/bin/setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--pdeathsig=KILL"]
        chrooted = [str(tools["chroot"]), str(root), *user]
    else:
        chrooted = [str(tools["chroot"]), f"--userspec={image.user}", str(root)]
    chrooted += ["/usr/bin/env", "-u", "PWD", "-u", "OLDPWD", "-C", workdir or image.workdir or "/", "--", *command]
    lines.append("exec " + shlex.join(chrooted))
    return [str(tools["unshare"]), "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines)]


class ImageSteps:
    """What the local executor needs to run its container steps inside a step image.

    Each step (node) gets a host folder as its /tmp, kept for all its attempts, under `scratch`;
    `host_path` tells where the executor finds a file the step's container sees under /tmp (an
    input artifact it writes before the step, an output parameter it reads after). Paths of `binds`
    are the same inside and outside.
    """

    def __init__(self, image: StepImage, scratch: Path, binds: Sequence[Path] = ()) -> None:
        self.image = image
        self.scratch = Path(scratch).resolve()
        self.binds = [Path(path).resolve() for path in binds]

    def tmp_dir(self, node: str) -> Path:
        return self.scratch / (re.sub(r"[^A-Za-z0-9_.-]+", "_", node).strip("._") or "step") / "tmp"

    def host_path(self, node: str, path: Path) -> Path:
        inside = PurePosixPath(str(path))
        if any(inside == PurePosixPath(bind) or PurePosixPath(bind) in inside.parents for bind in self.binds):
            return path  # a bound path, mounted over the step's /tmp
        if inside.is_absolute() and inside.parts[1:2] == ("tmp",) and len(inside.parts) > 2:
            return self.tmp_dir(node) / str(inside.relative_to("/tmp"))
        return path

    def command(self, node: str, argv: Sequence[str], declared: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """The host command and environment that run a step (`argv`, its template's `declared` variables)."""
        command = step_command(self.image, argv, tmp_dir=self.tmp_dir(node), binds=self.binds)
        return command, step_environment(self.image, declared)


class GitHttpRemote:
    """A bare repository served over Git's smart HTTP on loopback (`git http-backend`), no auth.

    For steps in the image, a Git server as on a cluster: their pushes run git-receive-pack and its
    hooks here, as this process's user, instead of inside the image through a file path.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = Path(repo).resolve()
        root = self.repo.parent

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.serve()

            def do_POST(self) -> None:
                self.serve()

            def serve(self) -> None:
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": str(root),
                       "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
                       "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "rollguard", "REMOTE_ADDR": "127.0.0.1",
                       "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                       "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}  # fmt: skip
                done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                                      timeout=120, check=False)  # fmt: skip
                separator = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
                head, _, payload = done.stdout.partition(separator)
                status, headers = 200, []
                for line in head.decode(errors="replace").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="git-http", daemon=True)  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{self.repo.name}"

    def __enter__(self) -> GitHttpRemote:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


# ----- reading the archive --------------------------------------------------------------------------


def _json_member(tar: tarfile.TarFile, name: str, archive: Path) -> Any:
    try:
        member = tar.getmember(name)
    except KeyError:
        raise StepImageError(f"step image {archive}: not an OCI archive ({name} is missing)") from None
    handle = tar.extractfile(member)
    if handle is None:
        raise StepImageError(f"step image {archive}: {name} is not a file")
    try:
        return json.load(handle)
    except ValueError as exc:
        raise StepImageError(f"step image {archive}: {name} is not JSON ({exc})") from None


def _blob_name(digest: Any, archive: Path) -> str:
    algorithm, _, value = str(digest).partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise StepImageError(f"step image {archive}: bad digest {digest!r}")
    return f"blobs/sha256/{value}"


def _verified_blob(tar: tarfile.TarFile, descriptor: dict[str, Any], archive: Path) -> bytes:
    name = _blob_name(descriptor.get("digest"), archive)
    try:
        handle = tar.extractfile(name)
    except KeyError:
        handle = None
    if handle is None:
        raise StepImageError(f"step image {archive}: {name} is missing")
    data = handle.read()
    if "sha256:" + hashlib.sha256(data).hexdigest() != descriptor["digest"]:
        raise StepImageError(f"step image {archive}: {name} does not match its digest (a corrupt archive)")
    return data


def _read_image(tar: tarfile.TarFile, archive: Path) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    index = _json_member(tar, "index.json", archive)
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not manifests:
        raise StepImageError(f"step image {archive}: index.json lists no image")
    descriptor = manifests[0]
    manifest = json.loads(_verified_blob(tar, descriptor, archive))
    if "manifests" in manifest:  # an image index (several platforms): take this machine's
        machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
        matching = [m for m in manifest["manifests"] if (m.get("platform") or {}).get("architecture") == machine]
        if not matching:
            raise StepImageError(f"step image {archive}: no image for this machine's architecture ({machine})")
        descriptor = matching[0]
        manifest = json.loads(_verified_blob(tar, descriptor, archive))
    config = json.loads(_verified_blob(tar, manifest.get("config") or {}, archive))
    layers = manifest.get("layers") or []
    if not layers:
        raise StepImageError(f"step image {archive}: the image has no layers")
    for layer in layers:
        if layer.get("mediaType") not in _LAYER_TYPES:
            raise StepImageError(f"step image {archive}: layer type {layer.get('mediaType')!r} is not supported")
    return str(descriptor["digest"]), config, layers


def _step_image(archive: Path, digest: str, config: dict[str, Any], cache_dir: Path) -> StepImage:
    settings = config.get("config") or {}
    entrypoint = [str(part) for part in settings.get("Entrypoint") or []]
    if not entrypoint or PurePosixPath(entrypoint[0]).name != ENTRYPOINT:
        raise StepImageError(
            f"step image {archive}: its entry point is {entrypoint or 'not set'}, not {ENTRYPOINT!r}: "
            "not a rollguard step image (build one with ./run.sh image)"
        )
    env = dict(str(item).partition("=")[::2] for item in settings.get("Env") or [])
    user = str(settings.get("User") or "0:0")
    if ":" not in user:
        user = f"{user}:{user}"
    if not all(part.isdigit() for part in user.split(":", 1)):
        raise StepImageError(f"step image {archive}: user {user!r} is not numeric uid:gid")
    rootfs = cache_dir / digest.split(":")[1][:24] / "rootfs"
    workdir = str(settings.get("WorkingDir") or "/")
    cmd = [str(part) for part in settings.get("Cmd") or []]
    return StepImage(archive=archive, digest=digest, rootfs=rootfs, entrypoint=entrypoint, user=user, workdir=workdir,
                     env=env, cmd=cmd)  # fmt: skip


# ----- unpacking ------------------------------------------------------------------------------------


def _unpack(tar: tarfile.TarFile, layers: list[dict[str, Any]], rootfs: Path, archive: Path) -> None:
    """Extract the layers in order (whiteouts applied) into a fresh folder, then move it into place."""
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(rootfs, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix="unpacking-", dir=rootfs.parent))
    try:
        for layer in layers:
            name = _blob_name(layer.get("digest"), archive)
            try:
                blob = tar.extractfile(name)
            except KeyError:
                blob = None
            if blob is None:
                raise StepImageError(f"step image {archive}: layer {name} is missing")
            checked = _HashingReader(blob)
            stream: Any = checked
            if _LAYER_TYPES[layer["mediaType"]]:
                stream = gzip.GzipFile(fileobj=cast(IO[bytes], checked), mode="rb")
            with tarfile.open(fileobj=stream, mode="r|") as layer_tar:
                _extract_layer(layer_tar, staging, archive)
            checked.read()  # the tar reader may stop before the end of the blob
            if "sha256:" + checked.sha256.hexdigest() != layer["digest"]:
                raise StepImageError(f"step image {archive}: layer {name} does not match its digest (corrupt)")
        for mount_point in [*(f"dev/{d}" for d in _DEVICES), *(f.lstrip("/") for f in _HOST_FILES)]:
            target = staging / mount_point
            if not target.exists() and not target.is_symlink():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
        for folder in ("proc", "tmp"):
            (staging / folder).mkdir(exist_ok=True)
        staging.chmod(0o755)
        staging.rename(rootfs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class _HashingReader:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha256.update(data)
        return data


def _extract_layer(layer: tarfile.TarFile, root: Path, archive: Path) -> None:
    for member in layer:
        relative = PurePosixPath(member.name.lstrip("/"))
        if ".." in relative.parts:
            raise StepImageError(f"step image {archive}: layer entry {member.name!r} leaves the root filesystem")
        if str(relative) in ("", "."):
            continue
        target = root / relative
        parent = Path(os.path.realpath(target.parent))
        if parent != root and root not in parent.parents:
            raise StepImageError(f"step image {archive}: layer entry {member.name!r} goes through a link out of it")
        base = relative.name
        if base == ".wh..wh..opq":  # an opaque folder: what lower layers put there goes
            for child in target.parent.iterdir():
                _remove(child)
            continue
        if base.startswith(".wh."):
            _remove(target.parent / base[len(".wh."):])
            continue
        if member.islnk():
            link = PurePosixPath(member.linkname.lstrip("/"))
            if ".." in link.parts:
                raise StepImageError(f"step image {archive}: hard link {member.name!r} leaves the root filesystem")
            member.linkname = str(link)
        if target.exists() or target.is_symlink():
            if not (member.isdir() and target.is_dir() and not target.is_symlink()):
                _remove(target)
        member.name = str(relative)
        if hasattr(tarfile, "fully_trusted_filter"):  # checked above; no deprecation warning on 3.12+
            layer.extract(member, root, numeric_owner=True, filter="fully_trusted")
        else:
            layer.extract(member, root, numeric_owner=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _own_tmp(tmp_dir: Path, user: str) -> None:
    uid, gid = (int(part) for part in user.split(":", 1))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    os.chown(tmp_dir, uid, gid)
    tmp_dir.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
