"""The sandbox's GitOps remote: a bare Git repository seeded with the demo app's `k8s/istio.yml`.

A post-receive hook appends `<unix time> <old sha> <new sha> <ref>` to `pushes.log` inside the bare
repository, so the demo knows the exact time of every push (the experiment's `git_push`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rollguard.steps.output_files import write_atomically

MANIFEST_PATH = "k8s/istio.yml"
PUSH_LOG = "pushes.log"

_HOOK = """#!{python}
# rollguard sandbox: record the time of every push (read by `rollguard demo`).
import sys, time
with open({log!r}, "a") as log:
    for line in sys.stdin:
        old, new, ref = line.split()
        log.write(f"{{time.time():.6f}} {{old}} {{new}} {{ref}}\\n")
"""


class GitRemoteError(RuntimeError):
    """A git command on the sandbox remote failed; the message holds git's own words."""


@dataclass(frozen=True)
class Push:
    """One push the remote received: when, which ref, from which commit to which."""

    at: float
    old: str
    new: str
    ref: str


@dataclass(frozen=True)
class GitRemote:
    """A bare repository at `path` whose branch `branch` holds the demo manifests."""

    path: Path
    branch: str = "main"

    @property
    def url(self) -> str:
        """URL to clone from and push to (a `file://` URL, like any remote for git)."""
        return self.path.resolve().as_uri()

    def git(self, *args: str) -> str:
        """Run `git --git-dir=<remote> args...` and return its stdout (GitRemoteError on failure)."""
        return run_git(["--git-dir", str(self.path), *args])

    def head(self) -> str:
        """Commit SHA at the branch head."""
        return self.git("rev-parse", f"refs/heads/{self.branch}").strip()

    def show(self, path: str = MANIFEST_PATH, revision: str | None = None) -> str:
        """Text of `path` at `revision` (default: the branch head)."""
        return self.git("show", f"{revision or self.branch}:{path}")

    def log(self, limit: int = 20) -> list[tuple[str, str]]:
        """(sha, full message) of the last `limit` commits on the branch, newest first."""
        text = self.git("log", f"-{limit}", "--format=%H%x00%B%x01", self.branch)
        entries = []
        for chunk in text.split("\x01"):
            chunk = chunk.strip("\n")
            if chunk:
                sha, _, message = chunk.partition("\x00")
                entries.append((sha, message.strip()))
        return entries

    def pushes(self) -> list[Push]:
        """Every push received since the remote was created, oldest first."""
        log_path = self.path / PUSH_LOG
        if not log_path.exists():
            return []
        entries = []
        for line in log_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                entries.append(Push(float(parts[0]), parts[1], parts[2], parts[3]))
        return entries


def run_git(args: list[str], cwd: Path | None = None) -> str:
    """Run git with a fixed identity and no user/system config; raise GitRemoteError on failure."""
    environment = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "rollguard sandbox",
        "GIT_AUTHOR_EMAIL": "sandbox@rollguard.invalid",
        "GIT_COMMITTER_NAME": "rollguard sandbox",
        "GIT_COMMITTER_EMAIL": "sandbox@rollguard.invalid",
        "GIT_TERMINAL_PROMPT": "0",
    }
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    if completed.returncode != 0:
        raise GitRemoteError(f"git {' '.join(args)} failed: {completed.stderr.strip() or completed.stdout.strip()}")
    return completed.stdout


def demo_manifest() -> str:
    """The demo app's `k8s/istio.yml` (VirtualService 90/10 v1/v2, DestinationRule, comments)."""
    return resources.files("rollguard.sandbox").joinpath("assets/k8s/istio.yml").read_text()


def create_remote(path: Path, branch: str = "main", manifest: str | None = None) -> GitRemote:
    """Create a bare repository at `path` (must not exist) whose `branch` holds the demo manifest."""
    if shutil.which("git") is None:
        raise GitRemoteError("git is not installed; install it (Debian package `git`)")
    if path.exists() and any(path.iterdir()):
        raise GitRemoteError(f"{path} already exists and is not empty; choose an empty directory")
    path.mkdir(parents=True, exist_ok=True)
    run_git(["init", "--bare", "--quiet", f"--initial-branch={branch}", str(path)])
    hook = path / "hooks" / "post-receive"
    write_atomically(hook, _HOOK.format(python=sys.executable, log=str((path / PUSH_LOG).resolve())))
    hook.chmod(0o755)
    with tempfile.TemporaryDirectory(prefix="rollguard-seed-") as work:
        work_path = Path(work)
        run_git(["init", "--quiet", f"--initial-branch={branch}", str(work_path)])
        target = work_path / MANIFEST_PATH
        target.parent.mkdir(parents=True)
        write_atomically(target, manifest if manifest is not None else demo_manifest())
        write_atomically(work_path / "README.md",
                         "GitOps repository of the rollguard demo app (synced by the sandbox).\n")
        run_git(["add", "."], cwd=work_path)
        run_git(["commit", "--quiet", "-m", "Demo app: podinfo v1 stable, v2 canary at 10 %"], cwd=work_path)
        run_git(["push", "--quiet", str(path.resolve()), f"HEAD:refs/heads/{branch}"], cwd=work_path)
    return GitRemote(path, branch)
