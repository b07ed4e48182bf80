"""Test helpers: a real bare Git repository as the GitOps remote, and ways to land commits in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "istio.yml"
MANIFEST_PATH = "k8s/istio.yml"
_IDENTITY = {
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
}


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git (test side), fail loudly, return stdout."""
    env = {**os.environ, **_IDENTITY, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    completed = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, f"git {' '.join(args)} failed: {completed.stderr}"
    return completed.stdout


def make_remote(root: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A bare repository `root/remote.git` whose `branch` holds `files` (default: the Istio fixture)."""
    files = files if files is not None else {MANIFEST_PATH: FIXTURE.read_text(encoding="utf-8")}
    remote = root / "remote.git"
    git("init", "--quiet", "--bare", "--initial-branch", branch, str(remote))
    seed = root / "seed"
    git("clone", "--quiet", str(remote), str(seed))
    git("checkout", "--quiet", "-b", branch, cwd=seed)
    for path, text in files.items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_bytes(text.encode("utf-8"))
    git("add", "--all", cwd=seed)
    git("commit", "--quiet", "-m", "Add the reviews manifests", cwd=seed)
    git("push", "--quiet", "origin", branch, cwd=seed)
    return remote


def land_commit(remote: Path, path: str, change: str | None = None, *, text: str | None = None,
                message: str = "Someone else's change", branch: str = "main") -> str:  # fmt: skip
    """Push a commit to `remote` from a separate clone: replace the file's text, or append `change` to it."""
    work = remote.parent / f"other-{len(list(remote.parent.glob('other-*')))}"
    git("clone", "--quiet", "--branch", branch, str(remote), str(work))
    file = work / path
    file.parent.mkdir(parents=True, exist_ok=True)
    old = file.read_text(encoding="utf-8") if file.exists() else ""
    file.write_text(text if text is not None else old + (change or ""), encoding="utf-8")
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", message, cwd=work)
    git("push", "--quiet", "origin", branch, cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def remote_file(remote: Path, path: str = MANIFEST_PATH, branch: str = "main") -> str:
    """The file as the remote branch holds it."""
    return git("--git-dir", str(remote), "show", f"{branch}:{path}")


def remote_log(remote: Path, branch: str = "main") -> list[str]:
    """Subjects of the branch's commits, newest first."""
    return git("--git-dir", str(remote), "log", "--format=%s", branch).splitlines()


def remote_head(remote: Path, branch: str = "main") -> str:
    """SHA the branch points at."""
    return git("--git-dir", str(remote), "rev-parse", branch).strip()


def commit_message(remote: Path, revision: str = "main") -> str:
    """Full message of a commit."""
    return git("--git-dir", str(remote), "log", "-1", "--format=%B", revision)


def commit_author(remote: Path, revision: str = "main") -> str:
    """`Name <email>` of a commit's author."""
    return git("--git-dir", str(remote), "log", "-1", "--format=%an <%ae>", revision).strip()


def race_next_push(remote: Path, path: str, text: str, message: str = "Someone else's change") -> None:
    """Make the next push to `remote` lose a race: while the remote receives it, another clone lands `text` first.

    A pre-receive hook pushes the other commit from a fresh clone (once), so the branch moves between the
    pusher's clone and its ref update, as when two steps push at the same moment.
    """
    lander = remote.parent / "land_racing_commit.py"
    lander.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path\n"
        "from git_remote import land_commit\n"
        "land_commit(Path(sys.argv[1]), sys.argv[2], text=Path(sys.argv[3]).read_text(), message=sys.argv[4])\n"
    )
    (remote.parent / "racing-text").write_text(text)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\n"
        f'[ -e "{remote}/raced" ] && exit 0\n'
        f'touch "{remote}/raced"\n'
        f'env -i PATH="$PATH" HOME="$HOME" {sys.executable} {lander} {remote} {path} '
        f'{remote.parent / "racing-text"} "{message}" >&2\n'
    )
    hook.chmod(0o755)
