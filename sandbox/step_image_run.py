"""Run a step inside the unpacked step image, as a container runtime would, and the local executor's hook for it.

`step_command(image, argv, tmp_dir=...)` is the command line that runs one container step inside
the image's root filesystem (rollguard.sandbox.step_image unpacks it): in its own mount namespace
(`unshare`), with its own /tmp (a host folder), /proc, a few devices and the host's /etc/hosts and
/etc/resolv.conf bound in, `chroot` as the image's user (65532), in the image's working directory,
on the host's network (loopback included). The step's environment is passed through the process
environment (never on a command line): `step_environment` gives the image's own variables (PATH,
HOME...) under the container's.

`ImageSteps` is what `rollguard run-local --step-image` and `rollguard demo --step-image` hand the
local executor (its ContainerImage): each pod's fresh directory becomes the container's /tmp,
which the image makes its HOME, TMPDIR (unset: /tmp) and working directory (WORKDIR /tmp).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from rollguard.sandbox.executor.errors import ExecutorError
from rollguard.sandbox.executor.pod import Pod
from rollguard.sandbox.step_image import DEVICES, HOST_FILES, StepImage, StepImageError

CONTAINER_TMP = PurePosixPath("/tmp")  # where a pod's fresh directory is inside the image


def step_environment(image: StepImage, declared: Mapping[str, str]) -> dict[str, str]:
    """The environment a container gets: the image's variables, then the template's on top."""
    return {**image.env, **declared}


def host_tools() -> dict[str, str]:
    """This machine's unshare, mount and chroot (StepImageError naming the missing ones)."""
    tools = {name: shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") for name in ("unshare", "mount", "chroot")}
    missing = [name for name, found in tools.items() if found is None]
    if missing:
        raise StepImageError(f"--step-image needs {', '.join(missing)} (util-linux, coreutils) on this machine")
    return {name: str(found) for name, found in tools.items()}


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
    tools = host_tools()
    root = image.rootfs
    _own_tmp(Path(tmp_dir), image.user)
    q = shlex.quote
    mount = q(tools["mount"])
    lines = [
        "set -e",
        f"{mount} --bind {q(str(tmp_dir))} {q(str(root / 'tmp'))}",
        f"{mount} -t proc proc {q(str(root / 'proc'))}",
    ]
    for device in DEVICES:
        if Path("/dev", device).exists():
            lines.append(f"{mount} --bind /dev/{device} {q(str(root / 'dev' / device))}")
    for host_file in HOST_FILES:
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
        chrooted = [tools["chroot"], str(root), *user]
    else:
        chrooted = [tools["chroot"], f"--userspec={image.user}", str(root)]
    chrooted += ["/usr/bin/env", "-u", "PWD", "-u", "OLDPWD", "-C", workdir or image.workdir or "/", "--", *command]
    lines.append("exec " + shlex.join(chrooted))
    return [tools["unshare"], "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines)]


def _own_tmp(tmp_dir: Path, user: str) -> None:
    uid, gid = (int(part) for part in user.split(":", 1))
    tmp_dir.mkdir(parents=True, exist_ok=True)
    os.chown(tmp_dir, uid, gid)
    tmp_dir.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


class ImageSteps:
    """The local executor's ContainerImage for a step image: each pod's container runs inside it.

    The pod's fresh directory (one per attempt) is the container's /tmp, owned by the image's user;
    the environment is the image's variables under the pod's container environment (its template's
    env and Argo's variables, nothing of this machine's). A path of the pod's directory in an
    argument or a variable (a Secret volume's copy) is rewritten to where the container sees it.
    Each path of `binds` is bound at the same path inside (the demo's run folder).
    """

    def __init__(self, image: StepImage, binds: Sequence[Path] = ()) -> None:
        host_tools()  # StepImageError before anything runs
        self.image = image
        self.binds = [Path(path).resolve() for path in binds]

    def command(self, argv: list[str], pod: Pod) -> tuple[list[str], dict[str, str]]:
        """The host command and environment that run `argv` (command + args) in the pod's container."""
        inside = [self._inside(part, pod) for part in argv]
        declared = {key: self._inside(value, pod) for key, value in pod.container_environment.items()}
        try:
            command = step_command(self.image, inside, tmp_dir=pod.directory.absolute(), binds=self.binds)
        except (StepImageError, OSError) as exc:
            raise ExecutorError(f"cannot run the step in the step image {self.image.archive}: {exc}") from None
        return command, step_environment(self.image, declared)

    def host_path(self, path: Path, pod: Pod) -> Path:
        """Where this machine finds what the container sees at `path`: /tmp is the pod's directory."""
        inside = PurePosixPath(str(path))
        if any(inside == PurePosixPath(bind) or PurePosixPath(bind) in inside.parents for bind in self.binds):
            return path  # a bound path, mounted over the container's /tmp
        if inside == CONTAINER_TMP or CONTAINER_TMP in inside.parents:
            return pod.directory / str(inside.relative_to(CONTAINER_TMP))
        return path

    def _inside(self, value: str, pod: Pod) -> str:
        directory = str(pod.directory)
        if value == directory or value.startswith(directory + "/"):
            return str(CONTAINER_TMP) + value[len(directory):]
        return value
