"""Exact binomial tails and Clopper-Pearson bounds, computed in log space without SciPy.

Exact (not normal or Wilson) because canary decisions are made on small counts: 1 error in 3
requests must not look like a 33 % error rate "with confidence".
"""

from __future__ import annotations

import math
from collections.abc import Callable

_TINY = 1e-300
_EPSILON = 1e-15
_MAX_FRACTION_TERMS = 100_000
_BISECTION_STEPS = 52  # 2**-52: below double precision near 1


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _beta_continued_fraction(x: float, a: float, b: float) -> float:
    """Continued fraction of the incomplete beta function, evaluated with the modified Lentz method."""
    c = 1.0
    d = 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    result = d
    for m in range(1, _MAX_FRACTION_TERMS + 1):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            step = c * d
            result *= step
        if abs(step - 1.0) < _EPSILON:
            return result
    return result


def regularized_incomplete_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b), the beta distribution's CDF; the building block of exact binomial tails."""
    if a <= 0 or b <= 0:
        raise ValueError(f"incomplete beta needs a > 0 and b > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    # The fraction converges fast on the side of the distribution's mean; use symmetry on the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(1.0 - x, b, a) / b


def upper_tail(successes: int, trials: int, rate: float) -> float:
    """P(X >= successes) for X ~ Binomial(trials, rate): the p-value of H0 "the true rate is at most `rate`"
    (small when so many failures show the rate is higher)."""
    _check_counts(successes, trials)
    if successes <= 0:
        return 1.0
    if rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    return regularized_incomplete_beta(rate, successes, trials - successes + 1)


def lower_tail(successes: int, trials: int, rate: float) -> float:
    """P(X <= successes) for X ~ Binomial(trials, rate)."""
    _check_counts(successes, trials)
    if successes >= trials:
        return 1.0
    if rate <= 0.0:
        return 1.0
    if rate >= 1.0:
        return 0.0
    return regularized_incomplete_beta(1.0 - rate, trials - successes, successes + 1)


def lower_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper-Pearson lower bound: the true rate is above it with probability >= 1 - alpha."""
    _check_counts(successes, trials)
    _check_alpha(alpha)
    if successes == 0:
        return 0.0
    # upper_tail grows with the rate: the bound is the last rate at which it is still <= alpha.
    low, _high = _bisect(lambda rate: upper_tail(successes, trials, rate) <= alpha)
    return low


def upper_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound: the true rate is below it with probability >= 1 - alpha."""
    _check_counts(successes, trials)
    _check_alpha(alpha)
    if successes >= trials:
        return 1.0
    # lower_tail falls as the rate grows: the bound is the first rate at which it is <= alpha.
    _low, high = _bisect(lambda rate: lower_tail(successes, trials, rate) > alpha)
    return high


def _bisect(below_crossing: Callable[[float], bool]) -> tuple[float, float]:
    """Narrow [0, 1] to the rate where `below_crossing` turns from true to false; (low, high) around it."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if below_crossing(middle):
            low = middle
        else:
            high = middle
    return low, high


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")
