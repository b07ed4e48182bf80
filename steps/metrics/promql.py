"""Safe PromQL building blocks: string escaping for label values, label selectors, range windows."""

from __future__ import annotations

import re

from rollguard.steps.options import format_duration

_WINDOW = re.compile(r"^\d+(ms|s|m|h)$")
_REGEX_SPECIAL = re.compile(r"[\\.+*?()|\[\]{}^$]")


def escape_label_value(value: str) -> str:
    """Escape a value for a PromQL double-quoted string (backslash, double quote, newline)."""
    return escape_quoted(value, '"')


def escape_quoted(value: str, quote: str) -> str:
    """Escape a value for a PromQL string in `quote` (" or '): backslash, that quote, newline."""
    return str(value).replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\n")


def regex_alternatives(values: list[str]) -> str:
    """`v1\\.2|unknown`: a regex (RE2, as PromQL's `=~` reads it) matching exactly these values, metacharacters
    escaped; escape the result with `escape_label_value` like any other label value."""
    return "|".join(_REGEX_SPECIAL.sub(r"\\\g<0>", value) for value in values)


def selector(labels: dict[str, str], extra: str = "") -> str:
    """`{a="x",b="y"}` with escaped values, in the given order; `extra` matchers are appended verbatim."""
    matchers = [f'{name}="{escape_label_value(value)}"' for name, value in labels.items()]
    if extra:
        matchers.append(extra)
    return "{" + ",".join(matchers) + "}"


def range_window(window: str | float) -> str:
    """A PromQL range like `1m` from seconds or an already formatted duration; refuses anything else."""
    text = format_duration(float(window)) if isinstance(window, (int, float)) else str(window).strip()
    if not _WINDOW.match(text) or text.startswith("0"):
        raise ValueError(f"{window!r} is not a PromQL range window; write it like 30s, 1m or 1500ms")
    return text
