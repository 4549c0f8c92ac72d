"""The one pairwise path: a source of models -> a tile plan -> an executor -> a sink.

:func:`pairwise_distances` is its public face (``tg.pairwise_distances``); every pairwise matrix in
taskgeom is computed through it or through its parts (:mod:`.plan`, :mod:`.compute`):

========================  ===========================================  =====================================
where the matrix goes     sink                                         executor
========================  ===========================================  =====================================
memory (default)          one kernel call, or :class:`.plan.ArraySink`  :func:`.plan.execute` (this process)
a folder (``out=PATH``)   :class:`taskgeom.tiled.DistanceMatrix`       this process, or Ray (``engine="ray"``)
a GPU's memory            :class:`taskgeom.large.DeviceDistances`      :func:`.plan.execute` (InPCA on device)
========================  ===========================================  =====================================

Every tile is computed by :func:`.compute.block_distances` (checks, then one kernel call). Arrays keep
their type: numpy in, numpy out; torch in, torch out on the same device. The bootstrap's B matrices with
samples reweighted (:func:`weighted_distances`) take the same plan and executor, with their own tile
computation (:func:`.compute.weighted_block`: the kernels reduce over samples, so they cannot weight them).

Accuracy of the C++ and CUDA kernels (float64 input, against ``backend="torch"``, the float64 reference):
for near-identical models the error is *absolute*, about 1e-16 per entry (3e-17 at d = 1e-11 .. 1e-15,
9e-16 at d = 1e-7, measured at N = 2000, C = 10), so the *relative* error is about 1e-16 / d: below 1e-6
only for d above about 1e-10, 3e-4 at d = 1e-13 and several percent at d = 1e-15. At typical distances the
C++ kernel's logarithm (a polynomial on the exactly reduced argument, relative error at most 7e-9) sets it:
relative error up to 2e-8, absolute up to 1.4e-9 (measured at d = 0.07-0.71, C = 10 and 100, N = 500,
Dirichlet models). ``backend="torch"`` keeps float64's relative precision at any d.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_int
from .compute import block_distances, weighted_block
from .plan import ArraySink, Blocks, FunctionSink, Tile, execute, plan, sized, uniform

__all__ = ["pairwise_distances", "block_distances", "Tile", "plan", "execute", "ArraySink", "Blocks"]
__all__ += ["FunctionSink", "sized", "uniform", "weighted_distances"]

DEFAULT_BUDGET = 1 << 30  # bytes of model blocks and tile output held at once (taskgeom.tiled has the same)
_KERNEL_OPTIONS = {"divergence", "chunk", "backend", "validate", "tol", "threads", "cuda_method"}
_RAY_OPTIONS = {"num_cpus", "num_gpus", "max_retries", "connect_timeout"}


def pairwise_distances(
    models,
    others=None,
    *,
    out=None,
    tile: int | None = None,
    engine: str = "local",
    address: str | None = None,
    budget: int = DEFAULT_BUDGET,
    progress_bar: bool | None = None,
    **kwargs,
):
    """Matrix of divergences between models: ``D[i, j] = d(models[i], others[j])``, or the symmetric
    matrix of ``models`` (zero diagonal; one triangle computed) without ``others``.

    Parameters
    ----------
    models, others : the models' probabilities: an ``(m, N, C)`` array (numpy, memory map, torch on the CPU
        or a GPU) or a sequence of ``(N, C)`` models; a sequence of model sets (store
        :class:`~taskgeom.store.Trajectory` handles or ``(T, N, C)`` arrays, streamed block by block and
        never concatenated); or anything :func:`taskgeom.modelsets.open_models` opens (an ``.npy`` path, a
        store folder, a :class:`~taskgeom.store.PredictionStore`, a :class:`~taskgeom.modelsets.ModelSet`),
        read ``budget`` bytes at a time.
    out : None or a folder path
        None: the matrix in memory (numpy, or torch where ``models`` is a tensor). A path: computed tile by
        tile into that folder (:mod:`taskgeom.tiled`) and returned as a read-only memory map; a killed run
        resumes without recomputing finished tiles, and models appended to the source later add only their
        rows and columns. A folder unfinished after the run (or written for other models) is refused with
        one line, never returned.
    tile : int, optional
        Models per tile side. In memory: by default one kernel call for a single array, one tile per model
        set for a sequence of them, and tiles within ``budget`` for an opened source; with ``out``: the
        folder's tile size (a new folder's; by default from ``budget``; an existing folder keeps its own
        and refuses another explicit size).
    engine : {"local", "ray"}
        Who computes the tiles of ``out=PATH`` (Ray: :mod:`taskgeom.engines`, ``address`` of the cluster,
        default a local Ray; Ray's ``num_cpus``, ``num_gpus``, ``max_retries`` and ``connect_timeout`` as
        keyword arguments).
    budget : int
        Bytes of models and output held at once (sets the tile size where ``tile`` does not).
    progress_bar : bool, optional
        A bar over the tiles (default: on a terminal, for long jobs).
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
        On the GPU (:func:`taskgeom.kernels.pairwise`): taskgeom's tiled kernel, float64 Gram matrices
        (cuBLAS), or its fused float64 tensor-core kernel (sm_80+; ``auto`` takes it where FP64 tensor cores
        are fast); the last two for Bhattacharyya and squared Hellinger only.
    validate, tol, threads : probabilities checked (NaN, negative, rows not summing to one within ``tol``,
        a finite number >= 0, by default the storage precision's); ``threads`` of the CPU kernel (an
        integer >= 1). ``chunk`` and ``threads`` are never rounded.

    Returns
    -------
    float64 array (m, m') accumulated over samples in float64 (a memory map with ``out``), accurate as the
    module docstring states (relative error up to 2e-8 at typical distances; ``backend="torch"`` keeps
    float64's relative precision at any distance).
    """
    budget = check_int(budget, "budget", minimum=1)  # on every route, though not every route uses it
    if tile is not None:
        tile = check_int(tile, "tile", minimum=1)
    check_choice(engine, "engine", ("local", "ray"))
    if out is not None:
        return _to_folder(models, others, out, tile, engine, address, budget, progress_bar, kwargs)
    if engine != "local":
        raise ValueError("engine='ray' needs out=PATH (the tiles are written to a folder)")
    unknown = set(kwargs) - _KERNEL_OPTIONS
    if unknown:
        raise TypeError(f"pairwise_distances() got unexpected keyword arguments {sorted(unknown)}")
    rows, cols, single = _sources(models, others, tile, budget)
    if single:  # one kernel call on the caller's own array or tensor: its type and device kept
        return block_distances(models, others, **kwargs)
    return _in_memory(rows, cols, progress_bar, kwargs, like=models)


def weighted_distances(points: torch.Tensor, weights: torch.Tensor, budget: int = 1 << 24, tile: int | None = None):
    """``(B, M, M)`` float64 Bhattacharyya matrices of ``points (M, N, C)`` (float64, normalised), the
    samples reweighted by each row of ``weights (B, N)`` (a bootstrap replicate's counts: the matrix is the
    mean of ``w_n d_n`` over samples), on the device of ``points``: planned in tiles of ``tile`` models
    (default: one tile, as the B matrices are held whole anyway), executed here, each tile's B blocks from
    the per-sample terms (:func:`.compute.weighted_block`, chunks of at most ``budget`` terms), symmetric,
    zero diagonal, a tensor (the bootstrap's building block: :func:`taskgeom.bootstrap.stress_replicates` uses
    it); ``weights`` may be any numbers (converted once, to float64 on the points' device)."""
    from .._validate import float64_tensor

    if tile is not None:
        tile = check_int(tile, "tile", minimum=1)
    weights = float64_tensor(weights, points.device)
    m, n = points.shape[0], points.shape[1]
    out = torch.zeros(weights.shape[0], m, m, dtype=torch.float64, device=points.device)

    def put(t: Tile, block) -> None:
        out[:, t.r0 : t.r1, t.c0 : t.c1] = block
        if t.mirrored:
            out[:, t.c0 : t.c1, t.r0 : t.r1] = block.transpose(1, 2)

    tiles = plan(uniform(m, max(1, tile if tile is not None else m)))
    execute(tiles, Blocks(points), None, FunctionSink(put), lambda a, b: weighted_block(a, b, weights, budget))
    out /= n
    out = 0.5 * (out + out.transpose(1, 2))
    out.diagonal(dim1=1, dim2=2).zero_()
    return out


def _sources(models, others, tile, budget) -> tuple:
    """(rows, cols, single): the sources the tiles are read from, each with its bounds; ``single`` when the
    whole matrix is one kernel call on the given arrays."""
    from ..modelsets import ModelSet

    opened = [_opened(x) for x in (models, others)]
    if not any(isinstance(x, ModelSet) for x in opened) and not any(Blocks.holds_sets(x) for x in opened):
        if tile is None:
            return None, None, True
        sources = [None if x is None else Blocks(_stacked(x)) for x in (models, others)]
        return [(s, None if s is None else uniform(len(s), tile)) for s in sources] + [False]
    out = []
    for x in opened:
        if x is None:
            out.append((None, None))
        elif isinstance(x, ModelSet):
            out.append((x, uniform(len(x), tile or _tile_for(x, budget))))
        else:
            s = Blocks(x) if Blocks.holds_sets(x) else Blocks([x])
            out.append((s, s.bounds if tile is None else uniform(len(s), tile)))
    return out[0], out[1], False


def _stacked(x):
    """A sequence of single ``(N, C)`` models as one ``(m, N, C)`` array or tensor (anything else as given)."""
    if not isinstance(x, (list, tuple)):
        return x
    from .._validate import as_tensor, to_output

    t, was_np = as_tensor(x, "models")
    return to_output(t, was_np)


def _opened(x):
    """``x`` as a :class:`ModelSet` where it names one (a path, a store), else unchanged."""
    from pathlib import Path

    from ..modelsets import ModelSet, open_models
    from ..store import PredictionStore

    if isinstance(x, (str, Path, PredictionStore, ModelSet)):
        return open_models(x)
    return x


def _tile_for(ms, budget: int) -> int:
    import numpy as np

    from ..tiled import tile_size

    return tile_size(ms.n, ms.c, np.dtype(ms.dtype).itemsize, budget)


def _in_memory(rows, cols, progress_bar, kwargs, like):
    """Every tile of the plan computed here into one array (torch on the device of ``like`` if a tensor)."""
    import torch
    from tqdm.auto import tqdm

    from .._validate import tensor_of

    (r, rb), (c, cb) = rows, cols
    tiles = plan(rb, cb)
    sink = ArraySink(len(r), len(r) if c is None else len(c))
    if progress_bar is None:  # a bar on a terminal when there is much to do (quiet otherwise)
        disable = None if len(tiles) > 1 and sink.out.size * _samples(r) > 2e10 else True
    else:
        disable = not progress_bar
    bar = tqdm(total=len(tiles), desc="distances (tiles of models)", unit="tile", disable=disable)
    execute(tiles, r, c, sink, lambda a, b: block_distances(a, b, **kwargs), lambda k, n: bar.update(1))
    bar.close()
    if isinstance(like, torch.Tensor):
        return tensor_of(sink.out, like.device)
    return sink.out


def _samples(source) -> int:
    """N x C of a source's models (for the progress bar's threshold)."""
    if hasattr(source, "n"):
        return source.n * source.c
    first = source.block(0, 1)
    return int(first.shape[-2]) * int(first.shape[-1])


def _to_folder(models, others, out, tile, engine, address, budget, progress_bar, kwargs):
    """The symmetric matrix of one model set computed tile by tile into the folder ``out``."""
    from .. import divergences, engines, tiled
    from ..modelsets import open_models

    if others is not None:
        raise ValueError("out=PATH computes the symmetric matrix of one model set; pass others=None")
    divergence = divergences.get(kwargs.pop("divergence", "bhattacharyya")).name
    unknown = set(kwargs) - {"backend", "threads"} - _RAY_OPTIONS
    if unknown:
        raise ValueError(f"out=PATH does not take {sorted(unknown)}")
    ms = open_models(models)
    dm = tiled.open_for(out, ms, divergence, tile, budget)
    engines.run_tiles(dm, ms, divergence, engine=engine, address=address, progress_bar=bool(progress_bar), **kwargs)
    dm = tiled.DistanceMatrix(dm.path)
    return dm.array()  # (a one-line ValueError naming the missing tiles if any are)
