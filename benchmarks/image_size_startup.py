"""Benchmark of the step image: its size, and how fast `rollguard --help` starts inside it.

Reads build/image/rollguard-VERSION.oci.tar (`./run.sh image` builds it), unpacks it (once, into a
temporary cache) and prints (does not assert):
  1. the archive's size (gzip-compressed layer) and the unpacked size (bytes of its files, each
     hard-linked file once), with the largest parts of /opt/rollguard and of the rest;
  2. the median and spread of `rollguard --help` over --runs runs, as uid 65532:
     - `chroot` alone: the interpreter's start-up and rollguard's imports in the image;
     - as the local executor runs a step: `unshare` + mounts + `chroot` (step_image_run.step_command).
Needs root (chroot); without the archive or root it says so and exits 0.

    .venv/bin/python benchmarks/image_size_startup.py [--runs 15] [--archive PATH]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from rollguard.sandbox.step_image import open_step_image
from rollguard.sandbox.step_image_run import step_command, step_environment

REPO = Path(__file__).resolve().parents[1]
MB = 1_000_000


def default_archive() -> Path:
    found = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    return REPO / "build" / "image" / f"rollguard-{found[1] if found else '0'}.oci.tar"


def sizes(root: Path) -> tuple[int, dict[str, int]]:
    """Total bytes of regular files (hard links once) and bytes per part (top folders; /opt/rollguard by package)."""
    seen: set[tuple[int, int]] = set()
    parts: dict[str, int] = defaultdict(int)
    total = 0
    site = next(root.glob("opt/rollguard/lib/python3.*/site-packages"), root / "opt")
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            info = path.lstat()
            if path.is_symlink() or (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
            if path.is_relative_to(site):
                part = "python: " + path.relative_to(site).parts[0].split("-")[0]
            else:
                part = "/" + "/".join(path.relative_to(root).parts[:-1][:3])
            parts[part] += info.st_size
    return total, parts


def timed(command: list[str], env: dict[str, str], runs: int) -> list[float]:
    subprocess.run(command, env=env, check=True, capture_output=True)  # warm the page cache
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
    return seconds


def show(label: str, seconds: list[float]) -> None:
    ordered = sorted(seconds)
    print(f"  {label:<46} median {statistics.median(ordered) * 1000:6.0f} ms   "
          f"min {ordered[0] * 1000:4.0f} ms   max {ordered[-1] * 1000:4.0f} ms   ({len(ordered)} runs)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--archive", type=Path, default=default_archive())
    args = parser.parse_args()
    print("step image: size and start-up")
    if not args.archive.is_file():
        print(f"  skipped: no {args.archive} (./run.sh image builds it)")
        return 0
    if os.geteuid() != 0:
        print("  skipped: running commands in the image needs root (chroot)")
        return 0
    with tempfile.TemporaryDirectory(prefix="rollguard-image-bench-") as scratch:
        image = open_step_image(args.archive, Path(scratch) / "cache")
        total, parts = sizes(image.rootfs)
        print(f"  archive   {args.archive.stat().st_size / MB:6.1f} MB  ({args.archive.name}, gzip)")
        print(f"  unpacked  {total / MB:6.1f} MB  (bytes of its files, hard links once)")
        for part, size in sorted(parts.items(), key=lambda item: -item[1])[:12]:
            print(f"    {size / MB:6.1f} MB  {part}")
        env = step_environment(image, {})
        chroot = [shutil.which("chroot") or "/usr/sbin/chroot", f"--userspec={image.user}", str(image.rootfs),
                  "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), "rollguard", "--help"]  # fmt: skip
        show("rollguard --help, chroot as 65532", timed(chroot, {}, args.runs))
        step = step_command(image, ["rollguard", "--help"], tmp_dir=Path(scratch) / "tmp")
        show("rollguard --help, as a step (unshare + mounts)", timed(step, env, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
