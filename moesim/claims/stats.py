"""One-sided confidence bounds used to turn measurements over seeds into verdicts.

* ``clopper_pearson_lower``/``_upper``: exact binomial bounds on a success probability (the
  fraction of seeds that satisfy a claim, or a test error from ``n_test`` points).
* ``t_lower``/``t_upper``: Student-t bounds on the mean of a quantity over seeds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: Confidence level of every one-sided bound of the statistical tier.
CONFIDENCE = 0.95


def clopper_pearson_lower(successes: int, trials: int, confidence: float = CONFIDENCE) -> float:
    """One-sided lower Clopper-Pearson bound on p from ``successes`` out of ``trials``.

    P(bound <= p) >= ``confidence`` for every p. ``successes = 0`` gives 0.
    """
    _check_counts(successes, trials)
    if successes == 0:
        return 0.0
    return float(stats.beta.ppf(1 - confidence, successes, trials - successes + 1))


def clopper_pearson_upper(successes: int, trials: int, confidence: float = CONFIDENCE) -> float:
    """One-sided upper Clopper-Pearson bound on p (``successes = trials`` gives 1)."""
    _check_counts(successes, trials)
    if successes == trials:
        return 1.0
    return float(stats.beta.ppf(confidence, successes + 1, trials - successes))


def t_lower(values, confidence: float = CONFIDENCE) -> float:
    """One-sided lower Student-t bound on the mean of ``values`` (ddof = 1); -inf for one value."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return -math.inf
    return float(v.mean() - stats.t.ppf(confidence, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))


def t_upper(values, confidence: float = CONFIDENCE) -> float:
    """One-sided upper Student-t bound on the mean of ``values``; +inf for one value."""
    return -t_lower(-np.asarray(values, dtype=np.float64), confidence)


def binomial_sigma(p: float, n: int) -> float:
    """Standard deviation of an empirical frequency of n Bernoulli(p) draws."""
    return math.sqrt(p * (1 - p) / n)


def _check_counts(successes: int, trials: int) -> None:
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got successes={successes}, trials={trials}")
