"""The flags of each step command, read from its argparse parser, as Argo parameter specifications.

Step templates are built from these, so "every CLI flag is a workflow parameter with the same
default" holds by construction: a new flag in a step module appears in the rendered YAML (and in
the golden-file diff) without anyone editing the workflow code.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rollguard.steps.cli import COMMANDS
from rollguard.steps.options import ENV_PREFIX, env_name


class RenderError(RuntimeError):
    """The workflows cannot be rendered (a step module is missing or has a flag we cannot map)."""


class InvalidDefault(RenderError):
    """A default for a parameter no workflow has, or a value the step would refuse (`--set`, settings)."""


@dataclass(frozen=True)
class FlagParameter:
    """One CLI flag as an Argo input parameter: `--max-error-rate` -> `max-error-rate`, env and default."""

    name: str
    flag: str
    env: str
    default: str
    help: str
    choices: tuple[str, ...] = ()
    required: bool = False
    convert: Callable[[str], Any] | None = field(default=None, compare=False, repr=False)

    def check(self, value: str) -> None:
        """Refuse a value the step would refuse (not one of the choices, or its type rejects it)."""
        if self.choices and value not in self.choices:
            raise InvalidDefault(f"{self.name}={value!r} is not one of {', '.join(self.choices)}")
        if self.convert is not None and value != "":
            try:
                self.convert(value)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise InvalidDefault(f"{self.name}={value!r}: {exc}") from None

    @property
    def reference(self) -> str:
        """`{{inputs.parameters.NAME}}` inside the template that declares this parameter."""
        return "{{inputs.parameters." + self.name + "}}"


@contextmanager
def _without_rollguard_environment() -> Iterator[None]:
    """Hide ROLLGUARD_* variables while parsers are built: defaults must be the code's, not this shell's."""
    saved = {key: value for key, value in os.environ.items() if key.startswith(ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def _default_text(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "false"
    default = action.default
    if default is None:
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def _clean_help(text: str | None) -> str:
    """The flag's help without the `(default: ...; env ...)` tail that add_flag appends."""
    text = text or ""
    for marker in (" (default: ", " (env "):
        if marker in text:
            text = text[: text.index(marker)]
    return text.replace("%%", "%").strip()  # argparse help escapes a percent sign as %%


def command_parameters(command: str) -> list[FlagParameter]:
    """Every flag of `rollguard COMMAND`, in the order the command declares them."""
    if command not in COMMANDS:
        raise RenderError(f"rollguard has no command {command!r}; known: {', '.join(COMMANDS)}")
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RenderError(
            f"cannot render: the step module {module_name} (command {command!r}) does not import: {exc}"
        ) from exc
    parser = argparse.ArgumentParser(prog=f"rollguard {command}")
    with _without_rollguard_environment():
        module.add_arguments(parser)
    return parameters_of(parser, command)


def parameters_of(parser: argparse.ArgumentParser, command: str) -> list[FlagParameter]:
    """Map a parser's optional flags onto parameters; refuse flags that cannot be an env variable."""
    found: list[FlagParameter] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        long_flags = [option for option in action.option_strings if option.startswith("--")]
        if not long_flags:
            raise RenderError(
                f"rollguard {command}: argument {action.dest!r} has no --flag; every step input must be a "
                "--flag so Argo can pass it as a ROLLGUARD_* variable"
            )
        if not isinstance(action, (argparse._StoreAction, argparse._StoreTrueAction)):
            raise RenderError(
                f"rollguard {command} {long_flags[0]}: action {type(action).__name__} cannot be set from one "
                "environment variable; use add_flag or add_switch"
            )
        flag = long_flags[0]
        found.append(
            FlagParameter(
                name=flag[2:],
                flag=flag,
                env=env_name(flag),
                default=_default_text(action),
                help=_clean_help(action.help),
                choices=tuple(str(choice) for choice in action.choices or ()),
                required=bool(action.required),
                convert=action.type if callable(action.type) else None,
            )
        )
    return found
