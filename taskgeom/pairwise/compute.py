"""The computation of one tile: the divergence matrix of two in-memory model blocks (or of one against
itself), checked and dispatched to a kernel (:func:`taskgeom.kernels.pairwise`). Every route of
:func:`taskgeom.pairwise_distances` computes its tiles here; :func:`weighted_block` computes the tiles of
the bootstrap's reweighted matrices (:func:`taskgeom.pairwise.weighted_distances`)."""

from __future__ import annotations

import numpy as np
import torch

from .. import divergences, kernels, reference
from .._validate import (
    as_tensor,
    check_choice,
    check_int,
    check_nonempty,
    check_probabilities,
    check_tol,
    default_tol,
    recheck_sums,
    same_events,
    to_output,
)

__all__ = ["block_distances", "weighted_block"]


def block_distances(
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
    """``D[i, j] = d(models[i], others[j])`` (the symmetric matrix of ``models`` without ``others``) of
    ``(m, N, C)`` arrays or tensors, or of one ``(N, C)`` model: one kernel call, numpy in, numpy out,
    torch in, torch out on the same device. The arguments are those of :func:`taskgeom.pairwise_distances`."""
    if chunk is not None:
        chunk = check_int(chunk, "chunk", minimum=1)
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    check_choice(cuda_method, "cuda_method", kernels.CUDA_METHODS)
    divergence = divergences.get(divergence).name  # a ValueError lists the registered names
    tol = check_tol(tol)
    a, b, was_np = _operands(models, others)
    backend = kernels.resolve(backend, a, *([] if b is None else [b]))
    # a memory map is handed to the C++ kernel as its file, read chunk by chunk (taskgeom.streaming)
    sources = (models if isinstance(models, np.ndarray) else None, others if isinstance(others, np.ndarray) else None)
    opts = dict(divergence=divergence, chunk=chunk, threads=threads, cuda_method=cuda_method)
    try:
        out = _checked(a, b, opts, backend, default_tol(a.dtype) if tol is None else tol, validate, sources)
    except ValueError as exc:
        if not validate:
            raise
        recheck_sums(exc, tol, [(a, "models"), (b, "others")])
        # valid at the precision the data came in: checked above
        out = _checked(a, b, opts, backend, default_tol(a.dtype), False, sources)
    return to_output(out, was_np)


def _as_models(x, name):
    t, was_np = as_tensor(x, name)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"{name}: expected (m, N, C) or a sequence of (N, C) models, got shape {tuple(t.shape)}")
    check_nonempty(t, name)
    return t, was_np


def _operands(models, others) -> tuple:
    """(a, b, was_numpy): the model sets as tensors, non-empty, on the same events (b None without others)."""
    a, was_np = _as_models(models, "models")
    b = None
    if others is not None:
        b, _ = _as_models(others, "others")
        same_events(a, b)
    return a, b, was_np


def _checked(a, b, opts: dict, backend: str, tol: float, validate: bool, sources: tuple) -> torch.Tensor:
    """One kernel call on tensors, the probabilities checked first where the kernel does not check them
    while it streams (the C++ kernel, and host data streamed through the GPU)."""
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


def weighted_block(a: torch.Tensor, b: torch.Tensor | None, weights: torch.Tensor, budget: int) -> torch.Tensor:
    """``(B, r, c)`` float64: for each row of ``weights (B, N)``, the sum over samples of ``-w_n log BC_n``
    between the models of ``a (r, N, C)`` and ``b (c, N, C)`` (``b`` None: ``a`` against itself), both float64
    and normalised by the caller. The kernels reduce over samples and so cannot weight them: this takes the
    per-sample terms, in chunks of samples of at most ``budget`` terms (float64 Gram matrices of square
    roots, ``-log``, one matrix product with the weights; absolute error about 1e-15 per term)."""
    r, n = a.shape[0], a.shape[1]
    c = r if b is None else b.shape[0]
    out = torch.zeros(weights.shape[0], r * c, dtype=torch.float64, device=a.device)
    step = max(1, budget // max(1, r * c))
    for n0 in range(0, n, step):
        sa = a[:, n0 : n0 + step].sqrt().transpose(0, 1)  # (s, r, C)
        sb = sa if b is None else b[:, n0 : n0 + step].sqrt().transpose(0, 1)
        bc = torch.bmm(sa, sb.transpose(1, 2)).clamp(reference.BC_FLOOR, 1.0)  # (s, r, c)
        out -= weights[:, n0 : n0 + step] @ torch.log(bc).reshape(bc.shape[0], r * c)
    return out.reshape(-1, r, c)
