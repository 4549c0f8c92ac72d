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

from . import kernels, reference
from ._validate import (
    as_tensor,
    check_float,
    check_int,
    check_labels,
    check_nonempty,
    check_probabilities,
    check_tol,
    default_tol,
    label_count,
    recheck_sums,
    same_events,
    tensor_of,
    to_output,
)

__all__ = [
    "Ignorance",
    "Truth",
    "ignorance",
    "truth",
    "bhattacharyya",
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
    lab = tensor_of(labels)
    if lab.numel() == 0:
        raise ValueError("labels: empty; the truth needs at least one sample")
    c = label_count(lab) if c is None else check_int(c, "c", minimum=1)
    return Truth(check_labels(lab, lab.numel(), c), c)


def _special(x):
    return isinstance(x, (Ignorance, Truth))


def _model(x, name, validate, tol=None):
    t, was_np = as_tensor(x, name)
    tol = check_tol(tol)
    check_nonempty(t, name)
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
    return to_output(reference.geodesic(a, b.to(a.device), tensor_of(lam_arr)), was_np)


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
    check_nonempty(t, "models")
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
        recheck_sums(exc, tol, [(t, "models")])
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
