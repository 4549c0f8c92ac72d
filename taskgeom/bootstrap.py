"""Bootstrap intervals by reweighting per-sample terms (issue 11).

Every statistic of the picture is built from per-sample terms on one evaluation set: a Bhattacharyya
distance is the mean over samples of ``-log sum_c sqrt(p q)`` (eq. 2), progress minimises a mean over
samples (eq. 4), tube radii are maxima of such means and InPCA embeds a matrix of them. Resampling the
evaluation samples with replacement therefore only reweights those terms: a replicate with multinomial
counts ``w`` (summing to N) is the same statistic with every mean over samples replaced by
``sum_n w_n term_n / N``; probabilities are never recomputed, and all-ones weights give the point
estimate exactly. Where a family has two or more seeds, its seeds are resampled too (multinomial counts
over seeds, :func:`seed_weights`), and every statistic that averages over seeds (mean trajectories, tube
radii, the embedded points) is recomputed from the seeds each replicate draws. One random generator,
seeded, draws every weight, so intervals are reproducible.
"""

from __future__ import annotations

import numpy as np
import torch

from . import embedding, reference
from ._validate import as_tensor, check_float, check_int, check_labels, float64_tensor, host_array, tensor_of
from .pairwise import weighted_distances

__all__ = [
    "MIN_SEEDS",
    "Resampling",
    "sample_weights",
    "seed_weights",
    "percentile_interval",
    "above_estimate",
    "summary",
    "reweighted_mean",
    "progress_replicates",
    "stress_replicates",
]

#: Seeds are resampled wherever a family has at least this many (one seed: nothing to resample).
MIN_SEEDS = 2


def sample_weights(n: int, n_boot: int, rng) -> np.ndarray:
    """Multinomial resampling counts ``(n_boot, n)`` of ``n`` samples (each row sums to ``n``)."""
    n, n_boot = check_int(n, "n", minimum=1), check_int(n_boot, "n_boot", minimum=1)
    rng = np.random.default_rng(_seed(rng))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _seed(rng):
    """A Generator as given, else an integer seed >= 0 (or None: fresh entropy); nothing else is coerced."""
    if rng is None or isinstance(rng, (np.random.Generator, np.random.BitGenerator, np.random.SeedSequence)):
        return rng
    return check_int(rng, "seed", minimum=0)


def seed_weights(k: int, n_boot: int, rng) -> np.ndarray:
    """Resampling counts ``(n_boot, k)`` over ``k`` seeds; all ones when ``k < MIN_SEEDS``."""
    k, n_boot = check_int(k, "k", minimum=1), check_int(n_boot, "n_boot", minimum=1)
    if k < MIN_SEEDS:
        return np.ones((n_boot, k))
    return sample_weights(k, n_boot, rng)


class Resampling:
    """One bootstrap shared by every statistic of an analysis: sample counts ``w`` ``(B, N)`` and, per group,
    seed counts ``seeds[group]`` ``(B, K)`` (all ones for a group of fewer than :data:`MIN_SEEDS` seeds), drawn
    in that order from one generator seeded with ``seed`` (or from ``seed`` itself when it is a
    ``numpy.random.Generator``, whose draws then continue: :func:`taskgeom.compare`'s permutations follow
    its bootstrap; ``self.seed`` is then None); nothing is drawn when ``n_boot`` is 0. ``word``
    names the groups in :meth:`over` ("task" in the main job, "group" in the family scripts). The analysis
    (:func:`taskgeom.analyse`), :func:`taskgeom.analysis.task_distances` and the experiments take it."""

    def __init__(
        self, n: int, n_boot: int, seeds_per_group: dict, seed: int | np.random.Generator = 0, level=0.95, word="group"
    ):
        if isinstance(n_boot, bool) or int(n_boot) < 0:
            raise ValueError(f"n_boot must be >= 0, got {n_boot}")
        # seed: an int, or a Generator whose draws continue (taskgeom.compare's, shared with its permutations)
        own = not isinstance(seed, np.random.Generator)
        self.n_boot, self.level, self.seed, self.word = int(n_boot), float(level), int(seed) if own else None, word
        rng = np.random.default_rng(seed) if own else seed
        self.w = sample_weights(n, n_boot, rng) if self.n_boot else None
        self.seeds = {g: seed_weights(k, n_boot, rng) for g, k in seeds_per_group.items()} if self.n_boot else {}

    def over(self, *groups: str) -> str:
        """What an interval of ``groups`` (all of them when none is named) covers, seed counts included."""
        counts = [f"{g}: {self.seeds[g].shape[1]}" for g in (groups or self.seeds)]
        return f"evaluation samples and seeds (seeds per {self.word}: {', '.join(counts)})"

    def seed_mean(self, group: str, reps) -> np.ndarray:
        """``(B,)`` replicates of a mean over ``group``'s seeds from per-seed replicates ``(K, B)``: each
        replicate weights the seeds by the counts it draws."""
        s = self.seeds[group]
        return (s.T * np.asarray(reps, dtype=np.float64)).sum(0) / s.sum(1)

    def point_index(self, members: dict, counts) -> list:
        """Per replicate, the indices of the stacked points it holds: run ``i`` owns ``counts[i]`` consecutive
        points (runs stacked in index order), and a replicate holds them as often as it draws the run's seed;
        ``members``: group -> its runs' indices, in seed order (the order of ``self.seeds[group]``'s
        columns). The ``index`` of :func:`stress_replicates`."""
        starts = np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])
        out = []
        for b in range(self.n_boot):
            parts = [
                np.arange(starts[i], starts[i + 1])
                for group, idx in members.items()
                for j, i in enumerate(idx)
                for _ in range(int(self.seeds[group][b, j]))
            ]
            out.append(np.concatenate(parts))
        return out

    def interval(self, reps, estimate) -> list:
        """``[low, high]`` over the last axis: the bias-corrected percentile interval around ``estimate``
        (:func:`percentile_interval`)."""
        lo, hi = percentile_interval(np.asarray(reps, dtype=np.float64), self.level, estimate=estimate)
        return [np.asarray(lo).tolist(), np.asarray(hi).tolist()]


def percentile_interval(replicates, level: float = 0.95, estimate=None):
    """``(low, high)`` over the last axis (replicates), NaN-aware (a NaN replicate, e.g. an undefined ratio, is
    left out).

    Without ``estimate``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles. With ``estimate`` (the
    statistic on the data, shaped as the replicates less their last axis): the bias-corrected percentile
    interval (Efron 1981), whose percentiles are shifted by ``z0``, the normal quantile of the share of
    replicates below the estimate. It equals the plain one when half the replicates lie on each side, and
    stays median-unbiased where resampling seeds biases a statistic (with 2-3 seeds a replicate that draws
    one seed twice has a narrower tube, so most replicates of a normalised distance lie above the estimate,
    and a plain percentile interval can miss the estimate altogether)."""
    level = check_float(level, "level")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    r = np.asarray(replicates, dtype=np.float64)
    if r.ndim == 0:
        raise ValueError("replicates must have a last axis of replicates, got a single number")
    rows = int(np.prod(r.shape[:-1], dtype=np.int64))  # (an explicit count: no replicates at all is NaN)
    if estimate is None:
        q = np.true_divide([50 * (1 - level), 50 * (1 + level)], 100)  # as np.percentile's fractions
        flat = r.reshape(rows, r.shape[-1])
        out = np.array([_quantiles(row[~np.isnan(row)], q) for row in flat]).reshape(*r.shape[:-1], 2)
        return (out[..., 0], out[..., 1]) if r.ndim > 1 else (float(out[0]), float(out[1]))
    from scipy.stats import norm

    est = np.broadcast_to(np.asarray(estimate, dtype=np.float64), r.shape[:-1])
    flat, e = r.reshape(rows, r.shape[-1]), est.reshape(-1)
    lo, hi = np.full(len(e), np.nan), np.full(len(e), np.nan)
    z = norm.ppf([(1 - level) / 2, (1 + level) / 2])
    for i, (row, x) in enumerate(zip(flat, e)):
        row = row[~np.isnan(row)]
        if not row.size or np.isnan(x):
            continue
        below = (np.count_nonzero(row < x) + 0.5 * np.count_nonzero(row == x)) / row.size
        z0 = norm.ppf(np.clip(below, 0.5 / row.size, 1 - 0.5 / row.size))
        lo[i], hi[i] = _quantiles(row, norm.cdf(2 * z0 + z))
    shape = r.shape[:-1]
    return (lo.reshape(shape), hi.reshape(shape)) if shape else (float(lo[0]), float(hi[0]))


def _quantiles(row: np.ndarray, q) -> tuple:
    """numpy's linear quantiles ``q`` of the replicates ``row`` (no NaN), NaN for none; where one falls on or
    next to an infinite replicate (a normalised distance over a tube of radius 0) it is that infinity, where
    numpy's interpolation gives NaN (``inf - inf``, ``0 * inf``)."""
    if not row.size:
        return tuple(np.nan for _ in q)
    with np.errstate(all="ignore"):
        vals = np.quantile(row, q)
    if np.isnan(vals).any():
        x, h = np.sort(row), (row.size - 1) * np.asarray(q, dtype=np.float64)
        lo_i = np.floor(h).astype(int)
        a, b = x[lo_i], x[np.minimum(lo_i + 1, row.size - 1)]
        exact = np.where(h == lo_i, a, np.where(np.isinf(a), a, b))  # on a, or towards the infinite end
        vals = np.where(np.isnan(vals), exact, vals)
    return tuple(float(v) for v in vals)


def above_estimate(replicates, estimate) -> float:
    """The share of (non-NaN) replicates above the estimate, over every entry: near 1/2 where resampling
    leaves the statistic median-unbiased (a diagnostic beside bias-corrected intervals)."""
    r = np.asarray(replicates, dtype=np.float64)
    est = np.broadcast_to(np.asarray(estimate, dtype=np.float64)[..., None], r.shape)
    ok = ~np.isnan(r) & ~np.isnan(est)
    return float(np.mean(r[ok] > est[ok])) if ok.any() else float("nan")


def summary(replicates, level: float = 0.95, keep=None, estimate=None) -> dict:
    """``{"low", "high"}`` lists (or floats) of :func:`percentile_interval` (bias-corrected with ``estimate``,
    and then ``above_estimate`` too); None outside ``keep``."""
    lo, hi = percentile_interval(replicates, level, estimate)
    extra = {} if estimate is None else {"above_estimate": above_estimate(replicates, estimate)}
    if np.ndim(lo) == 0:
        return {"low": float(lo), "high": float(hi), **extra}
    keep = np.ones(np.shape(lo), dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    return {
        "low": [float(v) if k else None for v, k in zip(np.ravel(lo), np.ravel(keep))],
        "high": [float(v) if k else None for v, k in zip(np.ravel(hi), np.ravel(keep))],
        **extra,
    }


def reweighted_mean(terms, weights) -> torch.Tensor:
    """Replicates ``(..., B)`` of the mean over the last axis of per-sample ``terms (..., N)`` under
    resampling counts ``weights (B, N)``: ``sum_n w_bn terms_n / N``."""
    t = float64_tensor(terms)
    w = float64_tensor(weights, t.device)
    if w.dim() != 2 or w.shape[1] != t.shape[-1]:
        raise ValueError(f"weights must be (B, {t.shape[-1]}), got {tuple(w.shape)}")
    return t @ (w.T / t.shape[-1])


def progress_replicates(models, labels, weights) -> torch.Tensor:
    """Replicates ``(..., B)`` of progress (eq. 4) of ``models (..., N, C)``: the weighted projection
    onto the ignorance -> truth geodesic, from the same per-sample inner products as the estimate."""
    m, _ = as_tensor(models, "models")
    lab = check_labels(labels, m.shape[-2], m.shape[-1]).to(m.device)
    alpha, beta, theta = reference.ignorance_truth_products(m.to(torch.float64), lab)
    w = float64_tensor(weights, m.device)
    if w.dim() != 2 or w.shape[1] != alpha.shape[-1]:
        raise ValueError(f"weights must be (B, {alpha.shape[-1]}), got {tuple(w.shape)}")
    shape = alpha.shape[:-1] + (w.shape[0], alpha.shape[-1])
    a, b = alpha.unsqueeze(-2).expand(shape), beta.unsqueeze(-2).expand(shape)
    return reference.solve_lambda(a, b, theta, weights=w.expand(shape))


def stress_replicates(points, weights, k: int = 5, budget: int = 1 << 24, index=None) -> np.ndarray:
    """Replicates ``(B, k)`` of the explained stress ``chi_1 .. chi_k`` (eq. 11) of the InPCA embedding of
    ``points (M, N, C)``: each replicate's distance matrix is the reweighted mean of the same per-sample
    terms, double-centred and diagonalised (all eigenvalues, dense). ``index``: per replicate, the points
    it embeds (a sequence of B integer arrays into the M points, repeats allowed: a seed drawn twice
    contributes its trajectory's points twice); None: every point once."""
    k = check_int(k, "k", minimum=1)
    budget = check_int(budget, "budget", minimum=1)
    p, _ = as_tensor(points, "points")
    p = reference.normalized(p.to(torch.float64))
    w = float64_tensor(weights, p.device)
    if p.dim() != 3 or w.dim() != 2 or w.shape[1] != p.shape[1]:
        raise ValueError(f"points must be (M, N, C) and weights (B, N), got {tuple(p.shape)}, {tuple(w.shape)}")
    m = p.shape[0]
    if index is not None and len(index) != w.shape[0]:
        raise ValueError(f"index must hold one array of point indices per replicate ({w.shape[0]}), got {len(index)}")
    chunk = max(1, (1 << 28) // (8 * m * m))  # replicates per batch: at most 256 MiB of matrices
    out = []
    for b0 in range(0, w.shape[0], chunk):
        for j, d in enumerate(weighted_distances(p, w[b0 : b0 + chunk], budget)):
            if index is not None:
                idx = tensor_of(index[b0 + j], d.device).to(torch.int64)
                d = d[idx][:, idx]
            c = d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()
            out.append(_top_stress(host_array(-0.5 * c), min(k, d.shape[0])))
    return np.array(out)


def _top_stress(w: np.ndarray, k: int) -> np.ndarray:
    """chi_1 .. chi_k of a double-centred matrix: all eigenvalues for small ones, else the top k by
    magnitude (Lanczos, a fixed start vector) with ``||W||_F^2`` as the total."""
    m = w.shape[0]
    if m <= 200 or k >= m // 4:
        return embedding.explained_stress(np.linalg.eigvalsh(w))[:k]
    from scipy.sparse.linalg import eigsh

    v0 = np.random.default_rng(0).standard_normal(m)
    ev = eigsh(w, k=k, which="LM", v0=v0, tol=1e-10, return_eigenvectors=False)
    return embedding.explained_stress(ev, total_sq=float((w**2).sum()))[:k]
