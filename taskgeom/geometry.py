"""Bhattacharyya distances, great-circle geodesics and progress (Section 2, eqs. 2-4).

Every function takes numpy arrays (memory maps included) or torch tensors of probabilities, one model
as ``(N, C)`` or many as ``(m, N, C)``; numpy in gives numpy out, torch in gives torch out on the
same device. Inputs are checked unless ``validate=False``: NaN or infinite values, negative entries and
rows that do not sum to one raise a ``ValueError`` naming the model and sample. The default tolerance
on the sums follows the precision the data came in (float32 values that are all exactly float16 are
checked as float16 data; see :func:`taskgeom._validate.implied_tol`). ``validate=False`` skips these
checks: the results for invalid input (NaN, negative or unnormalised rows) are then unspecified and may
differ between backends (NaN on one, a number on another), but never crash. Empty inputs and invalid
tolerances are refused whatever ``validate`` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import divergences, kernels, reference
from ._validate import (
    as_tensor,
    check_choice,
    check_float,
    check_int,
    check_labels,
    check_probabilities,
    check_tol,
    default_tol,
    same_events,
    to_output,
)


def _recheck(exc: ValueError, tol, checks) -> None:
    """After a kernel's validation failed with the dtype's tolerance: re-raise unless the tolerance was
    the default and the precision-aware Python check (which names the precision) passes every input."""
    if tol is not None or "sum to" not in str(exc):
        raise exc
    for t, name in checks:
        if t is not None:
            check_probabilities(t, name, None)  # raises the precision-aware message if really unnormalised


def _nonempty(t: torch.Tensor, name: str) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name}: empty array of shape {tuple(t.shape)}; every dimension must be at least 1")


__all__ = [
    "Ignorance",
    "Truth",
    "ignorance",
    "truth",
    "bhattacharyya",
    "pairwise_distances",
    "geodesic",
    "progress",
    "per_class_progress",
    "geodesic_progress",
]


@dataclass(frozen=True)
class Ignorance:
    """P0: the model that predicts ``1/C`` for every class on each of ``n`` samples, never stored densely."""

    n: int
    c: int

    def dense(self, dtype=torch.float64, device=None) -> torch.Tensor:
        return torch.full((self.n, self.c), 1.0 / self.c, dtype=dtype, device=device)


@dataclass(frozen=True, eq=False)
class Truth:
    """P*: the model that puts probability one on each sample's label, never stored densely."""

    labels: torch.Tensor
    c: int

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    def dense(self, dtype=torch.float64, device=None) -> torch.Tensor:
        lab = self.labels.to(device) if device is not None else self.labels
        return torch.nn.functional.one_hot(lab, self.c).to(dtype)


def ignorance(n: int, c: int) -> Ignorance:
    """The ignorant model P0 on ``n`` samples and ``c`` classes (``p^n(y) = 1/c``)."""
    return Ignorance(check_int(n, "n", minimum=1), check_int(c, "c", minimum=1))


def truth(labels, c: int | None = None) -> Truth:
    """The true model P* of the labels ``(N,)`` (``c`` defaults to ``max(labels) + 1``)."""
    lab = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if lab.numel() == 0:
        raise ValueError("labels: empty; the truth needs at least one sample")
    c = int(lab.max()) + 1 if c is None else check_int(c, "c", minimum=1)
    return Truth(check_labels(lab, lab.numel(), c), c)


def _special(x):
    return isinstance(x, (Ignorance, Truth))


def _model(x, name, validate, tol=None):
    t, was_np = as_tensor(x, name)
    tol = check_tol(tol)
    _nonempty(t, name)
    if validate:
        check_probabilities(t, name, tol)
    return t, was_np


def _dense(x, like: torch.Tensor | None):
    device = like.device if like is not None else None
    return x.dense(torch.float64, device)


def _per_sample_special(p: torch.Tensor, s) -> torch.Tensor:
    """Per-sample d_B between dense models p (..., N, C) and P0 or P*, in float64, O(NC)."""
    if p.shape[-1] != s.c or p.shape[-2] != s.n:
        raise ValueError(f"shape mismatch: models are {tuple(p.shape[-2:])}, the {type(s).__name__} is ({s.n}, {s.c})")
    sp = reference.normalized(p).sqrt()
    if isinstance(s, Truth):
        py = torch.gather(sp, -1, s.labels.to(p.device).expand(sp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        return -torch.log(py.clamp_min(reference.BC_FLOOR))
    u = 1.0 / math.sqrt(s.c)
    h = 0.5 * ((sp - u) ** 2).sum(-1)
    bc = sp.sum(-1) * u
    return torch.where(h <= 0.5, -torch.log1p(-h.clamp(max=0.5)), -torch.log(bc.clamp_min(reference.BC_FLOOR)))


def bhattacharyya(p, q, reduction: str = "mean", validate: bool = True, tol: float | None = None):
    """Bhattacharyya distance between models (eq. 2).

    Parameters
    ----------
    p, q : array (..., N, C), or :class:`Ignorance` / :class:`Truth`
        Probabilities; leading dimensions broadcast.
    reduction : {"mean", "none"}
        ``"mean"`` averages over samples (eq. 2); ``"none"`` returns per-sample values (..., N).

    Returns
    -------
    float64 array of shape (...) or (..., N). Computed as ``-log(1 - h)`` with
    ``h = 1/2 ||sqrt p - sqrt q||^2`` (no cancellation for nearby models); disjoint supports give the
    per-sample value ``-log(BC_FLOOR)``, about 69.08.

    Examples
    --------
    >>> import numpy as np, taskgeom as tg
    >>> labels = np.array([0, 1, 2])
    >>> round(float(tg.bhattacharyya(tg.ignorance(3, 3), tg.truth(labels, 3))), 6)  # 1/2 log C
    0.549306
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if _special(p) and _special(q):
        if (p.n, p.c) != (q.n, q.c):
            raise ValueError(f"shape mismatch: ({p.n}, {p.c}) vs ({q.n}, {q.c})")
        if type(p) is type(q):
            same = isinstance(p, Ignorance) or bool(torch.equal(p.labels, q.labels))
            per = torch.zeros(p.n, dtype=torch.float64) if same else _per_sample_special(p.dense(), q)
        else:
            per = torch.full((p.n,), 0.5 * math.log(p.c), dtype=torch.float64)
        was_np = True
    elif _special(q) or _special(p):
        model, special = (p, q) if _special(q) else (q, p)
        t, was_np = _model(model, "models", validate, tol)
        per = _per_sample_special(t, special)
    else:
        a, was_np = _model(p, "p", validate, tol)
        b, was_np_b = _model(q, "q", validate, tol)
        same_events(a, b, ("p", "q"))
        per = reference.bhattacharyya_per_sample(a, b.to(a.device))
    out = per.mean(-1) if reduction == "mean" else per
    return to_output(out, was_np)


def _as_models(x, name):
    t, was_np = as_tensor(x, name)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"{name}: expected (m, N, C) or a sequence of (N, C) models, got shape {tuple(t.shape)}")
    return t, was_np


def pairwise_distances(
    models,
    others=None,
    divergence: str = "bhattacharyya",
    chunk: int | None = None,
    backend: str = "auto",
    validate: bool = True,
    tol: float | None = None,
    threads: int | None = None,
    cuda_method: str = "auto",
):
    """Matrix of divergences between models, streamed over sample chunks.

    Parameters
    ----------
    models : array (m, N, C), sequence of (N, C) arrays (numpy, memory map, torch CPU or CUDA), or a
        sequence of model sets (store :class:`~taskgeom.store.Trajectory` handles or (T, N, C) arrays),
        which are streamed block by block and never concatenated (rows in the order given)
    others : array (m', N, C), optional
        Cross matrix ``D[i, j] = d(models[i], others[j])``; by default the symmetric ``m x m`` matrix of
        ``models`` (only one triangle is computed).
    divergence : {"bhattacharyya", "symmetric_kl", "hellinger"}
        Bhattacharyya distance (eq. 2), Jeffreys' symmetric KL (Appendix C) or the squared Hellinger
        distance ``1 - BC``, each averaged over samples (the registry :mod:`taskgeom.divergences`).
    chunk : int, optional
        Samples per streamed chunk (default: chosen from the cache size).
    backend : {"auto", "cpu", "cuda", "torch"}
        See :mod:`taskgeom.kernels`. ``"torch"`` is the float64 reference. ``"cuda"`` with host data
        (e.g. a memory map larger than GPU memory) streams sample chunks through pinned buffers,
        overlapping copies with compute; the result equals the in-memory one.
    cuda_method : {"auto", "tiled", "gram64", "fp64tc"}
        On the GPU: taskgeom's tiled kernel, float64 Gram matrices through cuBLAS, or taskgeom's fused
        float64 tensor-core kernel (sm_80+); the last two for Bhattacharyya and squared Hellinger only
        (relative error about 1e-16 / d per sample); ``auto`` takes ``fp64tc`` where FP64 tensor cores
        are fast; see :func:`taskgeom.kernels.pairwise`.

    Returns
    -------
    float64 array (m, m') with zero diagonal in the symmetric case, accumulated over samples in float64.
    Accuracy of the C++ and CUDA kernels (float64 input, against ``backend="torch"``, the float64
    reference): for near-identical models the error is *absolute*, about 1e-16 per entry (3e-17 at
    d = 1e-11 .. 1e-15, 9e-16 at d = 1e-7, measured at N = 2000, C = 10), so the *relative* error is about
    1e-16 / d: below 1e-6 only for d above about 1e-10, 3e-4 at d = 1e-13 and several percent at d = 1e-15.
    At typical distances the C++ kernel's logarithm (a polynomial on the exactly reduced argument, relative
    error at most 7e-9) sets it: relative error up to 2e-8, absolute up to 1.4e-9 (measured at d = 0.07-0.71,
    C = 10 and 100, N = 500, Dirichlet models). ``backend="torch"`` keeps float64's relative precision at
    any d.

    ``chunk`` (an integer >= 1) and ``threads`` (an integer >= 1) are never rounded; ``tol`` is a finite
    number >= 0.
    """
    if chunk is not None:
        chunk = check_int(chunk, "chunk", minimum=1)
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    check_choice(cuda_method, "cuda_method", kernels.CUDA_METHODS)
    divergence = divergences.get(divergence).name  # a ValueError lists the registered names
    opts = dict(divergence=divergence, chunk=chunk, backend=backend, validate=validate, tol=tol, threads=threads)
    opts["cuda_method"] = cuda_method
    if _is_blocks(models) or (others is not None and _is_blocks(others)):
        return _blockwise(models, others, opts)
    tol = check_tol(tol)
    a, b, was_np = _operands(models, others)
    backend = kernels.resolve(backend, a, *([] if b is None else [b]))
    sources = (models if isinstance(models, np.ndarray) else None, others if isinstance(others, np.ndarray) else None)
    try:
        out = _pairwise_checked(a, b, opts, backend, default_tol(a.dtype) if tol is None else tol, validate, sources)
    except ValueError as exc:
        if not validate:
            raise
        _recheck(exc, tol, [(a, "models"), (b, "others")])
        # valid at the precision the data came in: checked above
        out = _pairwise_checked(a, b, opts, backend, default_tol(a.dtype), False, sources)
    return to_output(out, was_np)


def _operands(models, others) -> tuple:
    """(a, b, was_numpy): the model sets as tensors, non-empty, on the same events (b None without others)."""
    a, was_np = _as_models(models, "models")
    _nonempty(a, "models")
    b = None
    if others is not None:
        b, _ = _as_models(others, "others")
        _nonempty(b, "others")
        same_events(a, b)
    return a, b, was_np


def _pairwise_checked(a, b, opts: dict, backend: str, tol: float, validate: bool, sources: tuple):
    """One kernel call of :func:`pairwise_distances` on tensors, the probabilities checked first where the
    kernel does not check them while it streams (the C++ kernel, and host data streamed through the GPU)."""
    streamed = backend == "cuda" and not a.is_cuda  # host data streamed through the GPU, checked per chunk
    if validate and backend != "cpu" and not streamed:
        check_probabilities(a, "models", tol)
        if b is not None:
            check_probabilities(b, "others", tol)
    return kernels.pairwise(
        a,
        b,
        opts["divergence"],
        backend,
        chunk=opts["chunk"],
        threads=opts["threads"],
        validate=validate,
        tol=tol,
        cuda_method=opts["cuda_method"],
        a_src=sources[0],
        b_src=sources[1],
    )


def _is_blocks(x) -> bool:
    """A sequence of model sets (store trajectories or (T, N, C) arrays) rather than of single models."""
    from .store import Trajectory

    return (
        isinstance(x, (list, tuple))
        and len(x) > 0
        and all(isinstance(e, Trajectory) or (hasattr(e, "ndim") and e.ndim == 3) for e in x)
    )


def _blocks(x):
    from .store import Trajectory

    if not _is_blocks(x):
        return [x]
    return [e.probs if isinstance(e, Trajectory) else e for e in x]


def _blockwise(models, others, opts):
    """The divergence matrix of concatenated model sets, one kernel call per pair of blocks, so that
    memory-mapped trajectories are streamed in place and never concatenated in memory."""
    rows = _blocks(models)
    cols = rows if others is None else _blocks(others)
    sizes_r = [len(b) for b in rows]
    sizes_c = [len(b) for b in cols]
    out = np.zeros((sum(sizes_r), sum(sizes_c)))
    offs_r = np.concatenate([[0], np.cumsum(sizes_r)])
    offs_c = np.concatenate([[0], np.cumsum(sizes_c)])
    pairs = [(i, j) for i in range(len(rows)) for j in range(len(cols)) if others is not None or j >= i]
    from tqdm.auto import tqdm

    # a bar on a terminal when there is much to do (quiet otherwise)
    big = sum(sizes_r) * sum(sizes_c) * int(np.prod(rows[0].shape[1:])) > 2e10
    for i, j in tqdm(pairs, desc="distances (blocks of models)", unit="block", disable=None if big else True):
        bi, bj = rows[i], cols[j]
        if len(bi) == 0 or len(bj) == 0:
            continue
        same = others is None and i == j
        d = pairwise_distances(bi, None if same else bj, **opts)
        d = np.asarray(torch.as_tensor(d).cpu())
        out[offs_r[i] : offs_r[i + 1], offs_c[j] : offs_c[j + 1]] = d
        if others is None and not same:
            out[offs_c[j] : offs_c[j + 1], offs_r[i] : offs_r[i + 1]] = d.T
    return out


def geodesic(p, q, lam, validate: bool = True):
    """Points on the great circle from ``p`` to ``q`` (eq. 3).

    Parameters
    ----------
    p, q : array (N, C), or :class:`Ignorance` / :class:`Truth`
    lam : float or array (L,)
        0 gives ``p``, 1 gives ``q``. Identical endpoints give the endpoint for every lambda.

    Returns
    -------
    float64 array (N, C), or (L, N, C) for a vector of lambdas.
    """
    tensors = {}
    for name, x in (("p", p), ("q", q)):
        if not _special(x):
            tensors[name] = _model(x, name, validate)
    ref, was_np = next(iter(tensors.values())) if tensors else (None, True)
    a = tensors["p"][0] if "p" in tensors else _dense(p, ref)
    b = tensors["q"][0] if "q" in tensors else _dense(q, ref)
    same_events(a, b, ("p", "q"))
    if isinstance(lam, (bool, np.bool_)) or np.asarray(lam).dtype.kind not in "fiu":
        raise TypeError(f"lam must be a real number or an array of them, got {np.asarray(lam).dtype}")
    lam_arr = np.asarray(lam, dtype=np.float64)
    if np.any(~np.isfinite(lam_arr)):
        raise ValueError("lam must be finite")
    return to_output(reference.geodesic(a, b.to(a.device), torch.as_tensor(lam_arr)), was_np)


def progress(
    models,
    labels,
    backend: str = "auto",
    validate: bool = True,
    tol: float | None = None,
    xtol: float = 1e-12,
    threads: int | None = None,
):
    """Progress of models on the task of ``labels`` (eq. 4).

    ``t_w = argmin_{lambda in [0, 1]} d_B(P_w, P^lambda_{0,*})``: 0 for ignorance, 1 for the truth.
    The objective depends on each model through two numbers per sample (its inner products with
    sqrt P0 and sqrt P*), and is convex in lambda; it is minimised by a bracketed Newton iteration to
    ``xtol`` (default 1e-12; a finite number > 0, at most 1).

    Parameters
    ----------
    models : array (N, C) or (..., N, C)
    labels : int array (N,)

    Returns
    -------
    float64 scalar or array of shape (...).
    """
    tol = check_tol(tol)
    xtol = check_float(xtol, "xtol", positive=True, maximum=1.0)
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    t, was_np = as_tensor(models, "models")
    if t.dim() < 2:
        raise ValueError(f"models: expected (N, C) or (..., N, C), got shape {tuple(t.shape)}")
    _nonempty(t, "models")
    lead = t.shape[:-2]
    lab = check_labels(labels, t.shape[-2], t.shape[-1])
    a = t.reshape(-1, t.shape[-2], t.shape[-1])
    backend = kernels.resolve(backend, a)

    def run(tol_v, validate_):
        if validate_ and backend != "cpu":
            check_probabilities(t, "models", tol_v)
        return kernels.progress(a, lab, backend, threads=threads, validate=validate_, tol=tol_v, xtol=xtol)

    try:
        out = run(default_tol(a.dtype) if tol is None else tol, validate)
    except ValueError as exc:
        if not validate:
            raise
        _recheck(exc, tol, [(t, "models")])
        out = run(default_tol(a.dtype), False)  # valid at the precision the data came in: checked above
    out = out.reshape(lead)
    return to_output(out, was_np)


def per_class_progress(models, labels, classes=None, validate: bool = True, xtol: float = 1e-12):
    """Progress of models on each class separately (Fig. 2a): eq. (4) restricted to the samples whose
    label is that class, on the geodesic from ignorance to the truth of those samples.

    Returns float64 (..., K) for the K classes in ``classes`` (default: all C); a class without
    samples gives NaN.
    """
    xtol = check_float(xtol, "xtol", positive=True, maximum=1.0)
    t, was_np = _model(models, "models", validate)
    lab = check_labels(labels, t.shape[-2], t.shape[-1]).to(t.device)
    if classes is None:
        classes = range(t.shape[-1])
    else:
        classes = [check_int(c, "classes[]", minimum=0, maximum=t.shape[-1] - 1) for c in np.atleast_1d(classes)]
    alpha, beta, theta = reference.ignorance_truth_products(t, lab)
    outs = []
    for c in classes:
        w = (lab == c).to(torch.float64)
        if not bool(w.any()):
            outs.append(torch.full(t.shape[:-2], math.nan, dtype=torch.float64, device=t.device))
            continue
        outs.append(reference.solve_lambda(alpha, beta, theta, weights=w, xtol=xtol))
    return to_output(torch.stack(outs, -1), was_np)


def geodesic_progress(models, start, end, validate: bool = True, xtol: float = 1e-12):
    """Projection of models onto the geodesic from ``start`` to ``end``: the lambda in [0, 1] that
    minimises ``d_B(P_w, P^lambda_{start,end})`` (eq. 4 for any geodesic; with ``start`` = ignorance
    and ``end`` = truth this is :func:`progress`).

    ``start`` and ``end`` are (N, C) arrays or :class:`Ignorance` / :class:`Truth`. Returns float64 (...).
    """
    xtol = check_float(xtol, "xtol", positive=True, maximum=1.0)
    t, was_np = _model(models, "models", validate)
    u = _dense(start, t) if _special(start) else _model(start, "start", validate)[0]
    v = _dense(end, t) if _special(end) else _model(end, "end", validate)[0]
    same_events(t, u, ("models", "start"))
    same_events(t, v, ("models", "end"))
    sp = reference.normalized(t).sqrt()
    su, sv = reference.normalized(u.to(t.device)).sqrt(), reference.normalized(v.to(t.device)).sqrt()
    alpha, beta = (sp * su).sum(-1), (sp * sv).sum(-1)
    theta = reference.half_angle(u.to(t.device), v.to(t.device))
    return to_output(reference.solve_lambda(alpha, beta, theta, xtol=xtol), was_np)
