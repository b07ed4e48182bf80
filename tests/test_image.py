"""The step image, as far as it can be checked without a Docker engine.

The Dockerfile's structure, a setuptools build of exactly the build stage's context, the installed
`rollguard` entry point, and images/requirements.txt against what the step commands import.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "images" / "Dockerfile"
REQUIREMENTS = REPO / "images" / "requirements.txt"
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
# prometheus-api-client needs dateparser only for its date-range helpers (utils.parse_datetime);
# rollguard calls PrometheusConnect.custom_query alone (test below: nothing imports dateparser).
UNUSED_BY_STEPS = {"dateparser"}


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


def test_dockerfile_is_multi_stage_on_slim_python_and_runs_as_non_root() -> None:
    steps = instructions()
    assert ("ARG", "PYTHON_IMAGE=python:3.12-slim") in steps
    froms = [args for kind, args in steps if kind == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    runtime = steps[[kind for kind, _ in steps].index("FROM", 2) :]
    users = [args for kind, args in runtime if kind == "USER"]
    assert users == ["65532:65532"]
    last_user = max(i for i, (kind, _) in enumerate(runtime) if kind == "USER")
    assert all(kind not in ("RUN", "COPY") for kind, _ in runtime[last_user:]), "nothing runs as root after USER"
    apt = next(args for kind, args in runtime if kind == "RUN" and "apt-get install" in args)
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists/*" in apt
    assert {"git", "ca-certificates", "openssh-client"} <= set(apt.split())
    assert ("ENTRYPOINT", '["rollguard"]') in runtime
    install = next(args for kind, args in runtime if kind == "RUN" and "pip" in args)
    assert "--no-deps -r /tmp/requirements.txt" in install and "--no-cache-dir" in install
    assert "kubernetes/aio" in install and "rollguard --help" in install


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
        missing = requires - set(pins) - ASYNC_ONLY - UNUSED_BY_STEPS
        assert not missing, f"{name} needs {sorted(missing)}, which --no-deps would leave out"


def test_the_query_path_never_imports_what_the_image_leaves_out() -> None:
    code = (
        "import sys\n"
        "from rollguard.steps.metrics.prometheus_client import PrometheusQuerier\n"
        "querier = PrometheusQuerier('http://127.0.0.1:9', timeout_s=0.2, attempts=1)\n"
        "try:\n"
        "    querier._query_once('up')\n"
        "except Exception:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dateparser', 'numpy', 'pandas')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


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
