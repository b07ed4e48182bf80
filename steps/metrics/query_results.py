"""What a query to Prometheus can come back as: an explicit outcome (value, empty, NaN, several series,
error) with the parsed series, whoever asked (the HTTP client, or a script of answers in a test)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

Labels = tuple[tuple[str, str], ...]


class QueryStatus(str, Enum):
    """How a query turned out."""

    VALUE = "value"  # the expected number of series, with numbers
    EMPTY = "empty"  # no series matched
    NAN = "nan"  # one series whose value is NaN
    MULTIPLE = "multiple"  # several series where exactly one was expected
    ERROR = "error"  # unreachable, timed out, HTTP error, or a query Prometheus refused


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels (sorted) and its value."""

    labels: Labels
    value: float


@dataclass(frozen=True)
class QueryResult:
    """The classified answer to one query."""

    query: str
    status: QueryStatus
    samples: tuple[Sample, ...] = field(default_factory=tuple)
    detail: str = ""
    attempts: int = 1
    unreachable: bool = False  # ERROR because Prometheus did not answer (not because it refused the query)

    @property
    def value(self) -> float:
        """The single value when status is VALUE and one series came back; NaN otherwise."""
        if self.status is QueryStatus.VALUE and len(self.samples) == 1:
            return self.samples[0].value
        return math.nan


def classify(query: str, samples: tuple[Sample, ...], *, expect_one: bool, attempts: int = 1) -> QueryResult:
    """Turn parsed series into a QueryResult: empty, several where one was expected, NaN, or values."""
    if not samples:
        return QueryResult(query, QueryStatus.EMPTY, detail="no series matched", attempts=attempts)
    if expect_one and len(samples) > 1:
        shown = "; ".join(labels_text(sample.labels) for sample in samples[:3])
        return QueryResult(query, QueryStatus.MULTIPLE, samples,
                           detail=f"{len(samples)} series where one was expected: {shown}", attempts=attempts)
    if expect_one and math.isnan(samples[0].value):
        return QueryResult(query, QueryStatus.NAN, samples, detail="the value is NaN", attempts=attempts)
    broken = next((sample for sample in samples if not math.isfinite(sample.value)), None)
    if not expect_one and broken is not None:
        # Several series are counters to subtract and add up: one that is not a number spoils them all.
        return QueryResult(query, QueryStatus.ERROR, samples, attempts=attempts,
                           detail=f"series {labels_text(broken.labels)} has the value {broken.value}; "
                           "counters must be finite numbers")
    return QueryResult(query, QueryStatus.VALUE, samples, attempts=attempts)


def labels_text(labels: Labels) -> str:
    """Labels the way PromQL writes them: `{pod="a",version="v2"}`."""
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels) + "}"
