"""Small-sample intervals for proportions, on an effective count that respects patient clustering.

The percentile bootstrap fails exactly where a clinical reader looks hardest: a class with 5 of 5
right gets ``[1.0, 1.0]`` (no replicate can contain an error that the data does not), and for a
few dozen units it under-covers generally. For proportions — sensitivity, specificity, PPV, NPV,
accuracy — two closed-form intervals do better:

- **Clopper–Pearson** ("exact"): the ends are Beta quantiles,
  ``lo = Beta(alpha/2; x, n - x + 1)`` and ``hi = Beta(1 - alpha/2; x + 1, n - x)``, with
  ``lo = 0`` at ``x = 0`` and ``hi = 1`` at ``x = n``. It inverts two one-sided binomial tests,
  so coverage is at least the nominal level for every true proportion (conservative).
  5/5 at 95 %: ``[0.4782, 1]``; 0/10: ``[0, 0.3085]``.
- **Wilson** (score): the set of ``p`` with ``|p_hat - p| <= z * sqrt(p (1 - p) / n)``; shorter,
  coverage close to nominal on average but not guaranteed. 5/5 at 95 %: ``[0.5655, 1]``.

Both formulas accept non-integer counts, which the clustering rule below needs.

**Clustering.** Images of one patient are correlated, so ``x`` of ``n`` images is weaker evidence
than ``x`` of ``n`` independent draws. A proportion pooled over images is the ratio
``sum x_i / sum m_i`` over units ``i`` (patients) contributing ``m_i >= 1`` images to its
denominator. Whatever the within-patient correlation, a unit's own proportion ``x_i / m_i`` lies
in ``[0, 1]`` with mean ``p``, so its variance is at most ``p (1 - p)`` — the case of fully
correlated images, where a patient's images are all right or all wrong. Then
``Var(p_hat) <= p (1 - p) * sum m_i**2 / (sum m_i)**2 = p (1 - p) / n_eff`` with Kish's effective
count ``n_eff = (sum m_i)**2 / sum m_i**2``. The interval is therefore computed on ``n_eff`` trials
with ``p_hat * n_eff`` successes: the number of patients when each brings equally many images,
fewer when a few patients bring most of them, and the number of images when each image is its own
unit (no patient ids, or the patient-level section). It can only be wider than the unclustered
interval — honest rather than optimistic.

Everything here is private; :func:`medprune.metrics._common.use_closed_form` decides when these
intervals replace the bootstrap, for classification's proportions and segmentation's pooled pixel
ones, and :mod:`medprune.metrics.classification` and :mod:`medprune.metrics.segmentation` record
the choice in ``ci_method``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

__all__: list[str] = []

IntervalFn = Callable[[np.ndarray, np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def _stats() -> ModuleType:
    # Imported on first use: scipy.stats takes seconds to import, and a metrics call without
    # intervals (the trainer's n_bootstrap=0) never needs it.
    from scipy import stats

    return stats


def clopper_pearson(successes: np.ndarray, failures: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson interval for ``successes`` of ``successes + failures`` trials (elementwise).

    Counts may be non-integer (effective counts). Returns ``(low, high)`` arrays; ``NaN`` where
    there are no trials.
    """
    x = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    alpha = 1.0 - level
    beta = _stats().beta
    valid = (x + f) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(x > 0, beta.ppf(alpha / 2, np.where(x > 0, x, 1.0), f + 1.0), 0.0)
        high = np.where(f > 0, beta.ppf(1.0 - alpha / 2, x + 1.0, np.where(f > 0, f, 1.0)), 1.0)
    return np.where(valid, low, np.nan), np.where(valid, high, np.nan)


def wilson(successes: np.ndarray, failures: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for ``successes`` of ``successes + failures`` trials (elementwise).

    Counts may be non-integer. The ends are exactly 0 at ``successes == 0`` and exactly 1 at
    ``failures == 0`` (the closed form gives them only up to rounding). ``NaN`` where there are
    no trials.
    """
    x = np.asarray(successes, dtype=np.float64)
    f = np.asarray(failures, dtype=np.float64)
    n = x + f
    z = _stats().norm.ppf(0.5 + level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        scale = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / scale
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / scale
    low = np.where(x > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(f > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    valid = n > 0
    return np.where(valid, low, np.nan), np.where(valid, high, np.nan)


METHODS: dict[str, IntervalFn] = {"clopper_pearson": clopper_pearson, "wilson": wilson}
"""Small-sample interval methods by the name ``ci_method`` records."""


def effective_count(trials_per_unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contributing units and Kish's effective count of a pooled proportion's denominator.

    ``trials_per_unit`` is ``(n_units, ...)``: how many images of each unit enter the denominator
    (e.g. a patient's images of the class, for that class's sensitivity). Returns
    ``(units, n_eff)`` over the trailing axes: the number of units with at least one image in the
    denominator, and ``(sum m)**2 / sum m**2`` (``NaN`` for an empty denominator). ``n_eff`` never
    exceeds ``units`` and equals it when every unit brings equally many images.
    """
    m = np.asarray(trials_per_unit, dtype=np.float64)
    units = (m > 0).sum(axis=0)
    total = m.sum(axis=0)
    squares = (m * m).sum(axis=0)
    out = np.full(total.shape, np.nan)
    np.divide(total * total, squares, out=out, where=squares > 0)
    return units, out


def effective_interval(
    successes: np.ndarray, trials: np.ndarray, n_eff: np.ndarray, level: float, method: str
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of ``successes / trials`` with the counts rescaled to ``n_eff`` trials.

    Successes and failures are both scaled by ``n_eff / trials``, so the proportion is unchanged,
    a 0 stays exactly 0, and an unclustered count (``n_eff == trials``) is used as it is.
    """
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    scale = np.full(n.shape, np.nan)
    np.divide(n_eff, n, out=scale, where=n > 0)
    return METHODS[method](x * scale, (n - x) * scale, level)
