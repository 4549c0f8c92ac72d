"""The computation of one tile: the divergence matrix of two in-memory model blocks (or of one against
itself), checked and dispatched to a kernel (:func:`taskgeom.kernels.pairwise`). Every route of
:func:`taskgeom.pairwise_distances` computes its tiles here."""

from __future__ import annotations

import numpy as np
import torch

from .. import divergences, kernels
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

__all__ = ["block_distances"]


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
