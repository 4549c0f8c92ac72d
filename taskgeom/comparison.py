"""Comparing two groups of trajectories (two recipes, two optimisers, two tasks): how far apart their
tubes are along the progress both reach, with bootstrap intervals, and whether the difference could be
chance, by a permutation test over seeds.

``compare(a, b)`` re-indexes every trajectory of both groups (Remark 4) on one grid over the progress
*every* one of them reaches (never extrapolating), and reports the normalised distance (Remark 5: the
distance between the two mean trajectories over the sum of their tube radii, times two) at each grid value
and its mean over the grid. Intervals resample evaluation samples and seeds (the mean trajectories and
tube radii recomputed in each replicate: :func:`taskgeom.trajectories.pair_replicates`). The permutation
test asks whether the two groups' trajectories are exchangeable: the seeds are pooled and split into two
groups of the original sizes in every way (or ``n_perm`` random ways when there are more), and the p-value
is the share of splits whose mean normalised distance is at least the observed one (the observed split
counted). With ``k_a`` and ``k_b`` seeds there are ``C(k_a + k_b, k_a)`` splits, so the smallest p-value
is ``1 / C(k_a + k_b, k_a)`` (2 for equal sizes, where a split and its mirror give the same statistic):
four seeds a side reach p = 0.029, three only 0.1.

With few seeds most replicates lie above the estimate: a replicate that draws one seed twice has a
narrower tube, so its normalised distance is larger (and where both groups share their initialisations,
as runs seeded alike do, resampling the two groups' seeds independently separates means that coincide).
The intervals are therefore bias-corrected percentile intervals (:func:`taskgeom.bootstrap.percentile_interval`),
median-unbiased where plain percentiles could miss the estimate; ``above_estimate`` gives the share of
replicates above the estimate (near 1/2: little bias), to read beside them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import bootstrap, trajectories
from ._validate import as_tensor, check_float, check_int, tensor_of
from .geometry import progress as _progress

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare` (``to_json()`` gives a JSON-ready dict)."""

    seeds: tuple  # (k_a, k_b)
    grid: list  # the progress values compared (every trajectory of both groups reaches each)
    normalized_distance: list  # at each grid value
    interval: dict  # {"low", "high"} at each grid value (empty without a bootstrap)
    mean: float  # the mean over the grid (of the values where it is defined: see ``undefined``)
    mean_interval: dict  # {"low", "high"} of the mean (empty without a bootstrap)
    p_value: float  # permutation test of exchangeable groups (NaN with n_perm=0)
    permutations: int  # splits the p-value counts (the observed one included)
    exhaustive: bool  # every split counted (else random ones)
    level: float
    replicates: int
    over: str  # what the intervals cover
    above_estimate: float | None = None  # the share of replicates of the mean above the estimate
    undefined: int = 0  # grid values left out of the mean: both tubes of radius 0 there (seeds sharing a start)

    def __repr__(self) -> str:
        iv = self.mean_interval
        bracket = f" [{iv['low']:.3g}, {iv['high']:.3g}]" if iv else ""
        span = f"{self.grid[0]:.3f}-{self.grid[-1]:.3f}" if self.grid else "none"
        return (
            f"Comparison(seeds={self.seeds}, progress {span} ({len(self.grid)} values), mean normalised distance "
            f"{self.mean:.3g}{bracket}, p={self.p_value:.3g} over {self.permutations} splits)"
        )

    def to_json(self) -> dict:
        out = asdict(self)
        out["seeds"] = list(self.seeds)
        return out


def _group(x, name: str):
    """``(list of (T, N, C) float64 tensors, their evaluation labels or None)`` from trajectory handles of a
    store (which carry their labels) or arrays."""
    own = None
    if isinstance(x, (np.ndarray, torch.Tensor)):
        t, _ = as_tensor(x, name)
        if t.dim() != 4:
            raise ValueError(f"{name}: expected (K, T, N, C) trajectories, got shape {tuple(t.shape)}")
        runs = [t[k] for k in range(t.shape[0])]
    else:
        runs = list(x)
        if not runs:
            raise ValueError(f"{name} holds no trajectory")
        if hasattr(runs[0], "labels"):
            own = np.asarray(runs[0].labels)
            if any(not np.array_equal(np.asarray(r.labels), own) for r in runs[1:]):
                raise ValueError(f"{name}: its trajectories were recorded on different evaluation sets")
        runs = [as_tensor(getattr(r, "probs", r), name)[0] for r in runs]
    for r in runs:
        if r.dim() != 3 or r.shape[0] < 2:
            raise ValueError(f"{name}: every trajectory needs shape (T >= 2, N, C), got {tuple(r.shape)}")
    return [r.to(torch.float64) for r in runs], own


def _labels(given, own_a, own_b) -> np.ndarray:
    known = [np.asarray(v) for v in (given, own_a, own_b) if v is not None]
    if not known:
        raise ValueError("labels are needed for arrays (trajectories from a store carry their own)")
    if any(v.shape != known[0].shape or not np.array_equal(v, known[0]) for v in known[1:]):
        raise ValueError("a, b and labels belong to different evaluation sets (their labels differ)")
    return known[0]


def _splits(k_a: int, k_b: int, n_perm: int, rng):
    k = k_a + k_b
    total = math.comb(k, k_a)
    if total <= n_perm:
        return [np.array(c) for c in itertools.combinations(range(k), k_a)], True
    first = np.arange(k_a)
    return [first] + [rng.permutation(k)[:k_a] for _ in range(n_perm - 1)], False


def compare(
    a,
    b,
    labels=None,
    *,
    grid: int = 50,
    n_boot: int = 200,
    n_perm: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Compare two groups of trajectories (see the module docstring).

    Parameters
    ----------
    a, b : each a list of trajectory handles (``store.select(...)``), a list of (T, N, C) arrays, or a
        (K, T, N, C) array; at least two trajectories a group (a tube needs two).
    labels : (N,) evaluation labels (taken from the handles when they are trajectories of a store).
    grid : the number of progress values compared.
    n_boot : bootstrap replicates over evaluation samples and seeds (0: none).
    n_perm : the most splits the permutation test counts (all of them when there are fewer; 0: no test).
    level : the intervals' coverage; ``seed``: the generator of every random draw.
    """
    grid = check_int(grid, "grid", minimum=2)
    n_boot = check_int(n_boot, "n_boot", minimum=0)
    n_perm = check_int(n_perm, "n_perm", minimum=0)
    level = check_float(level, "level", positive=True)
    if not level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    seed = check_int(seed, "seed", minimum=0)
    pooled, k_a, labels, g = _reindexed(a, b, labels, grid)
    fa, fb = pooled[:k_a], pooled[k_a:]
    k_b = len(fb)
    rng = np.random.default_rng(seed)  # the bootstrap's draws, then the permutations'
    boot = bootstrap.Resampling(len(labels), n_boot, {"a": k_a, "b": k_b}, seed=rng, level=level)
    curve = trajectories.compare_families(fa, fb, boot, "a", "b", validate=False)
    nd = curve.normalized
    interval, mean_interval, over, above = _bootstrap(curve, k_a, k_b, n_boot, level)
    observed = float(_grid_mean(nd, np.isfinite(nd)))
    p, count, exhaustive = _permutation_test(pooled, k_a, k_b, observed, n_perm, rng)
    return Comparison(
        seeds=(k_a, k_b),
        grid=g.tolist(),
        normalized_distance=nd.tolist(),
        interval=interval,
        mean=observed,
        mean_interval=mean_interval,
        p_value=p,
        permutations=count,
        exhaustive=exhaustive,
        level=level,
        replicates=n_boot,
        over=over,
        above_estimate=above,
        undefined=int(np.count_nonzero(~np.isfinite(nd))),
    )


def _reindexed(a, b, labels, grid: int) -> tuple:
    """(pooled, k_a, labels, grid): both groups' trajectories re-indexed (Remark 4) on one grid over the
    progress every one of them reaches, stacked (``a``'s first), after checking their shapes and sizes."""
    runs_a, own_a = _group(a, "a")
    runs_b, own_b = _group(b, "b")
    labels = _labels(labels, own_a, own_b)
    k_a, k_b = len(runs_a), len(runs_b)
    if min(k_a, k_b) < 2:
        raise ValueError(f"each group needs at least two trajectories (seeds) to have a tube; got {k_a} and {k_b}")
    shapes = {tuple(r.shape[1:]) for r in runs_a + runs_b}
    if len(shapes) != 1:
        raise ValueError(f"the trajectories differ in (N, C): {sorted(shapes)}")
    lab = tensor_of(labels)
    progs = [np.asarray(_progress(r, lab)) for r in runs_a + runs_b]
    try:
        g = trajectories.progress_grid(progs, grid, shared=True)
    except ValueError as exc:
        raise ValueError(f"the two groups cannot be compared: {exc}") from None
    pooled = torch.stack(
        [tensor_of(trajectories.reindex(r, lab, grid=g, progress=p)) for r, p in zip(runs_a + runs_b, progs)]
    )
    return pooled, k_a, labels, g


def _bootstrap(curve, k_a: int, k_b: int, n_boot: int, level: float) -> tuple:
    """(interval, mean_interval, over, above_estimate): percentile intervals of the curve and of its mean over
    its ``n_boot`` replicates (evaluation samples and both groups' seeds)."""
    if not n_boot:
        return {}, {}, "nothing (n_boot=0)", None
    nd, reps = curve.normalized, curve.replicates
    lo, hi = bootstrap.percentile_interval(reps, level, estimate=nd)  # bias-corrected: see the module docstring
    ok = np.isfinite(nd)  # the grid values where the data's ratio is defined
    means, mean = _grid_mean(reps, ok), _grid_mean(nd, ok)
    with np.errstate(invalid="ignore"):
        mlo, mhi = bootstrap.percentile_interval(means, level, estimate=mean)
    return (
        {"low": lo.tolist(), "high": hi.tolist()},
        {"low": float(mlo), "high": float(mhi)},
        f"evaluation samples and seeds ({k_a} and {k_b} seeds), {n_boot} replicates",
        bootstrap.above_estimate(means, mean),
    )


def _permutation_test(pooled, k_a: int, k_b: int, observed: float, n_perm: int, rng) -> tuple:
    """(p, splits counted, exhaustive): the share of seed splits (the observed one counted) whose mean
    normalised distance is at least the observed one; NaN without splits (``n_perm=0``)."""
    if not n_perm:
        return math.nan, 0, False
    splits, exhaustive = _splits(k_a, k_b, n_perm, rng)
    everyone = np.arange(k_a + k_b)

    def stat(s):
        rest = tensor_of(np.setdiff1d(everyone, s))
        nd = trajectories.normalized_distance(pooled[tensor_of(s)], pooled[rest], validate=False)
        nd = np.asarray(nd)
        return float(_grid_mean(nd, np.isfinite(nd)))

    stats = np.array([stat(s) for s in splits])
    tol = 1e-12 * max(1.0, abs(observed)) if math.isfinite(observed) else 0.0  # inf >= inf counts
    return float(np.mean(stats >= observed - tol)), len(splits), exhaustive


def _grid_mean(values: np.ndarray, ok: np.ndarray):
    """The mean over the grid (the first axis) of the values at the grid values ``ok``: where both tubes have
    radius 0 in the data (runs sharing their initialisation, at progress 0) the ratio is undefined (0/0) or
    infinite and says nothing about the rest of the range. NaN where no grid value is ``ok``."""
    v = np.asarray(values, dtype=np.float64)[np.asarray(ok, dtype=bool)]
    return v.mean(0) if v.shape[0] else np.full(v.shape[1:], np.nan)
