"""Imprinting (eq. 7, Appendices D and E): a classifier for a task built from features alone."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ._validate import as_tensor, check_labels, label_count, tensor_of, to_output
from .choices import HEADS  # noqa: F401 (the names, importable from here too)

__all__ = ["HEADS", "ImprintedHead", "imprint", "fit_temperature"]

#: Range of the fitted temperature (a multiplier of the logits).
TEMPERATURE_BOUNDS = (1e-6, 1e6)


def _nll_derivatives(z: torch.Tensor, y: torch.Tensor, s: float, eps: float):
    """Mean cross-entropy of ``softmax(s z)`` against the labels ``y`` smoothed by ``eps`` (``z`` centred
    per row, so the smoothed target's logit is ``(1 - eps) z_y``), and its first two derivatives in ``s``:
    ``E_p[z] - (1 - eps) z_y`` and ``Var_p[z]`` averaged over samples (so it is convex in ``s``)."""
    p = torch.softmax(s * z, dim=1)
    zy = (1.0 - eps) * z.gather(1, y[:, None]).squeeze(1)
    ez = (p * z).sum(1)
    nll = float((torch.logsumexp(s * z, dim=1) - s * zy).mean())
    return nll, float((ez - zy).mean()), float(((p * z * z).sum(1) - ez * ez).mean())


def fit_temperature(
    logits, labels, bounds=TEMPERATURE_BOUNDS, smoothing: float | None = None, tol: float = 1e-10
) -> float:
    """The scale ``s`` maximising the likelihood ``mean_n log softmax(s z_n)[y_n]`` (float64).

    ``smoothing``: the labels are smoothed by ``eps`` (mass ``eps`` spread evenly over the classes), by
    default ``1 / N``, one pseudo-count as in Laplace's rule: without it the maximum-likelihood
    temperature is infinite when the imprinting samples are separable (every prediction would become
    one-hot), while for thousands of non-separable samples it moves the fit negligibly; 0 gives the plain
    maximum-likelihood fit. The objective is convex in ``s``; its minimiser is the root of
    ``E_p[z] - (1 - eps) z_y`` (increasing in ``s``), found by Newton steps in ``u = log s`` safeguarded
    by bisection on the bracket ``bounds``. Where the likelihood still rises at the upper bound the bound
    is returned, where it falls at the lower bound the lower bound.
    """
    z, _ = as_tensor(logits, "logits")
    z = z.to(torch.float64)
    if z.dim() != 2:
        raise ValueError(f"logits must be (N, C), got {tuple(z.shape)}")
    y = check_labels(labels, z.shape[0], z.shape[1]).to(z.device)
    if not 0 < bounds[0] < bounds[1] < math.inf:
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds}")
    eps = 1.0 / z.shape[0] if smoothing is None else float(smoothing)
    if not 0 <= eps < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    z = z - z.mean(1, keepdim=True)  # softmax is invariant to a per-row shift
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    if _nll_derivatives(z, y, bounds[1], eps)[1] <= 0:
        return float(bounds[1])
    if _nll_derivatives(z, y, bounds[0], eps)[1] >= 0:
        return float(bounds[0])
    u = 0.0 if lo < 0 < hi else 0.5 * (lo + hi)
    for _ in range(200):
        s = math.exp(u)
        _, g, h = _nll_derivatives(z, y, s, eps)
        if g > 0:
            hi = u
        else:
            lo = u
        step = g / (s * h) if h > 0 else math.inf  # d/du of g(e^u) is s h
        new = u - step
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - u) < tol or hi - lo < tol:
            return math.exp(new)
        u = new
    return math.exp(u)


@dataclass
class ImprintedHead:
    """Classifier rows built by :func:`imprint`; call it on features to get probabilities."""

    weights: torch.Tensor  # (c, F): unit class directions ("cosine", "cosine-ml") or class means ("euclidean")
    head: str
    normalize_features: bool
    scale: float  # multiplies the logits: 1, or the fitted temperature ("cosine-ml")

    def logits(self, features):
        f, was_np = as_tensor(features, "features")
        f = f.to(self.weights.device, torch.float64)
        if f.dim() != 2 or f.shape[1] != self.weights.shape[1]:
            raise ValueError(f"features must be (N, {self.weights.shape[1]}), got {tuple(f.shape)}")
        if self.head == "euclidean":
            out = -(torch.cdist(f, self.weights) ** 2)
        else:
            if self.normalize_features:
                f = f / f.norm(dim=1, keepdim=True).clamp_min(1e-30)
            out = f @ self.weights.T
        return to_output(self.scale * out, was_np)

    def __call__(self, features):
        """Class probabilities (N, c): softmax of the logits."""
        f, was_np = as_tensor(features, "features")
        return to_output(torch.softmax(tensor_of(self.logits(f)), dim=1), was_np)


def imprint(
    features, labels, c: int | None = None, head: str = "cosine", normalize_features: bool = False, scale: float = 1.0
) -> ImprintedHead:
    """Imprint a classifier for a task from penultimate-layer features (eq. 7).

    Parameters
    ----------
    features : (N, F) features ``phi(x)`` of the imprinting samples.
    labels : (N,) their labels in the new task, in [0, c).
    head : {"cosine", "cosine-ml", "euclidean"}
        ``"cosine"`` (eq. 7 as printed): row c is ``h_c / ||h_c||`` with ``h_c`` the sum of the features of
        class c, the direction of largest cosine similarity to the class; logits are ``w_c . phi(x)``
        (eq. 12), the feature norm acting as the temperature (``normalize_features=True`` divides it out,
        for pure cosine logits). ``"cosine-ml"``: the same rows, the logits multiplied by one scalar
        temperature fitted by maximum likelihood on the imprinting samples themselves, labels smoothed by
        one pseudo-count (:func:`fit_temperature`; App. D reads imprinting as a likelihood: eq. 7 at scale 1 can be very
        soft when features point in similar directions). ``"euclidean"``: logits ``-||phi(x) - mu_c||^2``
        to the class means, as in the authors' released code.
    scale : multiplies the logits (a temperature); for ``"cosine-ml"`` it multiplies the fitted one.

    Any orthogonal rotation of the features leaves the predictions unchanged (Appendix E).
    """
    f, _ = as_tensor(features, "features")
    f = f.to(torch.float64)
    if f.dim() != 2:
        raise ValueError(f"features must be (N, F), got {tuple(f.shape)}")
    lab = tensor_of(labels)
    c = label_count(lab) if c is None else int(c)
    lab = check_labels(lab, f.shape[0], c).to(f.device)
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features contain NaN or inf")
    counts = torch.bincount(lab, minlength=c)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).squeeze(1).tolist()
        raise ValueError(f"classes {missing} have no imprinting samples")
    sums = torch.zeros(c, f.shape[1], dtype=torch.float64, device=f.device).index_add_(0, lab, f)
    if head != "euclidean":
        norms = sums.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("a class's features sum to zero; its direction is undefined")
        w = sums / norms
    else:
        w = sums / counts[:, None].to(torch.float64)
    out = ImprintedHead(weights=w, head=head, normalize_features=normalize_features, scale=float(scale))
    if head == "cosine-ml":
        out.scale = float(scale) * fit_temperature(dataclasses.replace(out, scale=1.0).logits(f), lab)
    return out
