"""The Git trailers of rollguard's commits: what `rollguard history` reads back from the log.

Every commit deploy, promote and rollback push ends in one trailer block (the last paragraph,
`Key: value` lines, as `git interpret-trailers` reads them):

    Rollguard-Action: rollback
    Rollguard-Virtual-Service: podinfo
    Rollguard-Weights: v1=100 v2=0
    Rollguard-Previous-Weights: v1=90 v2=10
    Rollguard-Verdict: fail
    Rollguard-Reason: canary_error_rate 0.5 > 0.01 ...
    Rollguard-Metric: canary_error_rate
    Rollguard-Value: 0.5
    Rollguard-Threshold: 0.01
    Rollguard-Samples: 24
    Rollguard-First-Breach: 2026-11-29T08:00:01Z
    Rollguard-Workflow: canary-release-x7k2p

Values are one line each (newlines become spaces, long reasons are cut). The workflow templates
give the Git steps two variables that are not flags: ROLLGUARD_WORKFLOW_NAME (`{{workflow.name}}`)
and ROLLGUARD_VERDICT_JSON (the verdict summary behind a promotion); run by hand, neither is set
and the trailers say only what the step knows.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ACTION = "Rollguard-Action"
VIRTUAL_SERVICE = "Rollguard-Virtual-Service"
WEIGHTS = "Rollguard-Weights"
PREVIOUS_WEIGHTS = "Rollguard-Previous-Weights"
VERDICT = "Rollguard-Verdict"
REASON = "Rollguard-Reason"
METRIC = "Rollguard-Metric"
VALUE = "Rollguard-Value"
THRESHOLD = "Rollguard-Threshold"
SAMPLES = "Rollguard-Samples"
FIRST_BREACH = "Rollguard-First-Breach"
WORKFLOW = "Rollguard-Workflow"

WORKFLOW_NAME_ENV = "ROLLGUARD_WORKFLOW_NAME"
VERDICT_JSON_ENV = "ROLLGUARD_VERDICT_JSON"
MAX_VALUE_CHARS = 500  # a reason can be long (Prometheus errors); the body of the message has it whole

_TRAILER_LINE = re.compile(r"^(?P<key>[A-Za-z0-9][A-Za-z0-9-]*):[ \t]*(?P<value>.*)$")
_WEIGHT_ITEM = re.compile(r"^(?P<subset>[^=\s]+)=(?P<weight>\d{1,3})$")


@dataclass(frozen=True)
class Evidence:
    """What justified a weight change: the verdict, its reason, and the metric that decided it."""

    verdict: str = ""
    reason: str = ""
    metric: str = ""
    value: float | None = None
    threshold: float | None = None
    samples: int | None = None
    first_breach_at: float | None = None


@dataclass(frozen=True)
class ReleaseTrailers:
    """The facts of one rollguard commit, as its trailer block says them."""

    action: str
    virtual_service: str
    weights: Mapping[str, int]
    previous_weights: Mapping[str, int] = field(default_factory=dict)
    evidence: Evidence = field(default_factory=Evidence)
    workflow: str = ""

    def lines(self) -> list[str]:
        """The trailer block, one `Key: value` a line, empty values left out."""
        pairs = [
            (ACTION, self.action),
            (VIRTUAL_SERVICE, self.virtual_service),
            (WEIGHTS, format_weights(self.weights)),
            (PREVIOUS_WEIGHTS, format_weights(self.previous_weights)),
            (VERDICT, self.evidence.verdict),
            (REASON, self.evidence.reason),
            (METRIC, self.evidence.metric),
            (VALUE, _number_text(self.evidence.value)),
            (THRESHOLD, _number_text(self.evidence.threshold)),
            (SAMPLES, "" if self.evidence.samples is None else str(self.evidence.samples)),
            (FIRST_BREACH, utc_text(self.evidence.first_breach_at)),
            (WORKFLOW, self.workflow),
        ]
        return [f"{key}: {one_line(value)}" for key, value in pairs if value]

    def block(self) -> str:
        """The trailer block as the last paragraph of a commit message (ends with a newline)."""
        return "\n".join(self.lines()) + "\n"


def one_line(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """A trailer value: whitespace runs (newlines too) become one space; cut at `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_weights(weights: Mapping[str, int]) -> str:
    """`v1=90 v2=10` (stable first, as given)."""
    return " ".join(f"{subset}={weight}" for subset, weight in weights.items())


def parse_weights(text: str) -> dict[str, int]:
    """Read `v1=90 v2=10`; items that are not `subset=N` are skipped."""
    weights: dict[str, int] = {}
    for item in text.split():
        match = _WEIGHT_ITEM.match(item)
        if match:
            weights[match.group("subset")] = int(match.group("weight"))
    return weights


def utc_text(stamp: float | None) -> str:
    """Unix time as `2026-11-29T08:00:01Z`; '' when unknown."""
    if stamp is None or not math.isfinite(stamp):
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def parse_utc(text: str) -> float | None:
    """`2026-11-29T08:00:01Z` (or with an offset, as git's %cI prints) as Unix time; None if unreadable."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number_text(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:.6g}"


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def parse_trailers(message: str) -> dict[str, str]:
    """The trailer block of a commit message (its last paragraph), key -> value; {} when it has none.

    Like `git interpret-trailers --parse`: only a last paragraph made of `Key: value` lines counts;
    a key given twice keeps its last value.
    """
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", message.strip()) if p.strip()]
    if len(paragraphs) < 2:  # a subject alone is never a trailer block
        return {}
    found: dict[str, str] = {}
    for line in paragraphs[-1].splitlines():
        match = _TRAILER_LINE.match(line.strip())
        if not match:
            return {}
        found[match.group("key")] = match.group("value").strip()
    return found


def read_release_trailers(message: str) -> ReleaseTrailers | None:
    """The rollguard facts of a commit message; None for a commit rollguard did not make."""
    trailers = parse_trailers(message)
    action = trailers.get(ACTION, "")
    if not action:
        return None
    samples = trailers.get(SAMPLES, "")
    evidence = Evidence(
        verdict=trailers.get(VERDICT, ""),
        reason=trailers.get(REASON, ""),
        metric=trailers.get(METRIC, ""),
        value=_number(trailers.get(VALUE)),
        threshold=_number(trailers.get(THRESHOLD)),
        samples=int(samples) if samples.isdigit() else None,
        first_breach_at=parse_utc(trailers[FIRST_BREACH]) if FIRST_BREACH in trailers else None,
    )
    return ReleaseTrailers(
        action=action,
        virtual_service=trailers.get(VIRTUAL_SERVICE, ""),
        weights=parse_weights(trailers.get(WEIGHTS, "")),
        previous_weights=parse_weights(trailers.get(PREVIOUS_WEIGHTS, "")),
        evidence=evidence,
        workflow=trailers.get(WORKFLOW, ""),
    )


def workflow_name() -> str:
    """The Argo workflow's name when the step runs in one (ROLLGUARD_WORKFLOW_NAME), else ''."""
    name = os.environ.get(WORKFLOW_NAME_ENV, "").strip()
    return "" if name.startswith("{{") else name


def evidence_from_verdict_json(data: Any) -> Evidence:
    """Evidence from a parsed verdict document (full, summary or the "no verdict" placeholder)."""
    if not isinstance(data, dict):
        return Evidence()
    found = data.get("failed_check")
    failed: dict[str, Any] = found if isinstance(found, dict) else {}
    samples = failed.get("samples")
    return Evidence(
        verdict=str(data.get("verdict") or ""),
        reason=str(data.get("reason") or ""),
        metric=str(failed.get("metric") or ""),
        value=_number(_text_or_none(failed.get("value"))),
        threshold=_number(_text_or_none(failed.get("threshold"))),
        samples=samples if isinstance(samples, int) and not isinstance(samples, bool) else None,
        first_breach_at=_number(_text_or_none(data.get("first_breach_at"))),
    )


def evidence_from_environment() -> Evidence:
    """The verdict a workflow passed in ROLLGUARD_VERDICT_JSON (a promotion's reason); empty when none."""
    text = os.environ.get(VERDICT_JSON_ENV, "").strip()
    if not text or text.startswith("{{"):
        return Evidence()
    try:
        return evidence_from_verdict_json(json.loads(text))
    except ValueError:
        return Evidence()


def _text_or_none(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return str(value)
