"""Imprinting (eq. 7, Appendices D and E): a classifier for a task built from features alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._validate import as_tensor, check_labels, to_output

__all__ = ["HEADS", "ImprintedHead", "imprint"]

#: The imprinted heads: eq. 7 of the paper, and class means as in the authors' released code.
HEADS = ("cosine", "euclidean")


@dataclass
class ImprintedHead:
    """Classifier rows built by :func:`imprint`; call it on features to get probabilities."""

    weights: torch.Tensor  # (c, F): unit class directions ("cosine") or class means ("euclidean")
    head: str
    normalize_features: bool
    scale: float

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
        return to_output(torch.softmax(torch.as_tensor(self.logits(f)), dim=1), was_np)


def imprint(
    features, labels, c: int | None = None, head: str = "cosine", normalize_features: bool = False, scale: float = 1.0
) -> ImprintedHead:
    """Imprint a classifier for a task from penultimate-layer features (eq. 7).

    Parameters
    ----------
    features : (N, F) features ``phi(x)`` of the imprinting samples.
    labels : (N,) their labels in the new task, in [0, c).
    head : {"cosine", "euclidean"}
        ``"cosine"`` (the paper): row c is ``h_c / ||h_c||`` with ``h_c`` the sum of the features of class
        c, the direction of largest cosine similarity to the class; logits are ``w_c . phi(x)`` (eq. 12),
        the feature norm acting as the temperature (``normalize_features=True`` divides it out, for pure
        cosine logits). ``"euclidean"``: logits ``-||phi(x) - mu_c||^2`` to the class means, as in the
        authors' released code.
    scale : multiplies the logits (a temperature).

    Any orthogonal rotation of the features leaves the predictions unchanged (Appendix E).
    """
    f, _ = as_tensor(features, "features")
    f = f.to(torch.float64)
    if f.dim() != 2:
        raise ValueError(f"features must be (N, F), got {tuple(f.shape)}")
    lab_np = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    c = int(lab_np.max()) + 1 if c is None else int(c)
    lab = check_labels(lab_np, f.shape[0], c).to(f.device)
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features contain NaN or inf")
    counts = torch.bincount(lab, minlength=c)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).squeeze(1).tolist()
        raise ValueError(f"classes {missing} have no imprinting samples")
    sums = torch.zeros(c, f.shape[1], dtype=torch.float64, device=f.device).index_add_(0, lab, f)
    if head == "cosine":
        norms = sums.norm(dim=1, keepdim=True)
        if bool((norms == 0).any()):
            raise ValueError("a class's features sum to zero; its direction is undefined")
        w = sums / norms
    else:
        w = sums / counts[:, None].to(torch.float64)
    return ImprintedHead(weights=w, head=head, normalize_features=normalize_features, scale=float(scale))
