"""The plain rule, as in Flagger and Argo Rollouts: compare point values, fail after N failed checks."""

from __future__ import annotations

import math
from dataclasses import dataclass


def point_breaches(value: float, minimum: float = -math.inf, maximum: float = math.inf) -> bool:
    """True when a finite point value lies outside [minimum, maximum]."""
    return value < minimum or value > maximum


@dataclass
class FailureCounter:
    """Counts failed checks; reaches its limit after `limit` of them (in a row, when `consecutive`).

    Checks with no verdict-bearing data (no data, errors) neither count nor break a streak.
    """

    limit: int
    consecutive: bool = False
    failed: int = 0
    streak: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"failure limit must be at least 1, got {self.limit}")

    def record_failed(self) -> None:
        """A check breached a limit."""
        self.failed += 1
        self.streak += 1

    def record_ok(self) -> None:
        """A check was judged and within every limit: a streak of failures ends."""
        self.streak = 0

    @property
    def counted(self) -> int:
        """The number the limit applies to: all failed checks, or the current streak."""
        return self.streak if self.consecutive else self.failed

    @property
    def reached(self) -> bool:
        """The failure limit is reached: the verdict is fail."""
        return self.counted >= self.limit
