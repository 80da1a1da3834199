"""The statistics behind every interval the analysis prints: bootstrap shares, rank correlations, seed intervals.

* :func:`bootstrap_mean_ci` — percentile bootstrap interval of a mean (the shares of C2, C3 and PAPER §6);
* :func:`share_of` — a :class:`~dpocheck.llm.analysis.result_types.Share` with its bootstrap interval;
* :func:`spearman_ci` — Spearman's rank correlation with a percentile bootstrap interval over pairs (how well
  CHES predicts displacement, Razin et al. 2024);
* :func:`t_interval` — mean ± Student's t interval of a few per-seed values (the spread across seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .result_types import Share


def bootstrap_mean_ci(
    values: Any, n_resamples: int = 2000, seed: int | Sequence[int] = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (vectorised resampling of indices, seeded).

    Returns (nan, nan) for an empty sample. Resamples are drawn in blocks so memory stays below ~32 MB.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return math.nan, math.nan
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, 4_000_000 // n))
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def share_of(
    mask: Any, claim: str, beta: float | None, normalization: str, n_boot: int, seed: Any, **tags: Any
) -> Share:
    """The share of True in ``mask`` with its percentile bootstrap interval (none when ``n_boot`` is 0)."""
    m = np.asarray(mask, dtype=bool)
    ci = bootstrap_mean_ci(m, n_boot, seed) if m.size and n_boot > 0 else None
    return Share(
        value=float(m.mean()) if m.size else None,
        ci95=ci,
        count=int(m.sum()),
        n=int(m.size),
        claim=claim,
        beta=beta,
        normalization=normalization,
        tags=tuple(tags.items()),
    )


def _rank_rows(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank), as scipy's ``rankdata``."""
    from scipy.stats import rankdata

    return rankdata(a, axis=-1)


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman_ci(
    x: Any, y: Any, n_resamples: int = 2000, seed: int | Sequence[int] = 0, level: float = 0.95
) -> tuple[float | None, tuple[float, float] | None, int]:
    """Spearman's ρ of (x, y) over the pairs where both are finite, a percentile bootstrap interval (pairs
    resampled with replacement, ties ranked by their mean rank) and n.

    ρ is None when fewer than 3 pairs remain or either variable is constant (no ranking to correlate); the interval
    is None then, and when ``n_resamples`` is 0. Resamples where a variable happens to be constant are dropped.
    """
    xa, ya = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {xa.size} vs {ya.size}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    n = int(xa.size)
    if n < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return None, None, n
    rho = float(_row_pearson(_rank_rows(xa), _rank_rows(ya)))
    if n_resamples < 1:
        return rho, None, n
    rng = np.random.default_rng(seed)
    block = max(1, min(n_resamples, 2_000_000 // n))
    rhos = []
    for start in range(0, n_resamples, block):
        idx = rng.integers(0, n, size=(min(n_resamples, start + block) - start, n))
        rhos.append(_row_pearson(_rank_rows(xa[idx]), _rank_rows(ya[idx])))
    r = np.concatenate(rhos)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return rho, None, n
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [alpha, 1.0 - alpha])
    return rho, (float(lo), float(hi)), n


def t_interval(values: Any, level: float = 0.95) -> tuple[float | None, tuple[float, float] | None, int]:
    """Mean of per-seed values and its Student-t interval mean ± t_{n−1} · s/√n; (mean, None) for one value."""
    from scipy.stats import t as student_t

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return None, None, 0
    mean = float(v.mean())
    if n == 1:
        return mean, None, 1
    half = float(student_t.ppf(0.5 + level / 2.0, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return mean, (mean - half, mean + half), n
