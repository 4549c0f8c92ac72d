"""InPCA at the follow-up's scale: without W in memory, and with landmarks when even D is too big.

* :func:`inpca_out_of_core`: the top-k eigenpairs of ``W = -1/2 J D J`` by magnitude (both ends of the
  spectrum: eq. 10 needs the negative ones too) by Lanczos (ARPACK ``eigsh``, ``which="LM"``) on an
  operator that double-centres ``D`` on the fly while streaming row blocks of ``D`` from disk; the
  explained stress uses the exact ``||W||_F^2``, streamed once. On a GPU, when ``D`` fits in device
  memory, torch's dense solver is used instead.
* :func:`landmark_inpca`: ``L`` landmark models (random or farthest-point), the InPCA of their ``L x L``
  distances, and every model placed out of sample from its distances to the landmarks (the
  generalisation of landmark MDS to an indefinite W; the same formula as :meth:`Embedding.transform`), with
  the approximation error measured on a held-out sample of models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import embedding as _embedding
from . import geometry as _geometry
from .modelsets import open_models
from .tiled import DEFAULT_BUDGET, DistanceMatrix

__all__ = ["inpca_out_of_core", "landmark_inpca", "LandmarkInPCA", "procrustes_correlation"]


def _row_blocks(D, budget: int):
    if isinstance(D, DistanceMatrix):
        yield from D.row_blocks(budget)
        return
    m = D.shape[0]
    step = max(1, int(budget // max(1, 8 * m)))
    for r0 in range(0, m, step):
        yield r0, np.asarray(D[r0 : r0 + step], dtype=np.float64)


def _open(D):
    from pathlib import Path

    if isinstance(D, (str, Path)):
        p = Path(D)
        return DistanceMatrix(p) if p.is_dir() else np.load(p, mmap_mode="r")
    return D


def _centring(D, m: int, budget: int):
    """Row means, grand mean and ||W||_F^2 of W = -1/2 J D J, in two streamed passes over D."""
    row = np.empty(m)
    for r0, blk in _row_blocks(D, budget):
        if not np.all(np.isfinite(blk)):
            raise ValueError(f"D has non-finite entries in rows {r0}..{r0 + len(blk) - 1}")
        row[r0 : r0 + len(blk)] = blk.mean(1)
    grand = float(row.mean())
    total = 0.0
    for r0, blk in _row_blocks(D, budget):
        w = -0.5 * (blk - row[r0 : r0 + len(blk), None] - row[None, :] + grand)
        total += float(np.einsum("ij,ij->", w, w))
    return row, grand, total


def inpca_out_of_core(
    D, k: int = 10, budget: int = DEFAULT_BUDGET, tol: float = 1e-10, device: str = "cpu", seed: int = 0
):
    """InPCA (eqs. 9-11) of a symmetric divergence matrix that need not fit in memory.

    ``D``: a distance folder written by ``pairwise_distances(..., out=PATH)`` (or its path), a ``.npy``
    path, or an ``(m, m)`` array or memory map. ``budget``: bytes of D held at once. Returns the same
    embedding as :func:`taskgeom.inpca` (top ``k`` by magnitude), with ``total_sq`` the exact
    ``||W||_F^2``, so ``explained_stress`` and ``transform`` work as for the dense solver.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    D = _open(D)
    m = D.m if isinstance(D, DistanceMatrix) else D.shape[0]
    if not 1 <= k < m:
        raise ValueError(f"k must be in [1, {m - 1}] for the iterative solver, got {k}")
    row, grand, total = _centring(D, m, budget)
    if device != "cpu":
        dense = _on_gpu(D, m, k, row, grand, device)
        if dense is not None:
            vals, vecs = dense
            return _finish(vals, vecs, k, total, row, grand)

    def matvec(x):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.empty(m)
        for r0, blk in _row_blocks(D, budget):
            y[r0 : r0 + len(blk)] = blk @ x
        s = x.sum()
        return -0.5 * (y - row * s - row @ x + grand * s)

    op = LinearOperator((m, m), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(m)
    vals, vecs = eigsh(op, k=k, which="LM", tol=tol, v0=v0)
    return _finish(vals, vecs, k, total, row, grand)


def _on_gpu(D, m, k, row, grand, device):
    """Top-k by magnitude with torch's dense solver on the GPU when W fits (else None)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return None
    free = torch.cuda.mem_get_info(dev)[0]
    if 3 * 8 * m * m > 0.8 * free:  # W, eigenvectors and workspace
        return None
    W = torch.empty((m, m), dtype=torch.float64, device=dev)
    r = torch.as_tensor(row, device=dev)
    for r0, blk in _row_blocks(D, 1 << 30):
        b = torch.as_tensor(blk, device=dev)
        W[r0 : r0 + len(blk)] = -0.5 * (b - r[r0 : r0 + len(blk), None] - r[None, :] + grand)
    vals, vecs = torch.linalg.eigh(W)
    order = torch.argsort(-vals.abs())[:k]
    return vals[order].cpu().numpy(), vecs[:, order].cpu().numpy()


def _finish(vals, vecs, k, total, row, grand):
    order = np.argsort(-np.abs(vals), kind="stable")[:k]
    vals, vecs = vals[order], vecs[:, order]
    flip = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(flip == 0, 1.0, flip)[None, :]
    coords = vecs * np.sqrt(np.abs(vals))[None, :]
    return _embedding.Embedding(
        coords=coords,
        eigenvalues=vals,
        signature=np.where(vals < 0, -1, 1).astype(np.int8),
        vectors=vecs,
        total_sq=float(total),
        _row_means=row,
        _grand_mean=float(grand),
    )


@dataclass
class LandmarkInPCA:
    """A landmark InPCA: ``coords`` (m, k) of every model, the landmarks' indices and embedding, and the
    approximation error measured on ``check`` held-out models (see :func:`landmark_inpca`)."""

    coords: np.ndarray
    landmarks: np.ndarray
    embedding: object  # the InPCA of the landmarks
    error: dict

    @property
    def signature(self) -> np.ndarray:
        return self.embedding.signature

    def explained_stress(self, k: int | None = None):
        """Explained stress of the landmarks' embedding (eq. 11)."""
        return self.embedding.explained_stress(k)


def _farthest_points(ms, L: int, rng, divergence, backend, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Farthest-point landmarks: each new one maximises the distance to those chosen; returns the
    indices and the (m, L) distances computed on the way (one pass over the models per landmark)."""
    m = ms.m
    chosen = [int(rng.integers(m))]
    mind = np.full(m, np.inf)
    cols = np.empty((m, L))
    for j in range(L):
        lm = ms.block(chosen[j], chosen[j] + 1)
        for i0 in range(0, m, block):
            d = np.asarray(
                _geometry.pairwise_distances(ms.block(i0, i0 + block), lm, divergence=divergence, backend=backend)
            )[:, 0]
            cols[i0 : i0 + len(d), j] = d
        mind = np.minimum(mind, cols[:, j])
        if j + 1 < L:
            chosen.append(int(np.argmax(mind)))
    return np.array(chosen), cols


def landmark_inpca(
    models,
    n_landmarks: int = 2000,
    k: int = 3,
    method: str = "random",
    seed: int = 0,
    divergence: str = "bhattacharyya",
    backend: str = "auto",
    check: int = 500,
    budget: int = DEFAULT_BUDGET,
    progress_bar: bool = False,
) -> LandmarkInPCA:
    """Landmark InPCA of a model set too large for its ``m x m`` matrix (see the module docstring).

    ``models``: anything :func:`taskgeom.modelsets.open_models` opens. ``method``: ``"random"`` landmarks
    or ``"farthest"`` (farthest-point: spreads them over the set, at one pass over all models per
    landmark). ``check``: held-out models whose exact pairwise distances are compared with the placed
    coordinates' (Minkowski, eq. 10); ``error`` reports the relative error of those distances with ``k``
    dimensions and with all the landmarks' dimensions.
    """
    from tqdm.auto import tqdm

    ms = open_models(models)
    m = ms.m
    L = int(n_landmarks)
    if not 2 <= L <= m:
        raise ValueError(f"n_landmarks must be in [2, {m}], got {n_landmarks}")
    rng = np.random.default_rng(seed)
    per_model = ms.n * ms.c * (np.dtype(ms.dtype).itemsize + 8)
    block = max(1, int(budget // max(1, per_model + 16 * L)))
    if method == "random":
        idx = np.sort(rng.choice(m, L, replace=False))
    elif method == "farthest":
        idx, _ = _farthest_points(ms, L, rng, divergence, backend, block)
    else:
        raise ValueError(f"method must be 'random' or 'farthest', got {method!r}")
    lm = np.stack([ms.block(i, i + 1)[0] for i in idx])
    D_LL = np.asarray(_geometry.pairwise_distances(lm, divergence=divergence, backend=backend))
    emb = _embedding.inpca(D_LL, k=min(L, max(k, 10)))
    coords = np.empty((m, k))
    for i0 in tqdm(range(0, m, block), desc="placing models", unit="block", disable=not progress_bar):
        d = np.asarray(
            _geometry.pairwise_distances(ms.block(i0, i0 + block), lm, divergence=divergence, backend=backend)
        )
        coords[i0 : i0 + len(d)] = emb.transform(d)[:, :k]
    error = _placement_error(ms, idx, emb, coords, k, check, rng, divergence, backend)
    return LandmarkInPCA(coords=coords, landmarks=idx, embedding=emb, error=error)


def _placement_error(ms, landmarks, emb, coords, k, check, rng, divergence, backend) -> dict:
    rest = np.setdiff1d(np.arange(ms.m), landmarks)
    if check <= 1 or len(rest) < 2:
        return {}
    sample = np.sort(rng.choice(rest, min(check, len(rest)), replace=False))
    X = np.stack([ms.block(i, i + 1)[0] for i in sample])
    D = np.asarray(_geometry.pairwise_distances(X, divergence=divergence, backend=backend))
    sig = emb.signature[:k].astype(np.float64)
    Y = coords[sample]
    D_emb = (sig * (Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
    iu = np.triu_indices(len(sample), 1)
    rel = float(np.linalg.norm(D[iu] - D_emb[iu]) / np.linalg.norm(D[iu]))
    return {
        "models_checked": int(len(sample)),
        "dims": int(k),
        "relative_distance_error": rel,
        "landmark_explained_stress": float(emb.explained_stress(min(k, len(emb.eigenvalues)))),
    }


def procrustes_correlation(A: np.ndarray, B: np.ndarray) -> float:
    """Correlation of ``A`` with ``B`` after the best orthogonal alignment of centred ``B`` onto ``A``
    (sign flips and rotations of an embedding's axes are arbitrary): sum of singular values of
    ``A^T B`` over the product of the norms."""
    A = A - A.mean(0)
    B = B - B.mean(0)
    s = np.linalg.svd(A.T @ B, compute_uv=False)
    return float(s.sum() / (np.linalg.norm(A) * np.linalg.norm(B)))
