"""The seam between the analysis and Prometheus: a querier answers instant queries with classified results,
and a query spec says what is asked and what shape of answer is expected.

`PrometheusQuerier` (HTTP, timeouts, retries) is the querier in production; tests pass a script of
answers, so the analysis loop runs in milliseconds without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from rollguard.steps.metrics.query_results import QueryResult


class Querier(Protocol):
    """Answers instant PromQL queries; never raises for what Prometheus said or failed to say."""

    def vector(self, query: str) -> QueryResult:
        """Any number of series: VALUE (one or more), EMPTY, or ERROR."""
        ...

    def scalar(self, query: str) -> QueryResult:
        """Exactly one series expected: VALUE, EMPTY, NAN, MULTIPLE, or ERROR."""
        ...


class AnswerShape(str, Enum):
    """What a query's answer is expected to be."""

    SERIES = "series"  # every matching series (raw counters, one per label set)
    ONE_VALUE = "one_value"  # exactly one number (a rate, a quantile, a custom metric)


@dataclass(frozen=True)
class QuerySpec:
    """One query of the analysis: its name in logs and the verdict, its PromQL, the answer's shape."""

    name: str
    promql: str
    shape: AnswerShape

    def ask(self, querier: Querier) -> QueryResult:
        """Run the query on `querier` the way its shape needs."""
        if self.shape is AnswerShape.SERIES:
            return querier.vector(self.promql)
        return querier.scalar(self.promql)
