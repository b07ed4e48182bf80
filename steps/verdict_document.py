"""The verdict document: what `analyze` writes and `rollback`, the workflows, the demo and the benchmarks read.

Three shapes on disk, one reader:
- the full verdict (`--verdict-file`): verdict, reason, times, the failed check, every check, the settings;
- its summary (`--verdict-summary-file`, an Argo parameter): the same without the per-check list, with
  `check_count` and `last_check`, so its size does not grow with the bake time;
- the "no verdict" placeholder the workflows pass on when analyze wrote none (crashed, bad flags,
  the workflow died): `{"verdict": "error", ...}`, whose word `error` is no Verdict and rolls back.

`format_version` says which format wrote a file. A file without it is version 1 (written before the
field existed). Versions only add fields: a reader takes the fields it knows from any version, so a
newer step reads an older verdict, and an older step a newer one. Version 2 added `first_breach_at`
(the first check at which the deciding metric was over its limit, for the breach -> cut time) and
`failed_check.samples`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollguard.steps.judgment.outcomes import MetricOutcome, Verdict

FORMAT_VERSION = 2
NO_VERDICT_WORD = "error"  # the verdict word when analyze wrote none; every `when` treats it as a failure

CheckRecord = dict[str, Any]  # one check as analyze records it: times, counts, every metric's outcome
# A metric phase that means "over its limit at this check" (judgment.outcomes.Phase values).
OVER_LIMIT_PHASES = ("suspect", "breach", "failed")


class VerdictFormatError(ValueError):
    """A JSON document that is not a verdict; the message names the field."""


@dataclass(frozen=True)
class FailedCheck:
    """The evidence of a verdict: the metric that decided it, its value and limit, in words."""

    metric: str
    value: float | None  # null in JSON when the metric had no finite value (NaN, no data)
    threshold: float | None
    detail: str
    samples: int | None = None  # requests behind the value, when it is a share of requests (version 2)

    @classmethod
    def from_outcome(cls, outcome: MetricOutcome) -> FailedCheck:
        """The evidence from the metric outcome that decided the verdict."""
        return cls(outcome.metric, _finite(outcome.value), _finite(outcome.threshold), outcome.detail,
                   outcome.samples)

    def to_json(self) -> dict[str, Any]:
        """The evidence as the verdict file holds it."""
        return {"metric": self.metric, "value": self.value, "threshold": self.threshold, "detail": self.detail,
                "samples": self.samples}

    @classmethod
    def from_json(cls, data: Any) -> FailedCheck:
        """Read the `failed_check` object; unknown fields are ignored."""
        if not isinstance(data, dict):
            raise VerdictFormatError(f"failed_check is {type(data).__name__}, not an object")
        samples = data.get("samples")
        return cls(str(data.get("metric", "")), _number(data.get("value")), _number(data.get("threshold")),
                   str(data.get("detail") or ""),
                   samples if isinstance(samples, int) and not isinstance(samples, bool) else None)


@dataclass(frozen=True)
class VerdictHeadline:
    """What every verdict file says, full or summary: the verdict, why, when, on what evidence, with what settings."""

    verdict: Verdict
    reason: str
    started_at: float | None  # Unix time; null only in a hand-written file
    decided_at: float | None
    failed_check: FailedCheck | None  # the evidence of a fail on a metric; null for every other verdict
    settings: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # Unix time of the first check at which the deciding metric was over its limit; null when none was.
    first_breach_at: float | None = None

    @property
    def judge(self) -> str:
        """The rule that judged (`statistical`, `threshold`), as the settings record it; '' when they do not."""
        return str(self.settings.get("judge", ""))

    def _head_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "format_version": self.format_version,
            "reason": self.reason,
            "started_at": self.started_at,
            "decided_at": self.decided_at,
            "failed_check": None if self.failed_check is None else self.failed_check.to_json(),
            "first_breach_at": self.first_breach_time(),
        }

    def first_breach_time(self) -> float | None:
        """When the deciding metric was first over its limit (Unix time); None when never or unknown."""
        return self.first_breach_at


@dataclass(frozen=True)
class VerdictDocument(VerdictHeadline):
    """The full verdict file analyze writes: the headline and every check."""

    checks: tuple[CheckRecord, ...] = ()

    def first_breach_time(self) -> float | None:
        """The recorded first breach, else the first check with the deciding metric over its limit."""
        if self.first_breach_at is not None:
            return self.first_breach_at
        return first_breach(self.checks, None if self.failed_check is None else self.failed_check.metric)

    def to_json(self) -> dict[str, Any]:
        """The document as JSON-ready data (key order as in the file)."""
        return {**self._head_json(), "checks": list(self.checks), "settings": dict(self.settings)}

    def render(self) -> str:
        """The file's text: readable top-level fields, one line per check (a 2m/1s run stays small)."""
        return render_json(self.to_json())

    def summary(self) -> VerdictSummary:
        """The verdict without its per-check list (the count and the last check stay)."""
        return VerdictSummary(self.verdict, self.reason, self.started_at, self.decided_at, self.failed_check,
                              self.settings, self.format_version, self.first_breach_time(),
                              check_count=len(self.checks), last_check=self.checks[-1] if self.checks else None)


@dataclass(frozen=True)
class VerdictSummary(VerdictHeadline):
    """The verdict of a bounded size, whatever the bake time: for Argo output parameters and rollback's evidence."""

    check_count: int = 0
    last_check: CheckRecord | None = None  # null when no check ran (interrupted before the first)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready data."""
        return {**self._head_json(), "settings": dict(self.settings), "check_count": self.check_count,
                "last_check": self.last_check}

    def render(self) -> str:
        """The summary file's text."""
        return render_json(self.to_json())


@dataclass(frozen=True)
class NoVerdict:
    """The placeholder for a verdict analyze did not write; `reason` says what the workflow knows of why."""

    reason: str

    def to_json(self) -> dict[str, Any]:
        """The placeholder as JSON-ready data (no format_version: it is the same in every version)."""
        return {"verdict": NO_VERDICT_WORD, "reason": self.reason, "failed_check": None}

    def render(self) -> str:
        """The placeholder on one line, as the WorkflowTemplates carry it in a parameter default."""
        return json.dumps(self.to_json())


@dataclass(frozen=True)
class UnreadableVerdict:
    """A verdict file that could not be used: missing, not JSON, or not a verdict; `problem` says which."""

    problem: str


VerdictReading = VerdictDocument | VerdictSummary | NoVerdict | UnreadableVerdict


def from_json(data: Any) -> VerdictDocument | VerdictSummary | NoVerdict:
    """Read a parsed verdict file of any format version: full, summary or the "no verdict" placeholder."""
    if not isinstance(data, dict):
        raise VerdictFormatError(f"it holds {type(data).__name__}, not a verdict object")
    word = data.get("verdict")
    if word == NO_VERDICT_WORD:
        return NoVerdict(str(data.get("reason") or ""))
    try:
        verdict = Verdict(word)
    except ValueError:
        choices = ", ".join(v.value for v in Verdict)
        raise VerdictFormatError(f"its verdict is {word!r}, not one of {choices} or {NO_VERDICT_WORD}") from None
    version = data.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise VerdictFormatError(f"its format_version is {version!r}, not a whole number from 1")
    failed = data.get("failed_check")
    settings = data.get("settings")
    headline = (
        verdict,
        str(data.get("reason") or ""),
        _number(data.get("started_at")),
        _number(data.get("decided_at")),
        None if failed is None else FailedCheck.from_json(failed),
        settings if isinstance(settings, dict) else {},
        version,
        _number(data.get("first_breach_at")),
    )
    checks = data.get("checks")
    if isinstance(checks, list):
        return VerdictDocument(*headline, checks=tuple(check for check in checks if isinstance(check, dict)))
    last = data.get("last_check")
    count = data.get("check_count")
    return VerdictSummary(*headline, check_count=count if isinstance(count, int) else 0,
                          last_check=last if isinstance(last, dict) else None)


def read_text(text: str, source: str) -> VerdictReading:
    """Parse a verdict from `text`; `source` names it in the problem of an unreadable one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        return UnreadableVerdict(f"{source} is not JSON ({exc})")
    try:
        return from_json(data)
    except VerdictFormatError as exc:
        return UnreadableVerdict(f"{source} is not a verdict: {exc}")


def read_file(path: Path) -> VerdictReading:
    """Read the verdict file at `path`; a missing or unreadable file is an UnreadableVerdict, never an exception."""
    if not path.is_file():
        return UnreadableVerdict(f"reason file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return UnreadableVerdict(f"reason file {path} cannot be read ({exc})")
    return read_text(text, f"reason file {path}")


def first_breach(checks: tuple[CheckRecord, ...], metric: str | None) -> float | None:
    """Time (`at`) of the first check at which `metric` (any metric when None) was over its limit."""
    for check in checks:
        for record in check.get("metrics") or ():
            if not isinstance(record, dict) or record.get("phase") not in OVER_LIMIT_PHASES:
                continue
            if metric is None or record.get("metric") == metric:
                return _number(check.get("at"))
    return None


def render_json(document: Mapping[str, Any]) -> str:
    """JSON with readable top-level fields and one line per entry of `checks`."""
    parts = []
    for key, value in document.items():
        if key == "checks" and value:
            lines = ",\n".join("    " + json.dumps(check, separators=(",", ":")) for check in value)
            parts.append(f'  "checks": [\n{lines}\n  ]')
        else:
            parts.append(f"  {json.dumps(key)}: " + json.dumps(value, indent=2).replace("\n", "\n  "))
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
