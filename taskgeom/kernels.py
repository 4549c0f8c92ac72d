"""The one dispatch point between the public API and the native kernels.

``backend="auto"`` picks the CUDA kernels for CUDA tensors and the C++/OpenMP kernels for host data
(numpy arrays, memory maps, CPU tensors); ``"cpu"``, ``"cuda"`` and ``"torch"`` (the float64 reference
of :mod:`taskgeom.reference`) force one. A backend whose module was not built raises a RuntimeError
saying so; nothing falls back silently. Launch details live in :mod:`taskgeom._cuda_ops`, streaming of
host data through the GPU in :mod:`taskgeom.streaming`, the divergences in :mod:`taskgeom.divergences`.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _cuda_ops, divergences, reference, streaming
from ._native import cpu_module, cuda_module, has_cpu, has_cuda, native_module, view
from ._native import threads as _threads

__all__ = [
    "BACKENDS",
    "CUDA_METHODS",
    "resolve",
    "choose_cuda_method",
    "pairwise",
    "progress",
    "cpu_module",
    "cuda_module",
    "native_module",
    "has_cpu",
    "has_cuda",
]

BACKENDS = ("auto", "cpu", "cuda", "torch")
CUDA_METHODS = ("auto", "tiled", "gram64", "fp64tc")


def resolve(backend: str, *tensors: torch.Tensor) -> str:
    """The concrete backend for ``backend`` and the devices of ``tensors`` (checked to be available)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = {t.is_cuda for t in tensors if isinstance(t, torch.Tensor)}
    if len(on_cuda) > 1:
        raise ValueError("inputs are on different devices (some on CUDA, some on the host)")
    cuda = on_cuda == {True}
    if backend == "auto":
        backend = "cuda" if cuda else "cpu"
    if backend == "cuda":
        cuda_module()
        if not cuda and not torch.cuda.is_available():
            raise RuntimeError("backend='cuda' needs a visible GPU (torch.cuda.is_available() is False)")
    if backend == "cpu":
        cpu_module()
        if cuda:
            raise ValueError("backend='cpu' needs host data, got CUDA tensors")
    return backend


def pairwise(
    a: torch.Tensor,
    b: torch.Tensor | None,
    divergence: str,
    backend: str,
    chunk: int | None = None,
    threads: int | None = None,
    validate: bool = True,
    tol: float = 1e-4,
    cuda_method: str = "auto",
    a_src=None,
    b_src=None,
) -> torch.Tensor:
    """Divergence matrix (float64) of ``(m, N, C)`` tensors; see :func:`taskgeom.pairwise_distances`.

    ``cuda_method``: ``"tiled"`` is taskgeom's CUDA kernel (cancellation-free float32 with float64
    accumulation); ``"gram64"`` computes Bhattacharyya coefficients as float64 batched Gram matrices
    (cuBLAS DGEMM, FP64 tensor cores); ``"fp64tc"`` is taskgeom's fused float64 tensor-core kernel
    (Bhattacharyya and squared Hellinger, sm_80+); ``"auto"`` takes ``fp64tc`` for those two on GPUs
    with fast FP64 tensor cores (:data:`taskgeom._cuda_ops.FP64TC_CAPABILITIES`), else chooses between
    the other two by C.
    """
    from ._validate import check_int

    if chunk is not None:
        chunk = check_int(chunk, "chunk", minimum=1)
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    div = divergences.get(divergence)
    if backend == "torch":
        return reference.pairwise_distances(a, b, div.name, chunk=chunk or 1024)
    if backend == "cpu":
        out = np.zeros((a.shape[0], (a if b is None else b).shape[0]), dtype=np.float64)
        cpu_module().pairwise(
            view(a),
            None if b is None else view(b, "others"),
            out.ctypes.data,
            div.code,
            int(chunk or 0),
            _threads(threads),
            bool(validate),
            float(tol),
        )
        return torch.from_numpy(out)
    cuda_method = _cuda_method(a, div.name, cuda_method)
    if not a.is_cuda:
        return streaming.pairwise_streamed(
            a, b, div.name, chunk, validate, tol, method=cuda_method, a_src=a_src, b_src=b_src
        )
    if cuda_method == "gram64":
        return _cuda_ops.pairwise_gram64(a, b, divergence=div.name)
    if cuda_method == "fp64tc":
        return _cuda_ops.pairwise_fp64tc(a, b, div.code)
    return _cuda_ops.pairwise_tiled(a, b, div.code)


def _cuda_method(a: torch.Tensor, divergence: str, cuda_method: str) -> str:
    """The CUDA method that runs (``"auto"`` resolved on ``a``'s GPU), checked against the divergence and the
    GPU: a one-line error for a method that cannot compute it there."""
    if cuda_method not in CUDA_METHODS:
        raise ValueError(f"cuda_method must be one of {CUDA_METHODS}, got {cuda_method!r}")
    device_index = a.device.index if a.is_cuda and a.device.index is not None else torch.cuda.current_device()
    if cuda_method == "auto":
        cuda_method = choose_cuda_method(divergence, a.shape[-1], device_index)
    if cuda_method == "fp64tc":
        if divergence not in _cuda_ops.FP64TC_DIVERGENCES:
            raise ValueError(f"cuda_method='fp64tc' computes {' and '.join(_cuda_ops.FP64TC_DIVERGENCES)} only")
        with torch.cuda.device(device_index):
            if not cuda_module().fp64tc_available():
                raise RuntimeError("cuda_method='fp64tc' needs FP64 tensor cores (sm_80+) and a build for them")
    if cuda_method == "gram64" and divergence not in _cuda_ops.GRAM64_DIVERGENCES:
        raise ValueError(f"cuda_method='gram64' computes {' and '.join(_cuda_ops.GRAM64_DIVERGENCES)} only")
    return cuda_method


def choose_cuda_method(divergence: str, classes: int, device_index: int) -> str:
    """What ``cuda_method="auto"`` runs: the fp64 tensor-core kernel for the Gram-form divergences on GPUs
    with fast FP64 tensor cores; elsewhere float64 Gram matrices from ``GRAM64_MIN_CLASSES`` classes on
    (Bhattacharyya, squared Hellinger), else the tiled kernel."""
    if divergence in _cuda_ops.FP64TC_DIVERGENCES and _cuda_ops.fp64tc_supported(device_index):
        return "fp64tc"
    gram = divergence in _cuda_ops.GRAM64_DIVERGENCES and classes >= _cuda_ops.GRAM64_MIN_CLASSES
    return "gram64" if gram else "tiled"


def progress(
    a: torch.Tensor,
    labels: torch.Tensor,
    backend: str,
    threads: int | None = None,
    validate: bool = True,
    tol: float = 1e-4,
    xtol: float = 1e-12,
) -> torch.Tensor:
    """Progress (float64, shape (m,)) of ``(m, N, C)`` models on the ignorance -> truth geodesic."""
    from ._validate import check_float

    xtol = check_float(xtol, "xtol", positive=True, maximum=1.0)
    if backend == "torch":
        return reference.progress(a, labels, xtol=xtol)
    if backend == "cpu":
        lab = labels.to(torch.int64).contiguous()
        out = np.empty(a.shape[0], dtype=np.float64)
        cpu_module().progress(
            view(a),
            lab.data_ptr(),
            lab.numel(),
            out.ctypes.data,
            _threads(threads),
            bool(validate),
            float(tol),
            float(xtol),
            (a, lab),  # kept alive while a helper thread may still read them
        )
        return torch.from_numpy(out)
    return _cuda_ops.progress(a, labels, xtol)
