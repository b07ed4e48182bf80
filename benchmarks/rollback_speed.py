"""Benchmark of `rollguard rollback`: time from starting the command to the pushed commit, and to the live patch.

Each run first puts the remote back at 90/10 (a commit from another clone), then starts the real
`rollguard rollback` command as a process and reads its --result-file:
  1. Git only: start -> pushed commit (result `pushed_at`), and start -> process exit;
  2. with --live-patch against the fake Kubernetes API server (tests/fake_kube_api.py, real HTTP):
     start -> live VirtualService patched (result `live_patch.patched_at`);
  3. with --live-patch and --argocd-app (the fake ArgoCD reports the sync 0.1 s after it is asked):
     start -> ArgoCD reports the pushed revision synced (process exit).
The remote is a local bare repository. For scale, the start-up of `rollguard rollback --help` is
printed too. Prints median / p95 / max; asserts nothing.

    .venv/bin/python benchmarks/rollback_speed.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_kube_api import FakeKubeApi, application_object, virtual_service_object  # noqa: E402

ROLLGUARD = str(Path(sys.executable).parent / "rollguard")
FIXTURE = ROOT / "tests" / "fixtures" / "istio.yml"
MANIFEST = "k8s/istio.yml"
ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("ROLLGUARD_")},
    "GIT_AUTHOR_NAME": "Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
}


def git(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True, capture_output=True, timeout=60)


def make_remote(root: Path) -> tuple[Path, Path]:
    """A bare remote holding the fixture, and a working clone used to reset it to 90/10 between runs."""
    remote, work = root / "remote.git", root / "work"
    git("init", "--quiet", "--bare", "--initial-branch", "main", str(remote))
    git("clone", "--quiet", str(remote), str(work))
    git("checkout", "--quiet", "-b", "main", cwd=work)
    (work / "k8s").mkdir()
    (work / MANIFEST).write_text(FIXTURE.read_text())
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "seed", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    return remote, work


def reset_to_canary(work: Path, run: int) -> None:
    """Push 90/10 again (from the other clone), so the next rollback has something to do."""
    git("pull", "--quiet", "--rebase", "origin", "main", cwd=work)
    (work / MANIFEST).write_text(FIXTURE.read_text() + f"# run {run}\n")
    git("commit", "--quiet", "-am", f"canary again ({run})", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)


def rollback(remote: Path, result_file: Path, *extra: str) -> tuple[float, dict]:
    """Run `rollguard rollback`; return (start time, result JSON)."""
    started = time.time()
    completed = subprocess.run(
        [ROLLGUARD, "rollback", "--repo", str(remote), "--path", MANIFEST, "--virtual-service", "reviews",
         "--result-file", str(result_file), *extra],
        env=ENV, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    ended = time.time()
    if completed.returncode != 0:
        raise SystemExit(f"rollguard rollback failed ({completed.returncode}):\n{completed.stderr}")
    result = json.loads(result_file.read_text())
    result["_exit"] = ended
    return started, result


def describe(name: str, values_s: list[float]) -> str:
    ordered = sorted(values_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"  {name:<46} median {statistics.median(ordered) * 1000:6.0f} ms   p95 {p95 * 1000:6.0f} ms   "
        f"max {ordered[-1] * 1000:6.0f} ms   (n={len(ordered)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    to_push: list[float] = []
    to_exit: list[float] = []
    to_live: list[float] = []
    live_push: list[float] = []
    to_synced: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-") as temp:
        root = Path(temp)
        remote, work = make_remote(root)
        result_file = root / "result.json"
        for run in range(options.runs):
            reset_to_canary(work, run)
            started, result = rollback(remote, result_file)
            assert result["changed"] and result["canary_weight"] == 0
            to_push.append(result["pushed_at"] - started)
            to_exit.append(result["_exit"] - started)
        with FakeKubeApi() as api:
            kubeconfig = api.write_kubeconfig(root / "kubeconfig")
            api.put(application_object())
            for run in range(options.runs):
                api.put(virtual_service_object())
                reset_to_canary(work, 1000 + run)
                started, result = rollback(remote, result_file, "--live-patch", "--kubeconfig", str(kubeconfig))
                assert result["live_patch"]["outcome"] == "patched"
                to_live.append(result["live_patch"]["patched_at"] - started)
                live_push.append(result["live_patch"]["patched_at"] - result["pushed_at"])
            api.set_argocd_behaviour("argocd", "reviews", "sync", delay_s=0.1)
            for run in range(options.runs):
                api.put(virtual_service_object())
                reset_to_canary(work, 2000 + run)
                started, result = rollback(
                    remote, result_file, "--live-patch", "--kubeconfig", str(kubeconfig), "--argocd-app", "reviews"
                )
                assert result["argocd"]["outcome"] == "synced", result["argocd"]
                to_synced.append(result["_exit"] - started)
    startup: list[float] = []
    for _ in range(options.runs):
        started = time.time()
        subprocess.run([ROLLGUARD, "rollback", "--help"], env=ENV, capture_output=True, check=True, timeout=60)
        startup.append(time.time() - started)
    print(f"rollguard rollback against a local bare repository ({options.runs} runs each, {os.cpu_count()} CPUs)")
    print(describe("`rollguard rollback --help` (Python start-up)", startup))
    print(describe("start -> pushed commit (Git only)", to_push))
    print(describe("start -> process exit (Git only)", to_exit))
    print(describe("start -> live VirtualService patched", to_live))
    print(describe("pushed commit -> live patch", live_push))
    print(describe("start -> ArgoCD synced (fake, 0.1 s sync)", to_synced))


if __name__ == "__main__":
    main()
