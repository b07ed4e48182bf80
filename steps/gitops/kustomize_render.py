"""The optional render check: build the Kustomize overlay after the edit and read the VirtualService's weights
from what ArgoCD would apply, before anything is pushed.

`kustomize build` or `kubectl kustomize` renders locally (no cluster). Without either, or for a layout
that is not a kustomization, the check is skipped and says so; `--render-check always` makes a
missing tool or a failed render a refusal, `never` turns the check off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rollguard.steps.traffic.manifest_errors import ManifestError
from rollguard.steps.traffic.virtualservice import read_split

RENDER_CHECK_CHOICES = ["auto", "always", "never"]
RENDER_TIMEOUT_S = 60.0


class RenderCheckFailed(ManifestError):
    """The overlay does not render, or renders other weights than intended: nothing is pushed."""


@dataclass(frozen=True)
class RenderCheck:
    """What the check did: `passed`, `skipped` or `failed`, and a sentence saying why."""

    outcome: str
    detail: str


def render_command() -> list[str] | None:
    """The command that renders a kustomization directory here: kustomize build, else kubectl kustomize."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(clone_dir: Path, overlay: str, command: list[str], timeout_s: float = RENDER_TIMEOUT_S) -> str:
    """The rendered YAML of the overlay directory; RenderCheckFailed (with the tool's message) if it fails."""
    shown = f"`{' '.join(command)} {overlay or '.'}`"
    try:
        completed = subprocess.run(
            [*command, overlay or "."], cwd=clone_dir, capture_output=True, text=True, timeout=timeout_s, check=False,
            env={key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "TMPDIR")},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RenderCheckFailed(f"render check: {shown} did not finish within {timeout_s:g} s") from None
    if completed.returncode != 0:
        message = " ".join(completed.stderr.split())[:500]
        raise RenderCheckFailed(f"render check: {shown} failed: {message}")
    return completed.stdout


def check_rendered(
    clone_dir: Path,
    overlay: str | None,
    mode: str,
    virtual_service: str,
    subsets: tuple[str, str],
    routes: tuple[str, ...],
    wanted: tuple[int, int],
) -> RenderCheck:
    """Render the overlay (with the edit written into the clone) and compare its VirtualService's split with
    `wanted` (stable, canary). RenderCheckFailed on a mismatch, or (mode `always`) when it cannot run."""
    if mode == "never":
        return RenderCheck("skipped", "render check turned off (--render-check never)")
    if overlay is None:
        detail = "render check skipped: the file is not a patch of a Kustomize overlay (nothing to render)"
        if mode == "always":
            raise RenderCheckFailed(f"{detail}; --render-check always asks for one")
        return RenderCheck("skipped", detail)
    command = render_command()
    if command is None:
        detail = "render check skipped: neither kustomize nor kubectl is installed here"
        if mode == "always":
            raise RenderCheckFailed(f"{detail}; --render-check always asks for one")
        return RenderCheck("skipped", detail)
    try:
        rendered = render(clone_dir, overlay, command)
    except RenderCheckFailed as exc:  # a remote base out of reach, say: the edit itself may be fine
        if mode == "always":
            raise
        return RenderCheck("skipped", f"{exc} (so the check was skipped; --render-check always would refuse)")
    shown = f"`{' '.join(command)} {overlay or '.'}`"
    try:
        stable, canary = read_split(rendered, virtual_service, subsets[0], subsets[1], routes)
    except ManifestError as exc:
        raise RenderCheckFailed(f"render check: in the output of {shown}, {exc}") from None
    if (stable, canary) != wanted:
        raise RenderCheckFailed(
            f"render check: {shown} renders VirtualService {virtual_service!r} with {subsets[0]} {stable} %, "
            f"{subsets[1]} {canary} %, not the intended {wanted[0]} % / {wanted[1]} % (does another patch of the "
            "overlay set these weights too?)"
        )
    weights = f"{subsets[0]} {stable} %, {subsets[1]} {canary} %"
    return RenderCheck("passed", f"render check passed: {shown} renders {weights}")
