"""Statistical tests of the Results that compare matrices of distances between tasks.

:func:`mantel` is the Mantel permutation test (Mantel 1967): the correlation between the upper triangles
of two symmetric matrices over the same items, against its distribution when the items of one matrix are
permuted (rows and columns together). Pairs of items are not independent samples, so a p-value from
``scipy.stats.spearmanr`` over the m(m - 1)/2 pairs is not valid (Result 3 compares 10 pairs of 5 tasks).
With few items every permutation is enumerated (5 items: 120), which gives the exact p-value;
scikit-bio's ``mantel`` samples permutations only and would be a heavy dependency for this one test.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["MantelResult", "mantel"]


@dataclass(frozen=True)
class MantelResult:
    """``statistic``: the correlation of the two upper triangles; ``p``: the one-sided (``greater``) or
    two-sided p-value; ``permutations``: how many were compared (all of them when ``exact``)."""

    statistic: float
    p: float
    permutations: int
    exact: bool
    method: str
    items: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _square(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 3:
        raise ValueError(f"{name} must be a square matrix over at least 3 items, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has non-finite entries")
    if not np.allclose(a, a.T, rtol=1e-9, atol=1e-12):
        raise ValueError(f"{name} is not symmetric")
    return a


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v)


def mantel(
    a,
    b,
    method: str = "spearman",
    permutations: int = 9999,
    alternative: str = "greater",
    seed: int = 0,
) -> MantelResult:
    """Mantel test of the association of two symmetric distance matrices over the same items.

    ``method``: ``spearman`` (ranks) or ``pearson``. ``permutations``: random permutations of the items
    of ``b``, unless m! is at most that many, when all are enumerated (exact). ``alternative``: ``greater``
    (a positive association; Result 3's hypothesis) or ``two-sided``. The p-value counts the observed
    arrangement among the permutations: (1 + #{r_perm >= r}) / (1 + n) for sampled ones, #{r_perm >= r} / m!
    for the exact test (the identity is one of the m! arrangements).
    """
    a, b = _square(a, "a"), _square(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be over the same items, got shapes {a.shape} and {b.shape}")
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    if int(permutations) < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    m = a.shape[0]
    iu = np.triu_indices(m, 1)
    x = a[iu]
    if method == "spearman":
        x = _ranks(x)
    x = x - x.mean()
    if not np.any(x) or np.ptp(b[iu]) == 0:
        raise ValueError("a constant matrix has no correlation with anything")

    def corr(perm: np.ndarray) -> float:
        y = b[np.ix_(perm, perm)][iu]
        y = _ranks(y) if method == "spearman" else y
        y = y - y.mean()
        return float(x @ y / math.sqrt((x @ x) * (y @ y)))

    r = corr(np.arange(m))
    exact = math.factorial(m) <= int(permutations)
    if exact:
        perms = (np.array(p) for p in itertools.permutations(range(m)))
    else:
        rng = np.random.default_rng(seed)
        perms = (rng.permutation(m) for _ in range(int(permutations)))
    null = np.fromiter((corr(p) for p in perms), dtype=np.float64)
    tol = 1e-12 * max(1.0, abs(r))
    hits = np.sum(null >= r - tol) if alternative == "greater" else np.sum(np.abs(null) >= abs(r) - tol)
    p = hits / len(null) if exact else (1 + hits) / (1 + len(null))
    return MantelResult(float(r), float(p), int(len(null)), bool(exact), method, int(m))
