"""The GitOps repository the workflow tests release into: a bare repo seeded with the sandbox's podinfo
VirtualService (90/10 stable/canary), a `git` helper with a fixed identity, and the split as Git has it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rollguard.steps.traffic.virtualservice import read_split

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "sandbox" / "assets" / "k8s" / "istio.yml"
FILE_IN_REPO = "k8s/istio.yml"


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` as a fixed test identity; its stdout."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def seeded_remote(tmp_path: Path) -> Path:
    """A bare GitOps repository (tmp_path/gitops.git) whose VirtualService sends 90/10 (stable/canary)."""
    bare = tmp_path / "gitops.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    (work / "k8s").mkdir()
    (work / FILE_IN_REPO).write_text(MANIFEST.read_text(encoding="utf-8"), encoding="utf-8")
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "seed")
    git(work, "push", "-q", "origin", "HEAD:main")
    return bare


def split_in(bare: Path) -> tuple[int, int]:
    """(stable, canary) weights of podinfo's VirtualService on the remote's main."""
    return read_split(git(bare, "show", f"main:{FILE_IN_REPO}"), "podinfo", "v1", "v2")
