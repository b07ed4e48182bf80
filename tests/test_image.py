"""The step image's recipe, checked without building it (tests/test_step_image.py runs the built image).

The Dockerfile against the engine-less build (images/build.py): the same Debian suite, package list,
requirements, finishing script and image config; a setuptools build of exactly the wheel's context;
the installed `rollguard` entry point; images/requirements.txt against what the step commands import.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "images"
DOCKERFILE = IMAGES / "Dockerfile"
REQUIREMENTS = IMAGES / "requirements.txt"
STEP_MODULES = [
    "rollguard.steps.cli",
    "rollguard.steps.analyze.command",
    "rollguard.steps.deploy",
    "rollguard.steps.promote",
    "rollguard.steps.rollback",
    "rollguard.steps.status",
    "rollguard.steps.schedule",
    "rollguard.steps.notify.command",
    "rollguard.steps.history",
    "rollguard.steps.finish",
]
# kubernetes.dynamic imports kubernetes_validate when it happens to be installed (a test tool here).
OPTIONAL_IMPORTS = {"kubernetes-validate"}
# Requirements of kubernetes that only its async copy (kubernetes/aio, deleted in the image) needs.
ASYNC_ONLY = {"aiohttp", "aiohttp-retry"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(pending.strip())
            pending = ""
    return [(text.split(" ", 1)[0].upper(), text.split(" ", 1)[1] if " " in text else "") for text in joined]


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def image_requirements() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[normalize(name)] = version.strip()
    return pins


def closure(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        current = normalize(todo.pop())
        if current in seen:
            continue
        seen.add(current)
        for text in metadata.distribution(current).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def load_build_script() -> Any:
    """images/build.py as a module (the engine-less build; importing it runs nothing)."""
    spec = importlib.util.spec_from_file_location("image_build", IMAGES / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stages() -> dict[str, list[tuple[str, str]]]:
    """The Dockerfile's instructions by stage name ("final" for the last, unnamed one)."""
    found: dict[str, list[tuple[str, str]]] = {}
    current = "preamble"
    for kind, args in instructions():
        if kind == "FROM":
            current = args.split(" AS ")[1] if " AS " in args else "final"
        found.setdefault(current, []).append((kind, args))
    return found


def test_dockerfile_builds_on_the_same_debian_suite_in_stages_and_runs_as_non_root() -> None:
    build = load_build_script()
    steps = instructions()
    assert ("ARG", f"DEBIAN=debian:{build.SUITE}-slim") in steps
    assert [args for kind, args in steps if kind == "FROM"] == ["${DEBIAN} AS python", "${DEBIAN} AS rootfs", "scratch"]
    python, rootfs, final = stages()["python"], stages()["rootfs"], stages()["final"]
    # python: the wheel of exactly the build script's context, the pins unpacked with --no-deps
    copied = [args.split()[:-1] for kind, args in python if kind == "COPY"]
    assert sorted(source.rstrip("/") for sources in copied[:2] for source in sources) == sorted(build.WHEEL_CONTEXT)
    pip = next(args for kind, args in python if kind == "RUN" and "pip install" in args)
    for flag in ("--no-deps", "--no-compile", "--only-binary=:all:", "--no-cache-dir", "-r images/requirements.txt",
                 '--target "$site"'):  # fmt: skip
        assert flag in pip
    assert "/opt/rollguard/lib/$(readlink /usr/bin/python3)/site-packages" in pip
    # rootfs: packages.txt without recommends nor docs, then finish.sh, which the engine-less build runs too
    assert ("COPY", "images/dpkg-nodoc.cfg /etc/dpkg/dpkg.cfg.d/rollguard-nodoc") in rootfs
    apt = next(args for kind, args in rootfs if kind == "RUN" and "apt-get install" in args)
    assert "--no-install-recommends $(grep -v '^#' /tmp/image/packages.txt)" in apt
    assert "rm -rf /var/lib/apt/lists/*" in apt
    assert ("COPY", "--from=python /opt/rollguard/ /opt/rollguard/") in rootfs
    assert ("RUN", "sh /tmp/image/finish.sh && rm -rf /tmp/image " + " ".join(build.APT_LEFTOVERS)) in rootfs
    # the image: that root filesystem as one layer, with the engine-less build's config
    assert final[1] == ("COPY", "--from=rootfs / /") and [kind for kind, _ in final].count("COPY") == 1
    env = next(args for kind, args in final if kind == "ENV")
    assert dict(item.split("=", 1) for item in env.split()) == build.ENV
    assert [args for kind, args in final if kind == "USER"] == [build.USER]
    assert ("WORKDIR", build.WORKDIR) in final
    assert ("ENTRYPOINT", json.dumps(build.ENTRYPOINT)) in final and ("CMD", json.dumps(build.CMD)) in final
    assert all(kind not in ("RUN", "COPY") for kind, _ in final[final.index(("USER", build.USER)):])


def test_the_local_executor_s_stand_in_for_the_image_sets_what_the_image_sets() -> None:
    from rollguard.sandbox.executor.pod import IMAGE_ENVIRONMENT

    build = load_build_script()
    assert IMAGE_ENVIRONMENT.items() <= build.ENV.items()
    assert set(build.ENV) - set(IMAGE_ENVIRONMENT) == {"PATH", "HOME"}, "the executor sets PATH and HOME per pod"


def test_both_builds_use_one_package_list_one_requirements_file_and_one_finishing_script() -> None:
    build = load_build_script()
    source = (IMAGES / "build.py").read_text(encoding="utf-8")
    for name in ("packages.txt", "requirements.txt", "finish.sh", "dpkg-nodoc.cfg"):
        assert f"images/{name}" in DOCKERFILE.read_text(encoding="utf-8")
        assert f'IMAGES / "{name}"' in source or f"IMAGES / '{name}'" in source
    listed = [line for line in (IMAGES / "packages.txt").read_text(encoding="utf-8").splitlines()
              if line.strip() and not line.startswith("#")]  # fmt: skip
    assert build.debian_packages() == listed
    assert {"python3", "git", "openssh-client", "ca-certificates"} <= set(listed)
    assert build.PYTHON_VERSION == {"bookworm": "3.11"}[build.SUITE], "Debian's python3 of the suite"


def test_finish_script_adds_a_passwd_entry_for_65532_and_no_login() -> None:
    script = (IMAGES / "finish.sh").read_text(encoding="utf-8")
    assert "groupadd --gid 65532 rollguard" in script
    useradd = script[script.index("useradd"):].split("\n\n")[0]
    for flag in ("--uid 65532", "--gid 65532", "--home-dir /tmp", "--shell /usr/sbin/nologin", "--no-log-init"):
        assert flag in useradd


def test_every_copy_source_exists_and_dockerignore_keeps_them() -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for kind, args in instructions():
        if kind == "COPY" and not args.startswith("--from"):
            *sources, _target = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                assert source.rstrip("/").split("/")[0] not in ignored, f"{source} is excluded by .dockerignore"


def source_imports() -> set[str]:
    """Top-level names of every module the step code imports anywhere, also inside functions (lazy imports)."""
    names: set[str] = set()
    for path in (REPO / "steps").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_requirements_cover_every_import_of_the_step_commands() -> None:
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {STEP_MODULES!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({n.split('.')[0] for n in set(sys.modules) - before})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = sorted(set(json.loads(done.stdout)) | source_imports())
    assert "kubernetes" in imported, "lazy imports inside functions must be seen too"
    assert not any(name in ("aiohttp",) for name in imported)
    assert "kubernetes.aio" not in done.stdout
    owners = metadata.packages_distributions()
    optional = set().union(*(closure(name) for name in OPTIONAL_IMPORTS))
    needed: set[str] = set()
    for module in imported:
        if module in sys.stdlib_module_names or module.startswith("_") or module in ("rollguard", "cython_runtime"):
            continue
        assert module in owners, f"{module} belongs to no installed distribution"
        needed.update(normalize(d) for d in owners[module])
    pins = image_requirements()
    assert needed - optional <= set(pins), f"add to images/requirements.txt: {sorted(needed - optional - set(pins))}"


def test_requirements_are_closed_and_agree_with_pyproject() -> None:
    pins = image_requirements()
    declared = {
        normalize(r.name): r
        for r in map(Requirement, metadata.distribution("rollguard").requires or [])
        if r.marker is None
    }
    for name in ("kubernetes", "ruamel-yaml", "tenacity"):
        assert declared[name].specifier.contains(pins[name]), f"{name}=={pins[name]} against {declared[name]}"
    for name in pins:
        requires = {normalize(r.name) for r in map(Requirement, metadata.distribution(name).requires or [])
                    if r.marker is None or r.marker.evaluate({"extra": ""})}  # fmt: skip
        missing = requires - set(pins) - ASYNC_ONLY
        assert not missing, f"{name} needs {sorted(missing)}, which --no-deps would leave out"


def test_the_prometheus_client_needs_only_the_standard_library_and_tenacity() -> None:
    """Queries, retries included, go through http.client: no Prometheus client library in the image."""
    code = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "from rollguard.steps.metrics.prometheus_client import PrometheusQuerier\n"
        "querier = PrometheusQuerier('http://127.0.0.1:9', timeout_s=0.2, attempts=2)\n"
        "querier.vector('up')\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imported = {name for name in json.loads(done.stdout) if name not in sys.stdlib_module_names}
    assert imported - {"rollguard"} == {"tenacity"}, imported
    assert "prometheus-api-client" not in image_requirements() and "dateparser" not in image_requirements()


def test_subprocess_check_that_kubernetes_aio_is_never_imported() -> None:
    code = (
        "import sys, kubernetes, kubernetes.client, kubernetes.config, kubernetes.dynamic\n"
        "import rollguard.steps.gitops.kube_api, rollguard.steps.gitops.argocd, rollguard.steps.gitops.live_patch\n"
        "print([m for m in sys.modules if m.startswith(('kubernetes.aio', 'aiohttp'))])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """Files and entry points setuptools builds from exactly what the Dockerfile's build stage copies.

    (`pip wheel` would need the `wheel` package or network for build isolation; setuptools' own
    build + egg_info steps produce the same package files and entry points.)
    """
    context = tmp_path_factory.mktemp("context")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, context / name)
    shutil.copytree(REPO / "steps", context / "steps", ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", "meta", "build", "--build-base", "out"]
    (context / "meta").mkdir()
    done = subprocess.run(command, cwd=context, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    library = context / "out" / "lib"
    files = sorted(str(path.relative_to(library)) for path in library.rglob("*") if path.is_file())
    entry_points = next((context / "meta").glob("*.egg-info")) / "entry_points.txt"
    return files, entry_points.read_text(encoding="utf-8")


def test_the_build_holds_the_steps_and_the_rollguard_entry_point(built: tuple[list[str], str]) -> None:
    files, entry_points = built
    assert "rollguard = rollguard.steps.cli:main" in entry_points
    assert "rollguard/steps/cli.py" in files and "rollguard/steps/schedule.py" in files
    assert "rollguard/steps/gitops/kube_api.py" in files
    assert not any(n.startswith(("rollguard/sandbox/", "rollguard/experiment/", "tests/")) for n in files)
    assert "rollguard/__init__.py" not in files  # `rollguard` stays a namespace package


def test_installed_entry_point_runs_help_and_lists_the_steps() -> None:
    script = Path(sys.executable).parent / "rollguard"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    for command in ("analyze", "deploy", "promote", "rollback", "status", "next-weight"):
        assert command in done.stdout


def test_core_dependencies_are_exactly_what_the_step_image_installs_for_rollguard() -> None:
    """pyproject's core dependencies (no extra) name the same packages as the image's top-level pins:
    the Hera renderer and the sandbox are extras, so a plain install is what a step pod runs."""
    core = {
        normalize(r.name)
        for r in map(Requirement, metadata.distribution("rollguard").requires or [])
        if r.marker is None
    }
    pins = image_requirements()
    # The image's direct requirements are the pins no other pin requires.
    required_by_pins = {
        normalize(r.name)
        for name in pins
        for r in map(Requirement, metadata.distribution(name).requires or [])
        if r.marker is None or r.marker.evaluate({"extra": ""})
    }
    assert core == set(pins) - required_by_pins, "core dependencies and images/requirements.txt disagree"
    assert "hera" not in core and "matplotlib" not in core and "rich" not in core
