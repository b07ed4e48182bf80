"""The step image on this machine: read an OCI archive, check it, unpack it once.

`open_step_image(archive)` checks the archive (an OCI image archive as `./run.sh image` writes or
`skopeo copy ... oci-archive:` makes: index.json, a manifest, a config, layers, each blob against
its digest), refuses an image whose entry point is not `rollguard`, and unpacks its layers
(whiteouts applied, nothing leaving the root filesystem) once into a cache folder named by the
manifest's digest (a second call, or a second run, reuses it). It needs root: extracting files
owned by other users does, and so does running a step in it (rollguard.sandbox.step_image_run:
unshare + chroot as the image's user, which is how the local executor uses it with --step-image).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

ENTRYPOINT = "rollguard"
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": False,
    "application/vnd.oci.image.layer.v1.tar+gzip": True,
    "application/vnd.docker.image.rootfs.diff.tar": False,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": True,
}
# What a step run binds into the root filesystem (step_image_run); unpacking makes their mount points
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
HOST_FILES = ("/etc/hosts", "/etc/resolv.conf")
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
        for mount_point in [*(f"dev/{d}" for d in DEVICES), *(f.lstrip("/") for f in HOST_FILES)]:
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
