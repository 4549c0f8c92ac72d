"""The geometry in plain torch, in float64: every kernel's maths written once, for clarity and accuracy.

One module, three uses, all of the same functions: the ``backend="torch"`` of every public function (the
float64 path that keeps relative precision at any distance); the maths of the Python layer where no
kernel is needed (geodesics, the geodesic projection's ``solve_lambda``, normalisation of stored rows);
and, for the tests and benchmarks, the float64 oracle the C++ and CUDA kernels are checked against
(itself checked against the paper's analytic identities in tests/test_analytic.py). The functions take
torch tensors on any device and do no input checking (the public API in :mod:`taskgeom.geometry` and
:func:`taskgeom.pairwise_distances` does). Shapes: a model is ``(N, C)``; batches put models in leading
dimensions.

Conventions (shared with the C++ and CUDA kernels):

* Stored rows are renormalised to sum to one (in float64) before any computation.

* Per-sample Bhattacharyya coefficients are floored at :data:`BC_FLOOR`, so disjoint supports give
  the finite per-sample distance ``-log(BC_FLOOR)`` (about 69.08).
* Symmetric KL is Jeffreys' divergence ``KL(p||q) + KL(q||p)``, averaged over samples, with
  probabilities floored at :data:`PROB_FLOOR` inside logarithms.
* The per-sample divergences and their names live in :mod:`taskgeom.divergences` (the registry).
"""

from __future__ import annotations

import math

import torch

from . import divergences
from .divergences import (
    BC_FLOOR,
    PROB_FLOOR,
    bhattacharyya_per_sample,
    hellinger_per_sample,
    normalized,
    symmetric_kl_per_sample,
)

__all__ = [
    "BC_FLOOR",
    "PROB_FLOOR",
    "normalized",
    "bhattacharyya_per_sample",
    "bhattacharyya",
    "hellinger_per_sample",
    "symmetric_kl_per_sample",
    "pairwise_distances",
    "pairwise_gram",
    "half_angle",
    "geodesic",
    "geodesic_at",
    "solve_lambda",
    "ignorance_truth_products",
    "progress",
]


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def bhattacharyya(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Bhattacharyya distance averaged over samples (eq. 2), shape ``broadcast(p, q)[...]``."""
    return bhattacharyya_per_sample(p, q).mean(-1)


def pairwise_distances(
    models: torch.Tensor,
    others: torch.Tensor | None = None,
    divergence: str = "bhattacharyya",
    chunk: int = 1024,
    budget: int = 1 << 24,
) -> torch.Tensor:
    """Accurate float64 divergence matrix ``(m, m')`` between ``(m, N, C)`` and ``(m', N, C)``.

    Streams over sample chunks and blocks of rows so that no ``m x m' x N x C`` tensor exists;
    every pair is computed in the cancellation-free form of :func:`bhattacharyya_per_sample`.
    """
    fn = divergences.get(divergence).per_sample
    a = models
    b = models if others is None else others
    m, n, c = a.shape
    mb = b.shape[0]
    out = torch.zeros(m, mb, dtype=torch.float64, device=a.device)
    for n0 in range(0, n, chunk):
        ac = _f64(a[:, n0 : n0 + chunk])
        bc = _f64(b[:, n0 : n0 + chunk])
        nc = ac.shape[1]
        rows = max(1, budget // max(1, mb * nc * c))
        for i0 in range(0, m, rows):
            out[i0 : i0 + rows] += fn(ac[i0 : i0 + rows, None], bc[None]).sum(-1)
    out /= n
    if others is None:
        out.fill_diagonal_(0.0)
        out = 0.5 * (out + out.T)
    return out


def pairwise_gram(
    models: torch.Tensor, others: torch.Tensor | None = None, chunk: int = 1024, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The common fast formulation (benchmark baseline, not an oracle): per sample chunk, batched
    Gram matrices ``BC_n = sqrt(P_n) sqrt(Q_n)^T`` then ``-log``; this cancels catastrophically for
    nearby models in low precision."""
    a = models
    b = models if others is None else others
    m, n, _ = a.shape
    out = torch.zeros(m, b.shape[0], dtype=torch.float64, device=a.device)
    for n0 in range(0, n, chunk):
        sa = a[:, n0 : n0 + chunk].to(dtype).sqrt().transpose(0, 1)  # (nc, m, C)
        sb = b[:, n0 : n0 + chunk].to(dtype).sqrt().transpose(0, 1)
        bc = torch.bmm(sa, sb.transpose(1, 2))  # (nc, m, m')
        out += (-torch.log(bc.clamp_min(1e-30))).sum(0).to(torch.float64)
    return out / n


def half_angle(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-sample ``d_G^n = arccos(sum_c sqrt(p q))`` of eq. (3), computed as
    ``2 asin(||sqrt p - sqrt q|| / 2)`` (accurate for nearby points)."""
    sp, sq = normalized(p).sqrt(), normalized(q).sqrt()
    return 2 * torch.asin((((sp - sq) ** 2).sum(-1).sqrt() / 2).clamp(max=1.0))


def _geodesic_weights(theta: torch.Tensor, lam: torch.Tensor):
    """a = sin((1-l) t)/sin t, b = sin(l t)/sin t with their t -> 0 limits."""
    small = theta < 1e-7
    st = torch.where(small, torch.ones_like(theta), torch.sin(theta))
    a = torch.where(small, 1 - lam, torch.sin((1 - lam) * theta) / st)
    b = torch.where(small, lam + 0 * theta, torch.sin(lam * theta) / st)
    return a, b


def geodesic(p: torch.Tensor, q: torch.Tensor, lam) -> torch.Tensor:
    """Points ``P^lambda_{p,q}`` on the great circle between two models (eq. 3).

    ``lam`` is a scalar or a tensor of shape ``(L,)``; the result has shape ``(N, C)`` or ``(L, N, C)``
    (with any leading batch dimensions of ``p``/``q`` after L). Rows are renormalised to sum to 1
    to remove rounding.
    """
    lam_t = torch.as_tensor(lam, dtype=torch.float64, device=p.device)
    scalar = lam_t.dim() == 0
    lam_t = lam_t.reshape(-1)
    sp, sq = normalized(p).sqrt(), normalized(q).sqrt()
    theta = half_angle(p, q)  # (..., N)
    lam_b = lam_t.reshape((-1,) + (1,) * theta.dim())
    a, b = _geodesic_weights(theta.unsqueeze(0), lam_b)
    s = a.unsqueeze(-1) * sp + b.unsqueeze(-1) * sq
    out = s * s
    out = out / out.sum(-1, keepdim=True)
    return out[0] if scalar else out


def geodesic_at(p: torch.Tensor, q: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Pointwise version of :func:`geodesic`: ``p``, ``q`` of shape ``(..., N, C)`` and one lambda per
    leading index (``lam`` broadcastable to ``p.shape[:-2]``)."""
    lam = torch.as_tensor(lam, dtype=torch.float64, device=p.device)
    sp, sq = normalized(p).sqrt(), normalized(q).sqrt()
    theta = half_angle(p, q)
    a, b = _geodesic_weights(theta, lam.unsqueeze(-1))
    s = a.unsqueeze(-1) * sp + b.unsqueeze(-1) * sq
    out = s * s
    return out / out.sum(-1, keepdim=True)


def solve_lambda(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    theta,
    weights: torch.Tensor | None = None,
    xtol: float = 1e-12,
    max_iter: int = 200,
) -> torch.Tensor:
    """argmin over lambda in [0, 1] of ``-sum_n w_n log(a_n(l) alpha_n + b_n(l) beta_n) / sum w``.

    ``alpha_n = <sqrt p_n, sqrt u_n>``, ``beta_n = <sqrt p_n, sqrt v_n>`` for a model p and the geodesic
    u -> v of per-sample half-angle ``theta_n`` (a and b as in eq. 3). Batched over leading dimensions.
    The objective is convex (D'' = -theta^2 D), so a Newton iteration on its derivative, safeguarded
    by the bracket, converges quadratically.
    """
    alpha, beta = _f64(alpha), _f64(beta)
    theta = torch.as_tensor(theta, dtype=torch.float64, device=alpha.device).expand_as(alpha)
    w = torch.ones_like(alpha) if weights is None else _f64(weights).expand_as(alpha)
    wsum = w.sum(-1)
    small = theta < 1e-7
    st = torch.where(small, torch.ones_like(theta), torch.sin(theta))

    def derivs(lam):
        lam = lam.unsqueeze(-1)
        a = torch.where(small, 1 - lam, torch.sin((1 - lam) * theta) / st)
        b = torch.where(small, lam.expand_as(theta), torch.sin(lam * theta) / st)
        ap = torch.where(small, -torch.ones_like(theta), -theta * torch.cos((1 - lam) * theta) / st)
        bp = torch.where(small, torch.ones_like(theta), theta * torch.cos(lam * theta) / st)
        d = a * alpha + b * beta
        dp = ap * alpha + bp * beta
        live = w > 0
        blow = ((d <= 0) & live).any(-1)
        r = torch.where(live & (d > 0), dp / torch.where(d > 0, d, torch.ones_like(d)), torch.zeros_like(d))
        g = -(w * r).sum(-1) / wsum
        h = (w * (theta**2 + r**2)).sum(-1) / wsum
        g = torch.where(blow, torch.full_like(g, math.inf), g)
        return g, h

    shape = alpha.shape[:-1]
    zeros = torch.zeros(shape, dtype=torch.float64, device=alpha.device)
    g0, _ = derivs(zeros)
    g1, _ = derivs(zeros + 1)
    lo, hi, lam = zeros.clone(), zeros + 1, zeros + 0.5
    done = (g0 >= 0) | (g1 <= 0)
    for _ in range(max_iter):
        g, h = derivs(lam)
        hi = torch.where(g > 0, lam, hi)
        lo = torch.where(g > 0, lo, lam)
        nxt = lam - g / h
        nxt = torch.where((nxt > lo) & (nxt < hi), nxt, 0.5 * (lo + hi))
        step = (nxt - lam).abs()
        lam = torch.where(done, lam, nxt)
        done = done | (step < 1e-3 * xtol) | (hi - lo < xtol)
        if bool(done.all()):
            break
    lam = torch.where(g0 >= 0, zeros, lam)
    lam = torch.where((g0 < 0) & (g1 <= 0), zeros + 1, lam)
    return lam


def ignorance_truth_products(models: torch.Tensor, labels: torch.Tensor):
    """``alpha_n = <sqrt p_n, sqrt P0_n>``, ``beta_n = <sqrt p_n, sqrt P*_n>`` and the constant half-angle
    ``arccos(1/sqrt C)`` of the ignorance -> truth geodesic."""
    c = models.shape[-1]
    sp = normalized(models).sqrt()
    alpha = sp.sum(-1) / math.sqrt(c)
    idx = labels.to(models.device).expand(sp.shape[:-1]).unsqueeze(-1)
    beta = torch.gather(sp, -1, idx).squeeze(-1)
    return alpha, beta, math.acos(1 / math.sqrt(c))


def progress(
    models: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None, xtol: float = 1e-12
) -> torch.Tensor:
    """Progress (eq. 4) of ``(..., N, C)`` models on the ignorance -> truth geodesic of ``labels``."""
    alpha, beta, theta = ignorance_truth_products(models, labels)
    return solve_lambda(alpha, beta, theta, weights=weights, xtol=xtol)
