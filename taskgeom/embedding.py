"""InPCA embeddings (eqs. 9-11), explained stress (Appendix F) and the random stochastic projection
of Appendix A.2."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from ._validate import (
    as_float64_array,
    as_tensor,
    check_choice,
    check_float,
    check_int,
    check_probabilities,
    float64_tensor,
    to_output,
)

__all__ = ["Embedding", "InPCA", "inpca", "explained_stress", "random_projection"]


def explained_stress(eigenvalues, k: int | None = None, total_sq: float | None = None):
    """Explained stress ``chi_k = 1 - sqrt(sum_{i>k} s_i^2 / sum_i s_i^2)`` (eqs. 11, 13).

    Parameters
    ----------
    eigenvalues : array
        Signed eigenvalues of W (any order; the top k by magnitude are kept).
    k : int, optional
        Number of dimensions; by default an array for k = 1..len(eigenvalues).
    total_sq : float, optional
        ``||W||_F^2 = sum_i s_i^2`` over *all* eigenvalues, when only the top ones are given.
    """
    ev = as_float64_array(np.atleast_1d(eigenvalues), "eigenvalues")
    ev = np.sort(np.abs(ev.reshape(-1)))[::-1]
    if ev.size == 0 or not np.all(np.isfinite(ev)):
        raise ValueError("eigenvalues must be a non-empty array of finite numbers")
    sq = ev**2
    total = float(sq.sum()) if total_sq is None else check_float(total_sq, "total_sq", nonnegative=True)
    if total <= 0:
        raise ValueError("explained stress is undefined for W = 0 (all distances zero)")
    kept = np.cumsum(sq)
    chi = 1.0 - np.sqrt(np.clip(1.0 - kept / total, 0.0, None))
    if k is None:
        return chi
    k = check_int(k, "k", minimum=1)
    if not k <= len(ev):
        raise ValueError(f"k must be in [1, {len(ev)}], got {k}")
    return float(chi[k - 1])


@dataclass
class Embedding:
    """An InPCA embedding of m models (eqs. 9-11), as returned by :func:`inpca`.

    Attributes
    ----------
    coords : (m, k) array ``X = U sqrt|Sigma|``; with the signature, ``sum_i s_i (X_u^i - X_v^i)^2 = D_uv``
        when all dimensions are kept (eq. 10, Minkowski).
    eigenvalues : (k,) signed eigenvalues of ``W = -L D L / 2``, sorted by decreasing magnitude.
    signature : (k,) +1 for space-like, -1 for time-like (negative eigenvalue) axes.
    vectors : (m, k) eigenvectors U.
    total_sq : ``||W||_F^2``, the sum of all squared eigenvalues (for explained stress from the top k).
    """

    coords: np.ndarray
    eigenvalues: np.ndarray
    signature: np.ndarray
    vectors: np.ndarray
    total_sq: float
    _row_means: np.ndarray = field(repr=False)
    _grand_mean: float = field(repr=False)

    def explained_stress(self, k: int | None = None):
        """chi_k of eq. (11) for the top ``k`` dimensions (default: all computed, as an array over k)."""
        return explained_stress(self.eigenvalues, k, self.total_sq)

    def transform(self, distances) -> np.ndarray:
        """Place new models into this embedding from their divergences ``(m_new, m)`` to the embedded
        models (out-of-sample extension of the double-centred matrix): for an embedded model this
        reproduces its coordinates exactly."""
        d = np.atleast_2d(np.asarray(distances, dtype=np.float64))
        if d.shape[1] != self.coords.shape[0]:
            raise ValueError(
                f"distances must have {self.coords.shape[0]} columns (one per embedded model), got shape {d.shape}"
            )
        b = -0.5 * (d - d.mean(1, keepdims=True) - self._row_means[None, :] + self._grand_mean)
        return (b @ self.vectors) * (np.sqrt(np.abs(self.eigenvalues)) / self.eigenvalues)[None, :]


def inpca(D, k: int | None = None, method: str = "auto") -> Embedding:
    """InPCA embedding of a divergence matrix (eqs. 9-11).

    Parameters
    ----------
    D : (m, m) symmetric array of Bhattacharyya distances (zero diagonal).
    k : int, optional
        Dimensions to keep (default: all m).
    method : {"auto", "dense", "lanczos"}
        ``"dense"`` diagonalises W fully; ``"lanczos"`` computes only the top k by magnitude with
        ARPACK (scipy.sparse.linalg.eigsh), which needs ``k <= m - 1``: ``k = m`` with ``"lanczos"`` is
        refused (a ValueError), never truncated; ``"auto"`` uses Lanczos when k < m / 4 and m > 500.

    ``k`` must be an integer (``k=2.5`` raises, it is never rounded).
    """
    check_choice(method, "method", ("auto", "dense", "lanczos"))
    if k is not None:
        k = check_int(k, "k", minimum=1)
    Dm = _checked_divergences(D)
    Dm = 0.5 * (Dm + Dm.T)
    m = Dm.shape[0]
    k = m if k is None else k
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}], got {k}")
    if method == "lanczos" and k >= m:
        raise ValueError(
            f"k must be in [1, {m - 1}] with method='lanczos' (ARPACK's limit), got {k}: use method='dense' "
            "for all dimensions"
        )
    row = Dm.mean(1)
    grand = float(Dm.mean())
    W = -0.5 * (Dm - row[:, None] - row[None, :] + grand)
    total_sq = float((W**2).sum())
    if method == "auto":
        method = "lanczos" if (k < m / 4 and m > 500) else "dense"
    if method == "dense":
        vals, vecs = np.linalg.eigh(W)
    elif method == "lanczos":
        from scipy.sparse.linalg import eigsh

        vals, vecs = eigsh(W, k=k, which="LM")
    order = np.argsort(-np.abs(vals), kind="stable")[:k]
    vals, vecs = vals[order], vecs[:, order]
    # fix each eigenvector's sign (largest entry positive) so embeddings are reproducible
    flip = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(flip == 0, 1.0, flip)[None, :]
    coords = vecs * np.sqrt(np.abs(vals))[None, :]
    return Embedding(
        coords=coords,
        eigenvalues=vals,
        signature=np.where(vals < 0, -1, 1).astype(np.int8),
        vectors=vecs,
        total_sq=total_sq,
        _row_means=row,
        _grand_mean=grand,
    )


def _checked_divergences(D) -> np.ndarray:
    """``D`` as a float64 array after the checks of a divergence matrix: square, non-empty, finite, symmetric,
    non-negative, zero diagonal (each a one-line ValueError naming an entry)."""
    Dm = as_float64_array(D, "D")
    if Dm.ndim != 2 or Dm.shape[0] != Dm.shape[1]:
        raise ValueError(f"D must be a square matrix, got shape {Dm.shape}")
    if Dm.shape[0] < 1:
        raise ValueError("D is empty (0 x 0): an embedding needs at least one model")
    if not np.all(np.isfinite(Dm)):
        i, j = np.argwhere(~np.isfinite(Dm))[0]
        raise ValueError(f"D has non-finite entries (NaN or inf): D[{i}, {j}] = {Dm[i, j]}")
    scale = max(1.0, float(np.abs(Dm).max()))
    asym = np.abs(Dm - Dm.T).max()
    if asym > 1e-8 * scale:
        raise ValueError(f"D must be symmetric (max |D - D^T| = {asym:.3g})")
    if Dm.min() < -1e-12 * scale:
        i, j = np.argwhere(Dm == Dm.min())[0]
        raise ValueError(f"Negative values in data: D must hold divergences (>= 0), but D[{i}, {j}] = {Dm[i, j]:.6g}")
    diag = np.abs(np.diag(Dm))
    if diag.max() > 1e-12 * scale:
        i = int(np.argmax(diag))
        raise ValueError(
            f"D must have a zero diagonal (a model's divergence from itself), but D[{i}, {i}] = {Dm[i, i]:.6g}"
        )
    return Dm


class InPCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """InPCA on precomputed divergences, as a scikit-learn transformer (eqs. 9-11).

    ``fit(D)`` takes the ``(m, m)`` divergence matrix of the models to embed (symmetric, zero diagonal,
    e.g. from :func:`taskgeom.pairwise_distances`); ``transform(D_new)`` places new models from their
    ``(m_new, m)`` divergences to the fitted ones (the out-of-sample extension of :meth:`Embedding.transform`;
    for a fitted model it returns its own coordinates); ``fit_transform(D)`` returns the fitted coordinates.

    Parameters
    ----------
    n_components : int, optional
        Dimensions to keep (default: all m).
    eigen_solver : {"auto", "dense", "lanczos"}
        As ``method`` in :func:`inpca`.
    metric : {"precomputed"}
        The input is always a precomputed divergence matrix (sklearn's name for it, as in
        ``sklearn.manifold.MDS``); no other value is accepted.

    Attributes
    ----------
    embedding_ : (m, n_components) coordinates of the fitted models.
    eigenvalues_ : (n_components,) signed eigenvalues, by decreasing magnitude.
    signature_ : (n_components,) +1 space-like, -1 time-like.
    n_features_in_ : m, the number of fitted models (the columns ``transform`` expects).
    """

    def __init__(self, n_components: int | None = None, eigen_solver: str = "auto", metric: str = "precomputed"):
        self.n_components = n_components
        self.eigen_solver = eigen_solver
        self.metric = metric

    def fit(self, X, y=None):
        """Embed the models of the ``(m, m)`` divergence matrix ``X``; ``y`` is ignored."""
        if self.metric != "precomputed":
            raise ValueError(f"metric must be 'precomputed' (InPCA takes a divergence matrix), got {self.metric!r}")
        # finiteness, symmetry, sign and diagonal are checked by inpca, with messages naming the entry
        D = validate_data(self, X, dtype=np.float64, reset=True, ensure_all_finite=False)
        if not np.all(np.isfinite(D)):
            i, j = np.argwhere(~np.isfinite(D))[0]
            raise ValueError(f"D has non-finite entries (NaN or inf): D[{i}, {j}] = {D[i, j]}")
        emb = inpca(D, k=self.n_components, method=self.eigen_solver)
        self.embedding_result_ = emb
        self.embedding_ = emb.coords
        self.eigenvalues_ = emb.eigenvalues
        self.signature_ = emb.signature
        self._n_features_out = emb.coords.shape[1]  # output names inpca0, inpca1, ... (set_output works)
        return self

    def transform(self, X):
        """Coordinates of models given by their ``(m_new, m)`` divergences to the fitted models."""
        check_is_fitted(self, "embedding_result_")
        d = validate_data(self, X, dtype=np.float64, reset=False)
        return self.embedding_result_.transform(d)

    def fit_transform(self, X, y=None):
        """``fit(X)`` and the fitted models' coordinates."""
        return self.fit(X).embedding_

    def explained_stress(self, k: int | None = None):
        """chi_k of eq. (11) for the top ``k`` dimensions (default: an array over k = 1..n_components)."""
        check_is_fitted(self, "embedding_result_")
        return self.embedding_result_.explained_stress(k)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = True  # X is (m, m): models against models
        tags.input_tags.positive_only = True  # divergences are >= 0
        return tags


def random_projection(models, c_out: int, seed: int = 0, return_matrix: bool = False, validate: bool = True):
    """Project each sample's prediction onto ``c_out`` random "classes" (Appendix A.2).

    A random column-stochastic matrix R (``c_out x C``, each column a Dirichlet(1) draw, so it sums to 1)
    maps ``p^n`` to ``R p^n``, again a probability vector. Models ``(..., N, C)`` become
    ``(..., N, c_out)``; the same ``seed`` gives the same R.
    """
    c_out = check_int(c_out, "c_out", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    t, was_np = as_tensor(models, "models")
    if validate:
        check_probabilities(t, "models")
    c = t.shape[-1]
    rng = np.random.default_rng(seed)
    R = rng.dirichlet(np.ones(c_out), size=c).T  # (c_out, C), columns sum to 1
    Rt = float64_tensor(R, t.device)
    out = t.to(torch.float64) @ Rt.T
    out = to_output(out, was_np)
    return (out, R) if return_matrix else out
