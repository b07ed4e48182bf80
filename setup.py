"""Packaging layout: each top-level code folder becomes a subpackage of the `rollguard` namespace.

steps/ -> rollguard.steps, workflows/ -> rollguard.workflows, sandbox/ -> rollguard.sandbox,
experiment/ -> rollguard.experiment. `rollguard` itself has no __init__.py (a namespace package), so
nothing named `steps` or `workflows` is ever installed at the top of site-packages.
"""

from setuptools import find_packages, setup

CODE_FOLDERS = ["steps", "workflows", "sandbox", "experiment"]

setup(
    packages=[f"rollguard.{name}" for name in find_packages(include=[f"{top}*" for top in CODE_FOLDERS])],
    package_dir={f"rollguard.{top}": top for top in CODE_FOLDERS},
)
