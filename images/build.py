"""Build the rollguard step image without a Docker engine (`./run.sh image` runs this, as root).

    mmdebstrap   a Debian root filesystem of images/packages.txt (suite SUITE, no recommends, no
                 docs/man pages/translations: images/dpkg-nodoc.cfg)
    pip          images/requirements.txt (--no-deps, wheels for the image's Python) and the wheel of
                 steps/ only, unpacked into /opt/rollguard
    finish.sh    inside the root filesystem: user 65532, the `rollguard` launcher, the cuts, bytecode
    umoci        the root filesystem as one layer of an OCI image, with its config (user, entry point)
    skopeo       an OCI archive: build/image/rollguard-VERSION.oci.tar

images/Dockerfile builds the same content from the same three files (packages, requirements,
finish.sh) for Docker users. Prints the unpacked size, the archive size and where the bytes go.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
SUITE = "bookworm"  # Debian 12; images/Dockerfile's base is debian:bookworm-slim (a test checks both)
PYTHON_VERSION = "3.11"  # Debian bookworm's python3
GLIBC_MINOR = 36  # bookworm's glibc 2.36: the newest manylinux wheels it runs
VENV = "/opt/rollguard"
SITE = f"{VENV}/lib/python{PYTHON_VERSION}/site-packages"
USER = "65532:65532"
ENTRYPOINT = ["rollguard"]
CMD = ["--help"]
WORKDIR = "/tmp"
ENV = {
    "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",  # glibc's C.utf8 is in the image; the local executor's stand-in sets it too
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
# Folders of apt, which the image does not hold (images/Dockerfile removes the same)
APT_LEFTOVERS = ["/etc/apt", "/var/cache/apt", "/var/lib/apt"]
# What the wheel is built from: exactly images/Dockerfile's build context for it.
WHEEL_CONTEXT = ["pyproject.toml", "setup.py", "README.md", "steps"]
MB = 1_000_000


def say(message: str) -> None:
    print(f"image: {message}", file=sys.stderr, flush=True)


def run(command: list[str], **kwargs: object) -> None:
    say("$ " + shlex.join(command) if len(command) < 12 else f"$ {shlex.join(command[:6])} ...")
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def version() -> str:
    found = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    if not found:
        sys.exit("image: error: no version = \"...\" line in pyproject.toml")
    return found.group(1)


def debian_packages() -> list[str]:
    lines = (IMAGES / "packages.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def check_host() -> None:
    if os.geteuid() != 0:
        sys.exit("image: error: the build needs root (mmdebstrap installs packages, chroot runs in the image)")
    missing = [tool for tool in ("mmdebstrap", "umoci", "skopeo") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"image: error: {', '.join(missing)} not installed (./run.sh image installs them with apt-get)")


def build_wheel(work: Path) -> Path:
    """The wheel of steps/ only, from a copy of exactly the Dockerfile's build context."""
    context = work / "context"
    for name in WHEEL_CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(source, context / name)
    wheels = work / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(wheels), str(context)])
    (wheel,) = wheels.glob("rollguard-*.whl")
    return wheel


def install_python_packages(wheel: Path, target: Path) -> None:
    """Wheels for the image's interpreter (not this one), unpacked, no bytecode (finish.sh compiles)."""
    machine = platform.machine()
    abi = "cp" + PYTHON_VERSION.replace(".", "")
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]  # what glibc 2.36 runs
    run([
        sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--only-binary=:all:",
        *(f"--platform={name}" for name in [*platforms, f"manylinux2014_{machine}"]),
        "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", abi, "--target", str(target),
        "-r", str(IMAGES / "requirements.txt"), str(wheel),
    ])  # fmt: skip


def build_rootfs(rootfs: Path, site_packages: Path) -> None:
    mirrors = shlex.split(os.environ.get("ROLLGUARD_DEBIAN_MIRRORS", ""))  # default: mmdebstrap's, + updates/security
    chroot_env = "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8"
    run([
        "mmdebstrap", "--mode=root", "--variant=essential", "--quiet",
        "--include=" + ",".join(debian_packages()),
        "--dpkgopt=" + str(IMAGES / "dpkg-nodoc.cfg"),
        "--customize-hook=" + f'mkdir -p "$1{SITE}"',
        "--customize-hook=" + f"sync-in {site_packages} {SITE}",
        "--customize-hook=" + f"copy-in {IMAGES / 'finish.sh'} /tmp",
        "--customize-hook=" + f'chroot "$1" {chroot_env} sh /tmp/finish.sh',
        "--customize-hook=" + 'rm -f "$1/tmp/finish.sh"',
        SUITE, str(rootfs), *mirrors,
    ])  # fmt: skip
    # What mmdebstrap leaves for the chroot's sake: device nodes, and the build machine's resolver
    # and host name (a container runtime provides all three), and apt's folders (no apt inside).
    # Unmounted by now; checked anyway.
    for entry in (rootfs / "dev").iterdir():
        if os.path.ismount(entry):
            sys.exit(f"image: error: {entry} is still mounted")
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for name in ("etc/resolv.conf", "etc/hostname"):
        (rootfs / name).unlink(missing_ok=True)
    for name in APT_LEFTOVERS:
        shutil.rmtree(rootfs / name.lstrip("/"), ignore_errors=True)


def make_archive(layout: Path, bundle: Path, rootfs: Path, archive: Path, tag: str) -> None:
    image = f"{layout}:{tag}"
    run(["umoci", "init", "--layout", str(layout)])
    run(["umoci", "new", "--image", image])
    run(["umoci", "unpack", "--image", image, str(bundle)], stdout=subprocess.DEVNULL)
    (bundle / "rootfs").rmdir()
    rootfs.rename(bundle / "rootfs")
    run(["umoci", "repack", "--image", image, "--history.created_by", "images/build.py", str(bundle)])
    config = ["umoci", "config", "--image", image, "--config.user", USER, "--config.workingdir", WORKDIR,
              *(f"--config.entrypoint={part}" for part in ENTRYPOINT), *(f"--config.cmd={part}" for part in CMD),
              "--config.label", f"org.opencontainers.image.version={tag}",
              "--config.label", "org.opencontainers.image.title=rollguard step image"]  # fmt: skip
    for name, value in ENV.items():
        config += ["--config.env", f"{name}={value}"]
    run(config)
    run(["umoci", "gc", "--layout", str(layout)])
    archive.unlink(missing_ok=True)
    run(["skopeo", "copy", "--quiet", f"oci:{image}", f"oci-archive:{archive}:rollguard:{tag}"])


def file_bytes(root: Path) -> dict[Path, int]:
    """Bytes of every regular file under root, a hard-linked file counted once (under its first path)."""
    seen: set[tuple[int, int]] = set()
    sizes: dict[Path, int] = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            info = path.lstat()
            if not path.is_symlink() and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                sizes[path] = info.st_size
    return sizes


def breakdown(rootfs: Path) -> tuple[int, list[tuple[str, int]]]:
    """Total bytes and the parts: Python packages by top-level name, Debian packages, the rest."""
    rootfs = rootfs.resolve()
    sizes = file_bytes(rootfs)
    parts: dict[str, int] = defaultdict(int)
    owned: set[Path] = set()
    site = rootfs / SITE.lstrip("/")
    for path, size in sizes.items():
        if path.is_relative_to(site):
            top = path.relative_to(site).parts[0].split("-")[0].removesuffix(".py")
            parts[f"python: {top}"] += size
            owned.add(path)
    for listing in sorted((rootfs / "var/lib/dpkg/info").glob("*.list")):
        package = listing.stem.split(":")[0]
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            # through the real folder: /lib/x86_64-linux-gnu/libc.so.6 is /usr/lib/... (merged /usr)
            path = Path(os.path.realpath((rootfs / line.lstrip("/")).parent)) / Path(line).name
            if path in sizes and path not in owned:
                parts[f"debian: {package}"] += sizes[path]
                owned.add(path)
    stdlib = rootfs / f"usr/lib/python{PYTHON_VERSION}"
    for path, size in sizes.items():
        if path not in owned:
            parts["debian: python bytecode (stdlib)" if path.is_relative_to(stdlib) else "other files"] += size
    return sum(sizes.values()), sorted(parts.items(), key=lambda item: -item[1])


def layer_bytes(layout: Path) -> int:
    """Uncompressed size of the image's layers (the size `docker images` shows)."""
    total = 0
    for blob in (layout / "blobs" / "sha256").iterdir():
        with blob.open("rb") as handle:
            if handle.read(2) != b"\x1f\x8b":
                continue
        done = subprocess.run(f"gzip -dc {shlex.quote(str(blob))} | wc -c", shell=True, capture_output=True,
                              text=True, check=True)  # fmt: skip
        total += int(done.stdout)
    return total


def report(total: int, parts: list[tuple[str, int]], layer: int, archive: Path, seconds: float) -> None:
    print(f"archive: {archive} ({archive.stat().st_size / MB:.1f} MB, gzip)")
    print(f"unpacked: {total / MB:.1f} MB of files ({layer / MB:.1f} MB uncompressed layer)")
    print("where the bytes go:")
    python = sum(size for name, size in parts if name.startswith("python: "))
    print(f"  {python / MB:6.1f} MB  Python packages in {VENV} (bytecode included)")
    for name, size in parts:
        if size >= 1 * MB or name == "other files":
            print(f"  {size / MB:6.1f} MB    {name}")
    print(f"build time: {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "build" / "image", help="output folder (build/image)")
    parser.add_argument("--keep-rootfs", action="store_true", help="keep the root filesystem in OUT/rootfs")
    args = parser.parse_args(argv)
    check_host()
    started = time.monotonic()
    tag = version()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"rollguard-{tag}.oci.tar"
    with tempfile.TemporaryDirectory(prefix="rollguard-image-", dir=out) as scratch:
        work = Path(scratch)
        wheel = build_wheel(work)
        site_packages = work / "site-packages"
        install_python_packages(wheel, site_packages)
        rootfs = work / "rootfs"
        build_rootfs(rootfs, site_packages)
        total, parts = breakdown(rootfs)
        (out / f"rollguard-{tag}.debian-packages.txt").write_text(
            subprocess.run(["chroot", str(rootfs), "dpkg-query", "-W"], capture_output=True, text=True,
                           check=True).stdout, encoding="utf-8")  # fmt: skip
        layout = work / "oci"
        make_archive(layout, work / "bundle", rootfs, archive, tag)
        layer = layer_bytes(layout)
        if args.keep_rootfs:
            shutil.rmtree(out / "rootfs", ignore_errors=True)
            (work / "bundle" / "rootfs").rename(out / "rootfs")
    report(total, parts, layer, archive, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
