"""InPCA at the follow-up's scale: without W in memory, and with landmarks when even D is too big.

* :func:`inpca_out_of_core`: the top-k eigenpairs of ``W = -1/2 J D J`` by magnitude (both ends of the
  spectrum: eq. 10 needs the negative ones too) by Lanczos (ARPACK ``eigsh``, ``which="LM"``) on an
  operator that double-centres ``D`` on the fly while streaming row blocks of ``D`` from disk; the
  explained stress uses the exact ``||W||_F^2``, streamed once. On a GPU, when ``D`` fits in device
  memory, torch's dense solver is used instead.
* :func:`inpca_on_device`: distances and top-k together in one device's memory (a GPU's: 150,000 models in
  about 48 GB): the upper block tiles of ``D`` (:class:`DeviceDistances`, float32 by default) computed by
  the pairwise kernels straight into device memory, then the same Lanczos as :func:`inpca_out_of_core`
  with its matrix-vector products running on the device over the stored tiles.
* :func:`landmark_inpca`: ``L`` landmark models (random or farthest-point), the InPCA of their ``L x L``
  distances, and every model placed out of sample from its distances to the landmarks (the
  generalisation of landmark MDS to an indefinite W; the same formula as :meth:`Embedding.transform`), with
  the approximation error measured on a held-out sample of models.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from . import embedding as _embedding
from ._checks import check_float, check_int
from ._validate import host_array, tensor_of
from .modelsets import open_models
from .pairwise import Blocks, FunctionSink, block_distances, execute, pairwise_distances, plan, uniform
from .tiled import DEFAULT_BUDGET, DistanceMatrix

__all__ = [
    "inpca_out_of_core",
    "inpca_on_device",
    "device_distances",
    "DeviceDistances",
    "landmark_inpca",
    "LandmarkInPCA",
    "procrustes_correlation",
]


def _row_blocks(D, budget: int):
    if isinstance(D, DistanceMatrix):
        yield from D.row_blocks(budget)
        return
    m = D.shape[0]
    step = max(1, int(budget // max(1, 8 * m)))
    for r0 in range(0, m, step):
        yield r0, np.asarray(D[r0 : r0 + step], dtype=np.float64)


def _open(D):
    """A complete distance folder (refused with one line when unfinished), a ``.npy`` memory map, or an
    (m, m) array, as something :func:`_row_blocks` streams."""
    from pathlib import Path

    if isinstance(D, DistanceMatrix):
        D.check_complete()
        return D
    if isinstance(D, (str, Path)):
        p = Path(D)
        if p.is_dir():
            dm = DistanceMatrix(p)
            dm.check_complete()
            return dm
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValueError(f"{p}: not a readable .npy matrix ({detail})") from None
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{p}: a .npz archive, not a .npy matrix: open the array inside by name")
        D = a
    if not hasattr(D, "shape") or len(D.shape) != 2 or D.shape[0] != D.shape[1]:
        raise ValueError(f"D must be a square matrix, got shape {getattr(D, 'shape', type(D).__name__)}")
    if D.shape[0] < 2:
        raise ValueError(f"D must hold at least 2 models for the iterative solver, got shape {D.shape}")
    dtype = np.dtype(getattr(D, "dtype", np.float64))
    if dtype.kind not in "fiu":
        raise ValueError(f"D must hold real numbers, got dtype {dtype}")
    return D


def _centring(D, m: int, budget: int):
    """Row means, grand mean and ||W||_F^2 of W = -1/2 J D J, in two streamed passes over D.

    The first pass also checks what :func:`taskgeom.inpca` checks of a dense matrix, with its tolerances:
    finite entries, none negative, a zero diagonal, and symmetry, the last through one random vector x
    (``D x`` against ``D^T x``, both accumulated from the same row blocks: an asymmetric D is caught with
    probability one, without holding any column of D)."""
    row = np.empty(m)
    x = np.random.default_rng(12345).standard_normal(m)
    dx, dtx = np.empty(m), np.zeros(m)
    lo, hi, diag, diag_at = np.inf, 0.0, 0.0, 0
    for r0, blk in _row_blocks(D, budget):
        r1 = r0 + len(blk)
        if not np.all(np.isfinite(blk)):
            i, j = np.argwhere(~np.isfinite(blk))[0]
            raise ValueError(f"D has non-finite entries (NaN or inf): D[{r0 + i}, {j}] = {blk[i, j]}")
        row[r0:r1] = blk.mean(1)
        dx[r0:r1] = blk @ x
        dtx += blk.T @ x[r0:r1]
        lo, hi = min(lo, float(blk.min())), max(hi, float(np.abs(blk).max()))
        d = np.abs(blk[np.arange(len(blk)), np.arange(r0, r1)])
        if d.size and float(d.max()) > diag:
            diag, diag_at = float(d.max()), r0 + int(np.argmax(d))
    scale = max(1.0, hi)
    if lo < -1e-12 * scale:
        raise ValueError(f"Negative values in data: D must hold divergences (>= 0), but its minimum is {lo:.6g}")
    if diag > 1e-12 * scale:
        raise ValueError(
            f"D must have a zero diagonal (a model's divergence from itself), but |D[{diag_at}, {diag_at}]| = "
            f"{diag:.6g}"
        )
    asym = float(np.abs(dx - dtx).max()) / max(1.0, float(np.abs(x).max()))
    if asym > 1e-8 * scale:
        raise ValueError(f"D must be symmetric (|(D - D^T) x| reaches {asym:.3g} for a random x of entries ~1)")
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

    ``D`` is checked as :func:`taskgeom.inpca` checks it (finite, non-negative, zero diagonal, symmetric;
    symmetry through a random projection, see :func:`_centring`); an unfinished distance folder is refused
    with one line saying how many tiles are missing. ``k``: an integer in ``[1, m - 1]`` (ARPACK's limit;
    use :func:`taskgeom.inpca` for all ``m``); ``budget``: a positive integer; ``tol``: finite, >= 0;
    ``seed``: an integer >= 0.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    budget = check_int(budget, "budget", minimum=1)
    tol = check_float(tol, "tol", nonnegative=True)
    seed = check_int(seed, "seed", minimum=0)
    D = _open(D)
    m = D.m if isinstance(D, DistanceMatrix) else D.shape[0]
    k = check_int(k, "k", minimum=1)
    if not k < m:
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
    r = tensor_of(row, dev)
    for r0, blk in _row_blocks(D, 1 << 30):
        b = tensor_of(blk, dev)
        W[r0 : r0 + len(blk)] = -0.5 * (b - r[r0 : r0 + len(blk), None] - r[None, :] + grand)
    vals, vecs = torch.linalg.eigh(W)
    order = torch.argsort(-vals.abs())[:k]
    return host_array(vals[order]), host_array(vecs[:, order])


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


# --- distances and top-k in one device's memory ------------------------------------------------------

_STORE_DTYPES = {"float32": 4, "float64": 8}


def _free_bytes(device) -> int | None:
    """Free memory of ``device``: the GPU's (``torch.cuda.mem_get_info``), or the host's MemAvailable
    (None where it cannot be read)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class DeviceDistances:
    """The symmetric divergence matrix of ``m`` models held as its upper block tiles ``(i <= j)`` in one
    device's memory (a GPU's, or the host's with ``device="cpu"``), as written by :func:`device_distances`.

    ``tiles[(i, j)]``: rows ``bounds[i]`` against columns ``bounds[j]`` (the last tile of a row or
    column may be smaller); diagonal tiles are stored whole. ``row_sums``: float64 row sums of the stored
    values (so that the double-centring is exactly that of the matrix the eigensolver sees).
    """

    def __init__(self, m: int, tile: int, device, dtype: str = "float32"):
        import torch

        if dtype not in _STORE_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_STORE_DTYPES)}, got {dtype!r}")
        m, tile = check_int(m, "m", minimum=1), check_int(tile, "tile", minimum=1)
        self.m, self.tile, self.device, self.dtype = m, tile, torch.device(device), dtype
        self.bounds = uniform(self.m, self.tile)
        self.plan = plan(self.bounds)  # the upper triangle's tiles, as every pairwise route plans them
        self.tiles: dict = {}
        self.row_sums = torch.zeros(self.m, dtype=torch.float64, device=self.device)
        self.work_bytes = 1 << 28  # float64 staging of tile rows for products and norms

    @staticmethod
    def nbytes_for(m: int, tile: int, dtype: str = "float32") -> int:
        """Bytes the upper block tiles of an ``m x m`` matrix take."""
        sizes = [min(m, r0 + tile) - r0 for r0 in range(0, m, tile)]
        cum = np.cumsum(sizes[::-1])[::-1]  # models in tiles i..end
        return int(sum(s * int(c) for s, c in zip(sizes, cum)) * _STORE_DTYPES[dtype])

    @property
    def nbytes(self) -> int:
        return self.nbytes_for(self.m, self.tile, self.dtype)

    def allocate(self) -> None:
        import torch

        tdt = getattr(torch, self.dtype)
        try:
            for t in self.plan:
                self.tiles[(t.i, t.j)] = torch.empty((t.r1 - t.r0, t.c1 - t.c0), dtype=tdt, device=self.device)
        except torch.OutOfMemoryError:
            need = self.nbytes
            self.tiles.clear()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            raise MemoryError(
                f"the {self.dtype} tiles of D ({need / 1e9:.1f} GB) do not fit in {self.device}'s memory: use "
                "inpca_out_of_core (D on disk) or landmark_inpca"
            ) from None

    def put(self, tile, block) -> None:
        """Store a computed tile of :attr:`plan` (a float64 array or tensor) and add its values to the row
        sums (the sink of :func:`taskgeom.pairwise.execute`)."""
        import torch

        t = self.tiles[(tile.i, tile.j)]
        t.copy_(tensor_of(block))
        self.row_sums[tile.r0 : tile.r1] += t.sum(1, dtype=torch.float64)
        if tile.mirrored:
            self.row_sums[tile.c0 : tile.c1] += t.sum(0, dtype=torch.float64)

    def _chunks(self, copy: bool):
        """(r0, r1, c0, c1, diagonal, float64 block) over the stored tiles, a few rows at a time, through
        one reused float64 buffer (``copy=False`` hands out float64 tiles themselves)."""
        import torch

        step = min(self.tile, max(1, self.work_bytes // (8 * self.tile)))
        buf = getattr(self, "_buf", None)
        if buf is None:  # one buffer for the object's life (allocating it per product costs page faults)
            buf = self._buf = torch.empty(step * self.tile, dtype=torch.float64, device=self.device)
        for (i, j), t in self.tiles.items():
            (r0, r1), (c0, c1) = self.bounds[i], self.bounds[j]
            for a in range(0, r1 - r0, step):
                b = min(r1 - r0, a + step)
                if t.dtype == torch.float64 and not copy:
                    blk = t[a:b]
                else:
                    blk = buf[: (b - a) * (c1 - c0)].view(b - a, c1 - c0)
                    blk.copy_(t[a:b])
                yield r0 + a, r0 + b, c0, c1, i == j, blk

    def matmat(self, X):
        """``D @ X`` in float64 for a float64 tensor ``X`` of shape ``(m,)`` or ``(m, r)`` on this device:
        every off-diagonal tile is used twice (``T @ X_j`` and ``T^T @ X_i``)."""
        import torch

        X2 = X.reshape(self.m, -1)
        Y = torch.zeros_like(X2)
        for r0, r1, c0, c1, diag, blk in self._chunks(copy=False):
            Y[r0:r1].addmm_(blk, X2[c0:c1])
            if not diag:
                Y[c0:c1].addmm_(blk.T, X2[r0:r1])
        return Y.reshape(X.shape)

    def rows(self, index) -> np.ndarray:
        """Rows ``index`` of the stored matrix, float64 ``(len(index), m)`` on the host."""
        import torch

        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        out = np.empty((len(index), self.m))
        for k, r in enumerate(index):
            if not 0 <= r < self.m:
                raise IndexError(f"row {r} out of range for {self.m} models")
            i = int(r) // self.tile
            parts = []
            for j in range(len(self.bounds)):
                if j >= i:
                    parts.append(self.tiles[(i, j)][r - self.bounds[i][0]])
                else:
                    parts.append(self.tiles[(j, i)][:, r - self.bounds[i][0]])
            out[k] = host_array(torch.cat(parts).to(torch.float64))
        return out

    def centring(self) -> tuple[np.ndarray, float, float]:
        """Row means, grand mean and ``||W||_F^2`` of ``W = -1/2 J D J`` (float64, one pass over the tiles)."""
        import torch

        if not bool(torch.isfinite(self.row_sums).all()):
            bad = int(torch.nonzero(~torch.isfinite(self.row_sums))[0])
            raise ValueError(f"D has non-finite entries in row {bad}")
        row = self.row_sums / self.m
        grand = row.mean()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for r0, r1, c0, c1, diag, blk in self._chunks(copy=True):
            blk.sub_(row[r0:r1, None]).sub_(row[None, c0:c1]).add_(grand)
            flat = blk.reshape(-1)
            total += torch.dot(flat, flat) * (1.0 if diag else 2.0)
        self._centre = (row, float(grand))
        return host_array(row), float(grand), 0.25 * float(total)

    def w_matmat(self, X):
        """``W @ X`` with ``W = -1/2 J D J`` double-centred on the fly (after :meth:`centring`), for a
        float64 ``(m,)`` or ``(m, r)`` tensor on this device."""
        if not hasattr(self, "_centre"):
            self.centring()
        row, grand = self._centre
        X2 = X.reshape(self.m, -1)
        s = X2.sum(0, keepdim=True)  # (1, r)
        Y = self.matmat(X2)
        Y = -0.5 * (Y - row[:, None] * s - (row @ X2)[None, :] + grand * s)
        return Y.reshape(X.shape)


def _device(device):
    import torch

    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or a CUDA device, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} needs a visible GPU (torch.cuda.is_available() is False)")
    return dev


def device_distances(
    models,
    device="cuda",
    divergence: str = "bhattacharyya",
    tile: int | None = None,
    dtype: str = "float32",
    cuda_method: str = "auto",
    validate: bool = True,
    progress=None,
    info: dict | None = None,
) -> DeviceDistances:
    """The divergence matrix of ``models`` as upper block tiles in ``device``'s memory (see
    :class:`DeviceDistances` and :func:`inpca_on_device`, which documents the arguments)."""
    import contextlib
    import time

    import torch

    from . import divergences, kernels
    from ._validate import check_probabilities

    t_start = time.perf_counter()
    dev = _device(device)
    divergence = divergences.get(divergence).name
    if dtype not in _STORE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_STORE_DTYPES)}, got {dtype!r}")
    models, ms, on_device, (m, n, c, itemsize) = _device_operands(models, dev)
    if m < 2:
        raise ValueError(f"models: need at least 2 models, got {m}")
    tile = (8192 if dev.type == "cuda" else 2048) if tile is None else check_int(tile, "tile", minimum=1)
    dd = DeviceDistances(m, min(tile, m), dev, dtype)
    tile = dd.tile
    upload = m * n * c * itemsize if (dev.type == "cuda" and not on_device) else 0
    _check_memory(dd, dev, upload, n, dtype)
    if dev.type == "cuda" and not on_device:  # the models, once, in their own dtype
        models, on_device, ms = _upload(ms, dev), True, None

    source = Blocks(models) if on_device else _TensorBlocks(ms)
    if validate:  # once per model, so that the kernels need not check every tile again
        for r0, r1 in dd.bounds:
            check_probabilities(source.block(r0, r1), f"models[{r0}:{r1}]")
    dd.allocate()
    t_kernels = time.perf_counter()
    backend = "cuda" if dev.type == "cuda" else "cpu"
    method = cuda_method
    if backend == "cuda" and cuda_method == "auto":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        method = kernels.choose_cuda_method(divergence, c, index)
    total = len(dd.plan)
    ctx = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with ctx:
        execute(
            dd.plan,
            source,
            None,
            dd,
            lambda a, b: block_distances(
                a, b, divergence=divergence, backend=backend, validate=False, cuda_method=method
            ),
            None if progress is None else (lambda done, total: progress("distances", done, total)),
        )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    if info is not None:
        seconds = dict(prepare_seconds=t_kernels - t_start, distances_seconds=time.perf_counter() - t_kernels)
        what = dict(divergence=divergence, device=str(dev), tile=tile, tiles=total, dtype=dtype)
        method = method if backend == "cuda" else "cpu"
        info.update(m=m, n=n, c=c, **what, tiles_gb=dd.nbytes / 1e9, method=method, **seconds)
    return dd


class _TensorBlocks:
    """A model set's blocks as tensors (read-only maps are never written: no copy)."""

    def __init__(self, ms):
        self.ms = ms

    def __len__(self) -> int:
        return self.ms.m

    def block(self, i0: int, i1: int):
        from ._validate import as_tensor

        return as_tensor(self.ms.block(i0, i1))[0]


def _device_operands(models, dev) -> tuple:
    """(models, model set, on_device, (m, n, c, itemsize)): a tensor already on ``dev``'s kind of device is used
    in place; anything else is opened as a model set (:func:`taskgeom.modelsets.open_models`)."""
    import torch

    on_device = isinstance(models, torch.Tensor) and models.device.type == dev.type
    if isinstance(models, torch.Tensor) and not on_device:
        models = host_array(models)
    if on_device:
        if models.dim() != 3 or models.numel() == 0 or not models.is_floating_point():
            raise ValueError(f"models: expected a non-empty float (m, N, C) tensor, got {tuple(models.shape)}")
        return models, None, True, (*models.shape, models.element_size())
    ms = open_models(models)
    return models, ms, False, (ms.m, ms.n, ms.c, np.dtype(ms.dtype).itemsize)


def _check_memory(dd, dev, upload: int, n: int, dtype: str) -> None:
    """A one-line MemoryError, before anything is allocated, where the tiles, the models and the work space
    would not fit in 95% of ``dev``'s free memory."""
    tile, m = dd.tile, dd.m
    work = 4 * 8 * tile * tile + 2 * 8 * tile * n + dd.work_bytes + (256 << 20)
    need = dd.nbytes + upload + work
    free = _free_bytes(dev)
    if free is not None and need > 0.95 * free:
        raise MemoryError(
            f"exact InPCA of {m} models on {dev} needs {need / 1e9:.1f} GB ({dtype} tiles of D "
            f"{dd.nbytes / 1e9:.1f} GB, models {upload / 1e9:.1f} GB, work {work / 1e9:.1f} GB) and "
            f"{free / 1e9:.1f} GB are free: use inpca_out_of_core (D on disk) or landmark_inpca"
        )


def _upload(ms, dev):
    """The model set on ``dev`` in its own dtype, copied in blocks of about 256 MiB."""
    import torch

    from ._validate import as_tensor

    m, n, c = ms.m, ms.n, ms.c
    x = torch.empty((m, n, c), dtype=getattr(torch, np.dtype(ms.dtype).name), device=dev)
    step = max(1, (256 << 20) // max(1, n * c * np.dtype(ms.dtype).itemsize))
    for i0 in range(0, m, step):
        x[i0 : i0 + step] = as_tensor(ms.block(i0, i0 + step))[0].to(dev)
    return x


def inpca_on_device(
    models,
    k: int = 10,
    device="cuda",
    divergence: str = "bhattacharyya",
    tile: int | None = None,
    dtype: str = "float32",
    tol: float = 1e-10,
    ncv: int | None = None,
    seed: int = 0,
    cuda_method: str = "auto",
    validate: bool = True,
    progress=None,
    info: dict | None = None,
):
    """Exact InPCA (eqs. 9-11) of ``models``, distances and top-k together in one device's memory.

    The divergence matrix is computed tile by tile by the pairwise kernels (on a GPU the fp64 tensor-core
    kernel where ``cuda_method="auto"`` picks it; ``cuda_method`` as in :func:`taskgeom.pairwise_distances`)
    and only its upper block tiles are kept, in ``dtype`` (``"float32"``: 150,000 models take 47 GB with
    the default tiles, which an 80 GB H100 holds; ``"float64"`` doubles that and keeps the kernels' full
    accuracy). Row means, the grand mean and the exact ``||W||_F^2`` are accumulated in float64 from the
    stored values; then the top ``k`` eigenpairs of ``W = -1/2 J D J`` by magnitude (both signs) by
    Lanczos (ARPACK ``eigsh``, ``which="LM"``, float64 vectors) on an operator whose products run on the
    device over the tiles, each converted to float64 a few rows at a time (every off-diagonal tile serves
    ``T x_j`` and ``T^T x_i``). Rounding D to float32 (6e-8 relative per entry) moves the eigenvalues by
    about 1e-7 relative (2e-7 for the smallest of the top 10 at m = 300 in the tests); float64 tiles give
    :func:`taskgeom.inpca`'s eigenvalues to 1e-14.

    ``models``: an ``(m, N, C)`` tensor (a CUDA tensor is used in place), array, ``.npy`` path or store
    (anything :func:`taskgeom.modelsets.open_models` opens; copied to the GPU once, in its own dtype), or
    a :class:`DeviceDistances` from :func:`device_distances` (the distances are then not recomputed).
    ``device``: ``"cuda"`` (or ``"cuda:1"``) or ``"cpu"`` (the same computation in RAM). ``tile``: models
    per tile side (default 8192 on a GPU, 2048 on the CPU). ``ncv``: Lanczos vectors (default ARPACK's,
    ``max(2k + 1, 20)``: 34 products for k = 10 at m = 4,000 of bench_scale's models). ``progress``:
    called as ``progress(stage, done, total)`` after each tile (``"distances"``; on a GPU the tile may
    still be running) and each product (``"lanczos"``, total None); an exception it raises stops the run.
    ``info``: a dict filled with sizes, the kernel used, seconds per stage and the number of products.

    Free memory is checked first: when the tiles, the models and the work space do not fit, a
    ``MemoryError`` says how much is needed (use :func:`inpca_out_of_core` or :func:`landmark_inpca`).
    Returns the same :class:`~taskgeom.embedding.Embedding` as :func:`inpca_out_of_core` (``total_sq`` the
    exact ``||W||_F^2`` of the stored matrix), so ``explained_stress`` and ``transform`` work.
    """
    import time

    info = {} if info is None else info
    t0 = time.perf_counter()
    k = check_int(k, "k", minimum=1)
    tol = check_float(tol, "tol", nonnegative=True)
    seed = check_int(seed, "seed", minimum=0)
    if ncv is not None:
        ncv = check_int(ncv, "ncv", minimum=2)
    if isinstance(models, DeviceDistances):
        dd = models
    else:
        opts = dict(divergence=divergence, tile=tile, dtype=dtype, cuda_method=cuda_method, validate=validate)
        dd = device_distances(models, device=device, progress=progress, info=info, **opts)
    m = dd.m
    if not 1 <= k < m:
        raise ValueError(f"k must be in [1, {m - 1}] for the iterative solver, got {k}")
    ncv = min(m, max(2 * k + 1, 20)) if ncv is None else ncv  # ARPACK's default
    if not k < ncv <= m:
        raise ValueError(f"ncv must be in [{k + 1}, {m}], got {ncv}")
    t1 = time.perf_counter()
    row, grand, total = dd.centring()
    info.update(centring_seconds=time.perf_counter() - t1)
    vals, vecs = _lanczos(dd, k, tol, seed, ncv, progress, info)
    emb = _finish(vals, vecs, k, total, row, grand)
    info.update(k=k, inpca_seconds=time.perf_counter() - t0)
    return emb


def _lanczos(dd, k: int, tol: float, seed: int, ncv: int, progress, info: dict) -> tuple:
    """The top ``k`` eigenpairs by magnitude of the double-centred W of the tiles ``dd`` (ARPACK, one product
    with the tiles per iteration, on their device)."""
    import time

    from scipy.sparse.linalg import LinearOperator, eigsh

    from ._validate import float64_tensor

    m, dev, count, t2 = dd.m, dd.device, [0], time.perf_counter()

    def matvec(x):
        y = dd.w_matmat(float64_tensor(x, dev).reshape(-1))
        count[0] += 1
        if progress is not None:
            progress("lanczos", count[0], None)
        return host_array(y)

    op = LinearOperator((m, m), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(m)
    try:
        return eigsh(op, k=k, which="LM", tol=tol, v0=v0, ncv=ncv)
    finally:
        info.update(lanczos_seconds=time.perf_counter() - t2, matvecs=count[0], ncv=ncv)


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
    tiles = plan(uniform(m, block), [(0, 1)])
    compute = partial(block_distances, divergence=divergence, backend=backend)
    for j in range(L):

        def column(t, d, j=j):
            cols[t.r0 : t.r1, j] = np.asarray(d)[:, 0]

        execute(tiles, ms, Blocks(ms.block(chosen[j], chosen[j] + 1)), FunctionSink(column), compute)
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

    L = check_int(n_landmarks, "n_landmarks", minimum=2)
    k = check_int(k, "k", minimum=1)
    check = check_int(check, "check", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    budget = check_int(budget, "budget", minimum=1)
    ms = open_models(models)
    m = ms.m
    if not L <= m:
        raise ValueError(f"n_landmarks must be in [2, {m}], got {n_landmarks}")
    if k > L:
        raise ValueError(f"k must be in [1, {L}] (at most n_landmarks), got {k}")
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
    D_LL = np.asarray(pairwise_distances(lm, divergence=divergence, backend=backend))
    emb = _embedding.inpca(D_LL, k=min(L, max(k, 10)))
    coords = np.empty((m, k))

    def place(t, d):  # each tile of models against the landmarks, placed as it arrives
        coords[t.r0 : t.r1] = emb.transform(np.asarray(d))[:, :k]

    tiles = plan(uniform(m, block), [(0, L)])
    bar = tqdm(total=len(tiles), desc="placing models", unit="block", disable=not progress_bar)
    compute = partial(block_distances, divergence=divergence, backend=backend)
    execute(tiles, ms, Blocks(lm), FunctionSink(place), compute, lambda done, total: bar.update(1))
    bar.close()
    error = _placement_error(ms, idx, emb, coords, k, check, rng, divergence, backend)
    return LandmarkInPCA(coords=coords, landmarks=idx, embedding=emb, error=error)


def _placement_error(ms, landmarks, emb, coords, k, check, rng, divergence, backend) -> dict:
    rest = np.setdiff1d(np.arange(ms.m), landmarks)
    if check <= 1 or len(rest) < 2:
        why = "check <= 1" if check <= 1 else f"only {len(rest)} of the {ms.m} models are not landmarks"
        return {"models_checked": 0, "note": f"no placement error measured: {why} (two or more held-out models needed)"}
    sample = np.sort(rng.choice(rest, min(check, len(rest)), replace=False))
    X = np.stack([ms.block(i, i + 1)[0] for i in sample])
    D = np.asarray(pairwise_distances(X, divergence=divergence, backend=backend))
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
