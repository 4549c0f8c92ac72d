"""Trajectories of models: re-indexing by progress, distances, Riemann lengths, means and tubes
(eqs. 3-6, Remark 5, Appendix G).

A trajectory is a sequence of checkpoints ``(T, N, C)``. :func:`reindex` turns it into ``G`` models
at evenly spaced progress, on a grid over the progress the trajectories reach (:func:`progress_grid`);
every other function here works on re-indexed trajectories ``(G, N, C)`` or families of them
``(K, G, N, C)`` sharing one grid. :func:`normalized_distance` is the one Remark 5 ratio (tube radii at
each progress); ``*_replicates`` give its and the tube radius's bootstrap replicates by reweighting
per-sample terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import bootstrap as _bootstrap
from . import reference
from ._validate import (
    as_tensor,
    check_choice,
    check_float,
    check_int,
    check_labels,
    check_probabilities,
    float64_tensor,
    host_array,
    same_events,
    to_output,
)
from .geometry import progress as _progress

__all__ = [
    "progress_grid",
    "reached",
    "reindex",
    "trajectory_distance",
    "riemann_length",
    "mean_trajectory",
    "tube_radius",
    "normalized_distance",
    "normalized_distance_replicates",
    "tube_radius_replicates",
    "riemann_length_density",
    "pair_replicates",
    "PairCurve",
    "compare_families",
    "normalized_distance_interval",
]


def _traj(x, name, validate, dims=3):
    t, was_np = as_tensor(x, name)
    if t.dim() != dims:
        want = "(T, N, C)" if dims == 3 else "(K, G, N, C)"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    if validate:
        try:
            check_probabilities(t, name)
        except ValueError:
            # a point that is NaN throughout is what reindex(..., outside="nan") leaves where a run does not
            # reach the grid value: say so rather than report a bad probability
            empty = torch.isnan(t).flatten(-2).all(-1)  # (T,) or (K, G)
            if not bool(empty.any()):
                raise
            where = [int(i) for i in torch.nonzero(empty)[0]]
            point = f"run {where[0]}, point {where[1]}" if len(where) > 1 else f"point {where[0]}"
            raise ValueError(
                f"{name}: {point} is NaN throughout: a grid value the run does not reach "
                "(reindex(..., outside='nan')); compare runs on the progress they share "
                "(progress_grid(..., shared=True))"
            ) from None
    return t, was_np


def _grid(grid) -> torch.Tensor:
    if isinstance(grid, (bool, np.bool_, float, np.floating)):
        raise TypeError(f"grid must be an int (points) or a 1-d array of progress values, got {grid!r}")
    if isinstance(grid, (int, np.integer)):
        grid = check_int(grid, "grid", minimum=1)
        return (
            torch.linspace(0.0, 1.0, int(grid), dtype=torch.float64)
            if grid > 1
            else torch.zeros(1, dtype=torch.float64)
        )
    g = float64_tensor(grid, "cpu")
    if g.dim() != 1 or bool(((g < 0) | (g > 1) | ~torch.isfinite(g)).any()):
        raise ValueError("grid must be an int or a 1-d array of progress values in [0, 1]")
    return g


def progress_grid(checkpoint_progress, points: int, shared: bool = False) -> np.ndarray:
    """Evenly spaced progress values over the range that trajectories actually reach (Remark 4 without
    extrapolation): the grid for :func:`reindex` when trajectories are compared.

    ``checkpoint_progress``: one array of per-checkpoint progress per trajectory. A trajectory reaches
    every value between its lowest and highest progress (successive checkpoints are joined by geodesics,
    along which progress is continuous). ``shared=False``: ``points`` values from the lowest to the highest
    progress any trajectory reaches, keeping only values that some trajectory reaches (so a gap between
    disjoint ranges is left out); ``shared=True``: from the highest start to the lowest end, the range every
    trajectory reaches (a ValueError if there is none). Returns float64 (at most ``points`` values).
    """
    points = check_int(points, "points", minimum=1)
    ranges = []
    for k, tk in enumerate(checkpoint_progress):
        tk = np.asarray(tk, dtype=np.float64).ravel()
        if tk.size == 0 or not np.isfinite(tk).all():
            raise ValueError(f"checkpoint_progress[{k}] must be a non-empty array of finite progress values")
        ranges.append((tk.min(), tk.max()))
    if not ranges:
        raise ValueError("checkpoint_progress holds no trajectory")
    lo, hi = np.array(ranges).T
    a, b = (lo.max(), hi.min()) if shared else (lo.min(), hi.max())
    if a > b:
        raise ValueError(f"the trajectories share no progress range (highest start {a:.4g} > lowest end {b:.4g})")
    g = np.linspace(a, b, int(points)) if points > 1 else np.array([a])
    some = ((lo[None] <= g[:, None]) & (g[:, None] <= hi[None])).any(1)
    return g[some]


def reached(checkpoint_progress, grid) -> np.ndarray:
    """(G,) bool: the values of ``grid`` that every trajectory reaches, from the highest start to the
    lowest end; elsewhere :func:`reindex` repeats a trajectory's first or last checkpoint (its ``inside``,
    when given the same progress). ``checkpoint_progress``: one array of per-checkpoint progress per
    trajectory (two or more checkpoints each: a single checkpoint reaches nothing). The one definition of
    "reached": the analysis's per-run and per-group masks and :class:`taskgeom.analysis.TrajectoryGroups`
    use it."""
    runs = [np.asarray(tk, dtype=np.float64).ravel() for tk in checkpoint_progress]
    g = np.asarray(grid, dtype=np.float64)
    if not runs or any(tk.size < 2 for tk in runs):
        return np.zeros(g.shape, dtype=bool)
    lo, hi = max(float(tk.min()) for tk in runs), min(float(tk.max()) for tk in runs)
    return (g >= lo) & (g <= hi)


def _segment_progress(alpha0, beta0, alpha1, beta1, phi, lam, theta0):
    """Progress of the geodesic point at ``lam`` between two checkpoints, from their inner products
    with sqrt P0 and sqrt P* (linear in the point's square root), O(N) per evaluation."""
    a, b = reference._geodesic_weights(phi, lam.unsqueeze(-1))
    return reference.solve_lambda(a * alpha0 + b * alpha1, a * beta0 + b * beta1, theta0)


def reindex(
    trajectory,
    labels,
    grid=100,
    outside: str = "clamp",
    backend: str = "auto",
    validate: bool = True,
    return_info: bool = False,
    progress=None,
):
    """Re-sample a trajectory at evenly spaced progress values (Section 2, Remark 4).

    Each output point is a point on the geodesic (eq. 3) between two successive checkpoints, chosen by
    solving for the geodesic parameter so that its progress (eq. 4) equals the requested value (to
    about 1e-10), not by interpolating linearly in lambda.

    Parameters
    ----------
    trajectory : array (T, N, C)
        Checkpoints in training order.
    labels : int array (N,)
        The task whose ignorance -> truth geodesic defines progress.
    grid : int or array (G,)
        Number of evenly spaced progress values in [0, 1] (default 100), or the values themselves.
    outside : {"clamp", "nan"}
        Progress values outside the range the trajectory reaches: ``"clamp"`` returns the checkpoint
        of lowest (resp. highest) progress, ``"nan"`` fills NaN.
    progress : array (T,), optional
        The checkpoints' progress where already computed (:func:`taskgeom.progress` of ``trajectory``);
        computed here otherwise.

    Notes
    -----
    Where progress is not monotone along training, a value is taken at its first crossing: the
    earliest pair of successive checkpoints whose progress brackets it.

    Returns
    -------
    array (G, N, C) (float64 for float64 input, float32 otherwise); with ``return_info`` also a dict
    with ``grid``, ``checkpoint_progress`` (T,), ``segment`` (G,) (index k of the checkpoint pair
    k, k+1; -1 outside), ``lam`` (G,) and ``inside`` (G,) bool.
    """
    check_choice(outside, "outside", ("clamp", "nan"))
    t, was_np = _traj(trajectory, "trajectory", validate)
    _, N, C = t.shape
    lab = check_labels(labels, N, C).to(t.device)
    taus = _grid(grid).to(t.device)
    tk = _checkpoint_progress(t, lab, progress, backend)
    alpha, beta, theta0 = reference.ignorance_truth_products(t, lab)
    seg = _first_segments(tk, taus)
    inside_mask = seg >= 0
    lam = _solve_lambda(t, tk, taus, seg, alpha, beta, theta0)
    out = _points_at(t, tk, taus, seg, lam)
    if outside == "nan":
        out[~inside_mask] = math.nan
    result = to_output(out, was_np)
    if not return_info:
        return result
    info = {"grid": taus, "checkpoint_progress": tk, "segment": seg, "lam": lam, "inside": inside_mask}
    return result, {key: host_array(v) for key, v in info.items()}


def _checkpoint_progress(t: torch.Tensor, lab: torch.Tensor, progress, backend: str) -> torch.Tensor:
    """(T,) float64 on ``t``'s device: ``progress`` as given (one value per checkpoint), else computed."""
    if progress is None:
        progress = _progress(t, lab, backend=backend, validate=False)
    tk = float64_tensor(progress, t.device)
    if tk.shape != (t.shape[0],):
        raise ValueError(f"progress must hold one value per checkpoint ({t.shape[0]},), got shape {tuple(tk.shape)}")
    return tk


def _first_segments(tk: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
    """(G,) for each progress value, the index k of the first pair of checkpoints k, k+1 whose progress
    ``tk`` brackets it (-1 where none does)."""
    G, T = taus.numel(), tk.numel()
    seg = torch.full((G,), -1, dtype=torch.int64, device=tk.device)
    if T > 1:
        lo_t = torch.minimum(tk[:-1], tk[1:])
        hi_t = torch.maximum(tk[:-1], tk[1:])
        inside = (lo_t[None] <= taus[:, None]) & (taus[:, None] <= hi_t[None])  # (G, T-1)
        found = inside.any(1)
        first = inside.to(torch.int8).argmax(1)
        seg = torch.where(found, first, seg)
    return seg


def _solve_lambda(t, tk, taus, seg, alpha, beta, theta0) -> torch.Tensor:
    """(G,) the geodesic parameter on each value's segment at which progress equals the value (0 outside)."""
    G = taus.numel()
    inside_mask = seg >= 0
    lam = torch.zeros(G, dtype=torch.float64, device=t.device)
    if not bool(inside_mask.any()):
        return lam
    idx = torch.nonzero(inside_mask).squeeze(1)
    k = seg[idx]
    a0, b0, a1, b1 = alpha[k], beta[k], alpha[k + 1], beta[k + 1]
    used, where = torch.unique(k, return_inverse=True)  # each segment's angles once
    phi = torch.stack([reference.half_angle(t[int(j)], t[int(j) + 1]) for j in used])[where]
    target = taus[idx]
    # Illinois regula falsi on f(lam) = progress(lam) - target, f(0) f(1) <= 0.
    lo = torch.zeros_like(target)
    hi = torch.ones_like(target)
    flo = _segment_progress(a0, b0, a1, b1, phi, lo, theta0) - target
    fhi = _segment_progress(a0, b0, a1, b1, phi, hi, theta0) - target
    x = torch.where(flo.abs() <= fhi.abs(), lo, hi)
    done = (flo.abs() < 1e-12) | (fhi.abs() < 1e-12) | (tk[k] == tk[k + 1])
    side = torch.zeros_like(target)
    for _ in range(100):
        denom = fhi - flo
        cand = torch.where(denom != 0, (lo * fhi - hi * flo) / torch.where(denom != 0, denom, 1.0), 0.5 * (lo + hi))
        cand = torch.where((cand > lo) & (cand < hi), cand, 0.5 * (lo + hi))
        x = torch.where(done, x, cand)
        fx = _segment_progress(a0, b0, a1, b1, phi, x, theta0) - target
        same_as_hi = torch.sign(fx) == torch.sign(fhi)
        new_hi = torch.where(same_as_hi & ~done, x, hi)
        new_lo = torch.where(~same_as_hi & ~done, x, lo)
        flo_n = torch.where(~same_as_hi & ~done, fx, torch.where(side == 1, flo / 2, flo))
        fhi_n = torch.where(same_as_hi & ~done, fx, torch.where(side == -1, fhi / 2, fhi))
        side = torch.where(same_as_hi, torch.ones_like(side), -torch.ones_like(side))
        lo, hi, flo, fhi = new_lo, new_hi, flo_n, fhi_n
        done = done | (fx.abs() < 1e-12) | (hi - lo < 1e-14)
        if bool(done.all()):
            break
    lam[idx] = torch.where(flo.abs() < 1e-12, lo, x).clamp(0, 1)
    lam[idx] = torch.where((tk[k] == tk[k + 1]), torch.zeros_like(target), lam[idx])
    return lam


def _points_at(t, tk, taus, seg, lam) -> torch.Tensor:
    """(G, N, C) the geodesic points; outside the reached range the extreme checkpoints (clamped)."""
    G, (_, N, C) = taus.numel(), t.shape
    inside_mask = seg >= 0
    start = torch.where(inside_mask, seg, torch.where(taus < tk.min(), tk.argmin(), tk.argmax()))
    end = torch.where(inside_mask, seg + 1, start)
    out_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    out = torch.empty((G, N, C), dtype=out_dtype, device=t.device)
    step = max(1, (1 << 24) // max(1, N * C))
    for g0 in range(0, G, step):
        sl = slice(g0, g0 + step)
        out[sl] = reference.geodesic_at(t[start[sl]], t[end[sl]], lam[sl]).to(out_dtype)
    return out


def _per_grid_db(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return reference.bhattacharyya(a, b.to(a.device))


def trajectory_distance(a, b, grid=None, validate: bool = True):
    """Distance between two re-indexed trajectories (eq. 5): ``int_0^1 d_B(P_a(t), P_b(t)) dt`` by the
    trapezoidal rule on their common grid (uniform on [0, 1] unless ``grid`` gives the values). Over a
    ``grid`` that spans part of [0, 1] (a shared range: :func:`progress_grid`) it is the integral over that
    span, not normalised by its width (divide by ``grid[-1] - grid[0]`` for the mean distance).

    ``a``, ``b``: arrays (G, N, C). Returns a float.
    """
    ta, _ = _traj(a, "a", validate)
    tb, _ = _traj(b, "b", validate)
    if ta.shape[0] != tb.shape[0]:
        raise ValueError(f"a and b have different numbers of grid points ({ta.shape[0]} vs {tb.shape[0]})")
    same_events(ta, tb, ("a", "b"))
    d = _per_grid_db(ta, tb)
    if d.numel() == 1:
        return float(d[0])
    x = _grid(d.numel() if grid is None else grid).to(d.device)
    return float(torch.trapezoid(d, x) / (x[-1] - x[0]))


def riemann_length(trajectory, refine="geodesic", validate: bool = True) -> float:
    """Riemann length of a trajectory (eq. 6) in the paper's ``2 sum sqrt(d_B)`` convention.

    Parameters
    ----------
    trajectory : array (T, N, C)
    refine : "geodesic", int or None
        ``"geodesic"`` (default): successive checkpoints are joined by their geodesic (eq. 3) and its
        exact length ``sqrt(2 mean_n theta_n^2)`` is used (the limit of refining; theta_n the per-sample
        half-angle), so the geodesic P0 -> P* has length ``sqrt(2) arccos(1/sqrt C)``. An int r splits
        each segment into r geodesic steps and sums ``2 sqrt(d_B)``; None (or 1) uses the raw checkpoints.
        Anything else (``1.7``, ``True``, another string) is refused, never rounded.
    """
    if isinstance(refine, str):
        if refine != "geodesic":
            raise ValueError(f"refine must be 'geodesic', None or a positive int, got {refine!r}")
    elif refine is not None:
        refine = check_int(refine, "refine", minimum=1)
    t, _ = _traj(trajectory, "trajectory", validate)
    if t.shape[0] < 2:
        return 0.0
    total = 0.0
    for k in range(t.shape[0] - 1):
        p, q = t[k], t[k + 1]
        if refine == "geodesic":
            theta = reference.half_angle(p, q)
            total += math.sqrt(2.0 * float((theta**2).mean()))
            continue
        r = 1 if refine is None else refine
        pts = (
            reference.geodesic(p, q, torch.linspace(0, 1, r + 1, dtype=torch.float64))
            if r > 1
            else torch.stack([p.to(torch.float64), q.to(torch.float64)])
        )
        d = reference.bhattacharyya(pts[:-1], pts[1:]).clamp_min(0)
        total += float(2.0 * d.sqrt().sum())
    return total


def riemann_length_density(trajectory, strides=(1, 2, 3), validate: bool = True) -> dict:
    """How the Riemann length (eq. 6, geodesic refinement) depends on how densely checkpoints were
    recorded: ``{stride: length}`` keeping every ``stride``-th checkpoint (the first and the last always
    kept). Geodesics between checkpoints are the shortest paths, so thinning can only shorten a
    trajectory; a length that still drops a lot from stride 1 to 2 has not converged in the checkpoint
    density, and comparisons of lengths recorded at different densities are then unfair."""
    t, _ = _traj(trajectory, "trajectory", validate)
    out = {}
    for stride in strides:
        stride = check_int(stride, "stride", minimum=1)
        keep = sorted(set(range(0, t.shape[0], stride)) | {t.shape[0] - 1})
        out[stride] = riemann_length(t[keep], validate=False)
    return out


def _family(x, name, validate):
    if isinstance(x, (list, tuple)):
        x = torch.stack([as_tensor(e, name)[0] for e in x])
    return _traj(x, name, validate, dims=4)


def mean_trajectory(
    trajectories, method: str = "arithmetic", iters: int = 100, tol: float = 1e-12, validate: bool = True
):
    """Mean of K re-indexed trajectories (Appendix G), shape (G, N, C).

    ``method="arithmetic"`` (the paper's choice) averages probabilities; ``"bhattacharyya"`` computes the
    Bhattacharyya centroid per sample, ``argmax_s sum_k log <sqrt p_k, s>`` on the unit sphere, by the
    fixed-point iteration ``s <- normalise(sum_k sqrt p_k / <sqrt p_k, s>)``.
    """
    check_choice(method, "method", ("arithmetic", "bhattacharyya"))
    iters = check_int(iters, "iters", minimum=1)
    tol = check_float(tol, "tol", nonnegative=True)
    t, was_np = _family(trajectories, "trajectories", validate)
    if method == "arithmetic":
        return to_output(t.to(torch.float64).mean(0), was_np)
    sp = reference.normalized(t).sqrt()  # (K, G, N, C)
    s = sp.mean(0)
    s = s / s.norm(dim=-1, keepdim=True)
    for _ in range(iters):
        bc = (sp * s).sum(-1, keepdim=True).clamp_min(reference.BC_FLOOR)
        new = (sp / bc).sum(0)
        new = new / new.norm(dim=-1, keepdim=True)
        delta = float((new - s).abs().max())
        s = new
        if delta < tol:
            break
    out = s * s
    return to_output(out / out.sum(-1, keepdim=True), was_np)


def tube_radius(trajectories, mean=None, validate: bool = True):
    """Radius of the tube around the mean trajectory at each grid point (Appendix G, Remark 5):
    ``r(t) = max_k d_B(P_k(t), P_mean(t))``. ``trajectories``: (K, G, N, C). Returns float64 (G,)."""
    t, was_np = _family(trajectories, "trajectories", validate)
    mu = as_tensor(mean_trajectory(t, validate=False) if mean is None else mean, "mean")[0].to(t.device)
    d = reference.bhattacharyya(t, mu.unsqueeze(0))  # (K, G)
    return to_output(d.max(0).values, was_np)


def _ratio(d: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``2 d / r`` (Remark 5), 0 where both are 0 and inf where only the radii are."""
    zero = torch.where(d > 0, torch.full_like(d, math.inf), torch.zeros_like(d))
    return torch.where(r > 0, 2 * d / torch.where(r > 0, r, 1.0), zero)


def normalized_distance(family_a, family_b, method: str = "arithmetic", validate: bool = True):
    """Distance between the mean trajectories of two families over their tube radii (Remark 5):
    ``2 d_B(mean_a(t), mean_b(t)) / (r_a(t) + r_b(t))`` at each grid point, each radius taken AT that
    progress (never averaged over the grid); below 1 the tubes intersect. The one function for normalised
    distances: the picture, the experiments and the bootstrap (:func:`normalized_distance_replicates`) use
    it. ``family_a``, ``family_b``: (K, G, N, C) on a common grid; either may hold a single trajectory
    (K = 1, radius 0). Returns float64 (G,), a curve over progress (the paper's Figs. 3b and 7b); where
    both radii are zero it is 0 if the means coincide and inf otherwise."""
    a, was_np = _family(family_a, "family_a", validate)
    b, _ = _family(family_b, "family_b", validate)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"families differ in (G, N, C): {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    ma = as_tensor(mean_trajectory(a, method, validate=False), "mean")[0].to(a.device)
    mb = as_tensor(mean_trajectory(b, method, validate=False), "mean")[0].to(a.device)
    ra = reference.bhattacharyya(a, ma.unsqueeze(0)).max(0).values
    rb = reference.bhattacharyya(b.to(a.device), mb.unsqueeze(0)).max(0).values
    return to_output(_ratio(reference.bhattacharyya(ma, mb), ra + rb), was_np)


def _seed_counts(seeds, k: int, b: int, device) -> torch.Tensor:
    """(B, K) float64 seed counts; all ones (every seed once: the estimate's means) when ``seeds`` is None."""
    if seeds is None:
        return torch.ones(b, k, dtype=torch.float64, device=device)
    s = float64_tensor(seeds, device)
    if s.shape != (b, k) or bool((s < 0).any()) or bool((s.sum(1) <= 0).any()):
        raise ValueError(f"seed counts must be (B, K) = ({b}, {k}), non-negative, each row drawing a seed")
    return s


def _replicate_chunks(families, weights, seeds, budget: int = 1 << 25):
    """For chunks of replicates: each family's mean trajectory recomputed from the seeds that replicate draws
    (weighted by their counts), and each drawn seed's sample-reweighted distance to it. Yields ``(rows, wb,
    roots, radii)``: ``rows`` the replicate indices of the chunk, ``wb`` their weights (b, N), ``roots[f]``
    (b, G, N, C) the square roots of family ``f``'s replicate means and ``radii[f]`` (b, G) its tube radii. Per-sample distances come from
    Gram products of square roots, ``-log sum_c sqrt(p q)`` (absolute error about 1e-16 per term: ample for
    intervals; the estimates themselves use the cancellation-free form)."""
    fams = [reference.normalized(f.to(torch.float64)) for f in families]
    sqrt_fams = [f.sqrt() for f in fams]
    w = float64_tensor(weights, fams[0].device)
    n_rep = w.shape[0]
    counts = [_seed_counts(s, f.shape[0], n_rep, f.device) for f, s in zip(fams, seeds)]
    per_rep = max(f[0].numel() * 2 + f.shape[0] * f[0, :, :, 0].numel() for f in fams)
    step = max(1, budget // per_rep)
    for b0 in range(0, n_rep, step):
        rows = slice(b0, min(n_rep, b0 + step))
        wb = w[rows]  # (b, N)
        roots, radii = [], []
        for f, sf, cnt in zip(fams, sqrt_fams, counts):
            cb = cnt[rows]
            root = torch.einsum("bk,kgnc->bgnc", cb / cb.sum(1, keepdim=True), f).sqrt()
            bc = torch.einsum("kgnc,bgnc->bkgn", sf, root).clamp(reference.BC_FLOOR, 1.0)
            r = -torch.einsum("bkgn,bn->bkg", torch.log(bc), wb) / bc.shape[-1]  # (b, K, G)
            r = torch.where(cb[:, :, None] > 0, r, torch.full_like(r, -math.inf)).max(1).values
            # a replicate that draws one seed only (K times) has that seed for its mean: radius exactly 0, not
            # the ~1e-17 its rounding leaves (which made normalised distances of ~1e15 instead of inf)
            r = torch.where(((cb > 0).sum(1) == 1)[:, None], torch.zeros_like(r), r)
            roots.append(root)
            radii.append(r)
        yield rows, wb, roots, radii


def _families(*fams):
    out = [_family(f, "family", False)[0] for f in fams]
    if any(f.shape[1:] != out[0].shape[1:] for f in out):
        raise ValueError(f"families differ in (G, N, C): {[tuple(f.shape[1:]) for f in out]}")
    return [f.to(out[0].device) for f in out]


def pair_replicates(family_a, family_b, weights, seeds_a=None, seeds_b=None) -> tuple:
    """Bootstrap replicates (G, B) of :func:`normalized_distance` and of the Bhattacharyya distance between
    the two (arithmetic) mean trajectories. Replicate ``b`` resamples the evaluation samples (counts
    ``weights[b]``, (B, N); all ones: the estimate) and each family's seeds (counts ``seeds_a[b]``
    (B, K_a), ``seeds_b[b]`` (B, K_b); None: every seed once): the mean trajectories are recomputed from
    the seeds drawn, and each tube radius is the largest reweighted distance of a drawn seed to its
    replicate's mean. A replicate that draws one seed of a family K times has radius 0 there."""
    a, b = _families(family_a, family_b)
    w = float64_tensor(weights, a.device)
    nd = torch.empty(a.shape[1], w.shape[0], dtype=torch.float64, device=a.device)
    db = torch.empty_like(nd)
    for rows, wb, (sa, sb), (ra, rb) in _replicate_chunks([a, b], w, [seeds_a, seeds_b]):
        bc = (sa * sb).sum(-1).clamp(reference.BC_FLOOR, 1.0)  # (b, G, N)
        d = -torch.einsum("bgn,bn->bg", torch.log(bc), wb) / bc.shape[-1]  # (b, G)
        nd[:, rows] = _ratio(d, ra + rb).T
        db[:, rows] = d.T
    return host_array(nd), host_array(db)


def normalized_distance_replicates(family_a, family_b, weights, seeds_a=None, seeds_b=None) -> np.ndarray:
    """Bootstrap replicates (G, B) of :func:`normalized_distance` over evaluation samples and seeds, the
    mean trajectories recomputed in every replicate (:func:`pair_replicates`)."""
    return pair_replicates(family_a, family_b, weights, seeds_a, seeds_b)[0]


def tube_radius_replicates(trajectories, weights, seeds=None) -> np.ndarray:
    """Bootstrap replicates (G, B) of :func:`tube_radius` (arithmetic mean): per replicate, the mean
    trajectory of the seeds drawn (``seeds`` (B, K) counts; None: every seed once) and the largest
    reweighted (``weights`` (B, N)) distance of a drawn seed to it."""
    (t,) = _families(trajectories)
    w = float64_tensor(weights, t.device)
    out = torch.empty(t.shape[1], w.shape[0], dtype=torch.float64, device=t.device)
    for rows, _w, _means, (r,) in _replicate_chunks([t], w, [seeds]):
        out[:, rows] = r.T
    return host_array(out)


@dataclass(frozen=True)
class PairCurve:
    """Two families compared at each point of one grid: the normalised distance (Remark 5) ``normalized``
    (G,) and, with a bootstrap, its replicates (G, B) and those of the Bhattacharyya distance between the
    mean trajectories (:func:`pair_replicates`; None without one)."""

    normalized: np.ndarray
    replicates: np.ndarray | None = None
    bhattacharyya_replicates: np.ndarray | None = None


def compare_families(
    family_a, family_b, boot=None, a: str | None = None, b: str | None = None, validate: bool = True
) -> PairCurve:
    """The one comparison of two families (K, G, N, C) on one grid, as :func:`taskgeom.compare`,
    :func:`taskgeom.analyse`'s task distances and the family scripts make it: the normalised distance at
    each point and, with ``boot`` (a :class:`taskgeom.bootstrap.Resampling` that draws groups ``a`` and
    ``b``), its replicates over evaluation samples and both groups' seeds, the means and tube radii
    recomputed in every replicate (:func:`pair_replicates`)."""
    nd = host_array(normalized_distance(family_a, family_b, validate=validate))
    if boot is None or not boot.n_boot:
        return PairCurve(nd)
    missing = [g for g in (a, b) if g not in boot.seeds]
    if missing:
        raise ValueError(
            f"the bootstrap draws no seeds for group(s) {missing}; name the two groups it drew: {list(boot.seeds)}"
        )
    reps, db_reps = pair_replicates(family_a, family_b, boot.w, boot.seeds[a], boot.seeds[b])
    return PairCurve(nd, reps, db_reps)


def normalized_distance_interval(
    family_a, family_b, n_boot: int = 200, level: float = 0.95, seed: int = 0, weights=None
):
    """Bootstrap interval over evaluation samples of :func:`normalized_distance` at each grid point.

    Every quantity in the ratio is a mean over samples of per-sample terms (the distance between the two
    mean trajectories, each seed's distance to its family's mean), so a bootstrap replicate reweights the
    per-sample terms with multinomial counts instead of recomputing anything
    (:func:`normalized_distance_replicates`, :mod:`taskgeom.bootstrap`): ``n_boot`` replicates cost
    about as much as one evaluation. The mean trajectories are per-sample averages over seeds and do not
    change under resampling of samples (:func:`pair_replicates` also resamples seeds). Returns ``{"low", "high"}`` (float64 (G,) each, the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles). ``weights`` (B, N) replaces the random
    counts (for tests)."""
    level = check_float(level, "level")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if weights is None:
        n_boot = check_int(n_boot, "n_boot", minimum=1)
        seed = check_int(seed, "seed", minimum=0)
        n = as_tensor(family_a[0] if isinstance(family_a, (list, tuple)) else family_a, "family_a")[0].shape[-2]
        weights = _bootstrap.sample_weights(n, n_boot, seed)
    lo, hi = _bootstrap.percentile_interval(normalized_distance_replicates(family_a, family_b, weights), level)
    return {"low": lo, "high": hi}
