"""Shared command-line plumbing: flags settable from ROLLGUARD_<NAME>, durations, typed values.

Every flag `--some-flag` can also be given as the environment variable `ROLLGUARD_SOME_FLAG`, so
Argo workflow parameters map one to one onto the environment of a step container.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

ENV_PREFIX = "ROLLGUARD_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class UsageError(Exception):
    """Bad input from the user: names the flag (or file and line) and the fix. Exit code 2."""


def is_utf8_text(text: str) -> bool:
    """False when the text holds bytes that were not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def env_name(flag: str) -> str:
    """Environment variable that sets `flag`: `--max-error-rate` -> `ROLLGUARD_MAX_ERROR_RATE`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def parse_duration(text: str) -> float:
    """Parse `500ms`, `1s`, `2m`, `1h` (or a bare number of seconds) into seconds."""
    stripped = str(text).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        return float(stripped)
    match = _DURATION.match(stripped)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write it like 500ms, 5s, 2m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def format_duration(seconds: float) -> str:
    """Render seconds the way Prometheus and the flags accept them (`1500ms`, `5s`, `2m`)."""
    if math.isinf(seconds):
        return "forever"
    if seconds >= 60 and float(seconds / 60).is_integer():
        return f"{int(seconds // 60)}m"
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def positive_duration(text: str) -> float:
    """argparse type: a duration strictly greater than zero."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than zero (for example 1s)")
    return seconds


def non_negative_duration(text: str) -> float:
    """argparse type: a duration that may be zero (`0s`, `30s`, `1m`)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_or_forever(text: str) -> float:
    """argparse type: a positive duration, or `0` / `forever` for none (math.inf: watch until stopped)."""
    if str(text).strip().lower() == "forever":
        return math.inf
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or 0 / forever for an open-ended analysis") from None
    return math.inf if seconds == 0 else seconds


def unix_time(text: str) -> float:
    """argparse type: a moment as Unix seconds (`1764400000.5`) or ISO 8601 with a zone (`2026-11-29T09:40:00Z`)."""
    stripped = str(text).strip()
    try:
        return float(stripped)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time; write Unix seconds or ISO 8601 like "
                                         "2026-11-29T09:40:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z (UTC) or an offset like +01:00")
    return moment.timestamp()


def fraction(text: str) -> float:
    """argparse type: a number between 0 and 1 inclusive (0.01 means 1 %)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; write a fraction like 0.01 for 1 %") from None
    if not 0.0 <= value <= 1.0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} is outside 0..1; it is a fraction (0.01 means 1 %)")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be zero or more")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a count of runs, attempts, failed checks)."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def percent_weight(text: str) -> int:
    """argparse type: a traffic weight, a whole number from 0 to 100."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 100") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is outside 0..100; a weight is a percentage")
    return value


def env_bool(text: str) -> bool:
    """Parse a boolean from the environment (`true`, `1`, `yes` / `false`, `0`, `no`, empty)."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")


def add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    flag: str,
    *,
    default: Any = None,
    type: Callable[[str], Any] = str,
    help: str = "",
    choices: list[str] | None = None,
    required: bool = False,
    action: type[argparse._StoreAction] = argparse._StoreAction,
) -> None:
    """Add `--flag` whose default comes from ROLLGUARD_<FLAG> when that variable is set.

    `action` may be a subclass of argparse's store action (one value per use, so one environment
    variable still sets it), e.g. one that collects the values of repeated uses.

    A value from the environment goes through the same `type` and `choices` checks as one typed on
    the command line, and an error names both the variable and the flag.
    """
    variable = env_name(flag)
    raw = os.environ.get(variable)
    if raw is not None and raw != "":
        try:
            value = type(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise UsageError(f"{variable} (flag {flag}): {exc}") from None
        if choices is not None and value not in choices:
            raise UsageError(f"{variable} (flag {flag}): {raw!r} is not one of {', '.join(choices)}")
        default, required = value, False
    shown = "" if default is None else f" (default: {default}; env {variable})"
    if not shown:
        shown = f" (env {variable})"
    parser.add_argument(
        flag, action=action, default=default, type=type, choices=choices, required=required, help=help + shown
    )


def add_switch(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flag: str, *, help: str) -> None:
    """Add an on/off `--flag` that ROLLGUARD_<FLAG>=true also turns on."""
    variable = env_name(flag)
    raw = os.environ.get(variable, "")
    try:
        default = env_bool(raw)
    except ValueError as exc:
        raise UsageError(f"{variable} (flag {flag}): {exc}") from None
    parser.add_argument(flag, action="store_true", default=default, help=f"{help} (env {variable})")


def check_output_files(args: argparse.Namespace, *destinations: str) -> None:
    """Refuse, before anything is changed, an output file (e.g. `result_file`) whose directory is missing
    or not writable: a step must not push a commit and then fail to report it."""
    for destination in destinations:
        value = getattr(args, destination, None)
        if not value:
            continue
        directory = os.path.dirname(os.path.abspath(value))
        flag = "--" + destination.replace("_", "-")
        if not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
            raise UsageError(f"{flag} {value}: directory {directory} does not exist or is not writable")
        if os.path.isdir(value):
            raise UsageError(f"{flag} {value} is a directory; name a file in it, e.g. {os.path.join(value, 'out')}")
