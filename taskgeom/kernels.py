"""The one dispatch point between the public API and the native kernels.

``backend="auto"`` picks the CUDA kernels for CUDA tensors and the C++/OpenMP kernels for host data
(numpy arrays, memory maps, CPU tensors); ``"cpu"``, ``"cuda"`` and ``"torch"`` (the float64 reference
of :mod:`taskgeom.reference`) force one. A backend whose module was not built raises a RuntimeError
saying so; nothing falls back silently.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import torch

from . import reference

BACKENDS = ("auto", "cpu", "cuda", "torch")
DIVERGENCES = {"bhattacharyya": 0, "symmetric_kl": 1}
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}
_modules: dict[str, object] = {}


def _load(name: str):
    if name not in _modules:
        try:
            _modules[name] = importlib.import_module(f"taskgeom.{name}")
        except ImportError as exc:
            _modules[name] = exc
    mod = _modules[name]
    return None if isinstance(mod, ImportError) else mod


def cpu_module():
    mod = _load("_C")
    if mod is None:
        raise RuntimeError(
            "taskgeom._C (the C++ kernels) is not built or failed to import "
            f"({_modules['_C']}); reinstall with `pip install .`, or pass backend='torch'"
        )
    return mod


def cuda_module():
    mod = _load("_cuda")
    if mod is None:
        raise RuntimeError(
            "taskgeom was not compiled with CUDA support (taskgeom._cuda is missing: "
            f"{_modules['_cuda']}); reinstall with a CUDA toolkit on PATH (TASKGEOM_CUDA=1 pip install .), "
            "or pass backend='torch'"
        )
    return mod


def has_cpu() -> bool:
    return _load("_C") is not None


def has_cuda() -> bool:
    return _load("_cuda") is not None


def resolve(backend: str, *tensors: torch.Tensor) -> str:
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


def view(t: torch.Tensor, name: str = "models"):
    """(data_ptr, dtype code, shape, strides in elements) of a 3-d tensor, for the native modules."""
    if t.dim() != 3:
        raise ValueError(f"{name}: expected (models, samples, classes), got shape {tuple(t.shape)}")
    if t.dtype not in _DTYPE_CODES:
        raise TypeError(f"{name}: unsupported dtype {t.dtype}")
    return (t.data_ptr(), _DTYPE_CODES[t.dtype], tuple(t.shape), tuple(t.stride()))


def _threads(threads: int | None) -> int:
    if threads is not None:
        return int(threads)
    env = os.environ.get("TASKGEOM_NUM_THREADS")
    return int(env) if env else 0


CUDA_METHODS = ("auto", "tiled", "gram64")


def pairwise(a: torch.Tensor, b: torch.Tensor | None, divergence: str, backend: str, chunk: int | None = None,
             threads: int | None = None, validate: bool = True, tol: float = 1e-4,
             cuda_method: str = "auto", a_src=None, b_src=None) -> torch.Tensor:
    """Divergence matrix (float64) of ``(m, N, C)`` tensors; see :func:`taskgeom.pairwise_distances`.

    ``cuda_method``: ``"tiled"`` is taskgeom's CUDA kernel (cancellation-free float32 with float64
    accumulation); ``"gram64"`` computes Bhattacharyya coefficients as float64 batched Gram matrices
    (cuBLAS DGEMM, FP64 tensor cores) and takes ``-log1p(BC - 1)`` per sample; ``"auto"`` chooses by C.
    """
    code = DIVERGENCES[divergence]
    if backend == "torch":
        return reference.pairwise_distances(a, b, divergence, chunk=chunk or 1024)
    if backend == "cpu":
        out = np.zeros((a.shape[0], (a if b is None else b).shape[0]), dtype=np.float64)
        cpu_module().pairwise(view(a), None if b is None else view(b, "others"), out.ctypes.data, code,
                              int(chunk or 0), _threads(threads), bool(validate), float(tol))
        return torch.from_numpy(out)
    mod = cuda_module()
    if cuda_method not in CUDA_METHODS:
        raise ValueError(f"cuda_method must be one of {CUDA_METHODS}, got {cuda_method!r}")
    if cuda_method == "auto":
        cuda_method = "gram64" if (divergence == "bhattacharyya" and a.shape[-1] >= GRAM64_MIN_CLASSES) else "tiled"
    if cuda_method == "gram64" and divergence != "bhattacharyya":
        raise ValueError("cuda_method='gram64' computes the Bhattacharyya distance only")
    if not a.is_cuda:
        return _pairwise_streamed(a, b, code, chunk, validate, tol, method=cuda_method, a_src=a_src, b_src=b_src)
    if cuda_method == "gram64":
        return _pairwise_gram64(a, b)
    out = torch.zeros((a.shape[0], (a if b is None else b).shape[0]), dtype=torch.float64, device=a.device)
    _launch_tiled(mod, a, b, code, out, a.shape[1], True)
    return out


#: From this many classes on, ``cuda_method="auto"`` uses float64 Gram matrices for Bhattacharyya: on an
#: H100 (bench/README.md) gram64 took 0.34 s against the tiled kernel's 0.52 s at C = 1000, and lost at
#: C = 100 (0.54 s against 0.16 s). Both stay within 1e-6 of the float64 reference.
GRAM64_MIN_CLASSES = 512


def _scratch(mod, a: torch.Tensor, b: torch.Tensor | None, code: int) -> torch.Tensor:
    """Staging buffer for the tiled CUDA kernel: the whole sample range if it fits in 1 GiB (and a
    quarter of free memory), else as many samples as do (at least one)."""
    ma, n, c = a.shape
    mb = ma if b is None else b.shape[0]
    need = mod.pairwise_scratch_floats(ma, mb, b is not None, c, code, n)
    one = mod.pairwise_scratch_floats(ma, mb, b is not None, c, code, 1)
    free = torch.cuda.mem_get_info(a.device)[0]
    budget = max(one, min(need, (1 << 28), free // 16))
    return torch.empty(int(budget), dtype=torch.float32, device=a.device)


def _launch_tiled(mod, a, b, code, out, norm, mirror, scratch=None):
    with torch.cuda.device(a.device):
        stream = torch.cuda.current_stream(a.device).cuda_stream
        a_inv = _inv_row_sums(a)
        b_inv = None if b is None else _inv_row_sums(b)
        scratch = _scratch(mod, a, b, code) if scratch is None else scratch
        mod.pairwise(view(a), a_inv.data_ptr(), None if b is None else view(b, "others"),
                     0 if b_inv is None else b_inv.data_ptr(), out.data_ptr(), code, 0, int(norm), bool(mirror),
                     scratch.data_ptr(), scratch.numel(), stream)


def _pairwise_gram64(a: torch.Tensor, b: torch.Tensor | None, out: torch.Tensor | None = None,
                     norm: int | None = None) -> torch.Tensor:
    """Bhattacharyya matrix from float64 batched Gram matrices BC_n = sqrt(P_n) sqrt(Q_n)^T (DGEMM),
    per sample ``-log1p(BC - 1)`` (BC - 1 is exact in float64 near 1), summed over sample chunks."""
    ma, n, c = a.shape
    bb = a if b is None else b
    mb = bb.shape[0]
    part = torch.zeros((ma, mb), dtype=torch.float64, device=a.device)
    per_sample = ma * mb * 8 + (ma + mb) * c * 8
    step = max(1, min(n, (1 << 30) // per_sample))
    for n0 in range(0, n, step):
        sa = reference.normalized(a[:, n0:n0 + step]).sqrt().transpose(0, 1)  # (nc, ma, C)
        sb = sa if b is None else reference.normalized(bb[:, n0:n0 + step]).sqrt().transpose(0, 1)
        bc = torch.bmm(sa, sb.transpose(1, 2))
        d = torch.where(bc > 0.5, -torch.log1p(bc - 1), -torch.log(bc.clamp_min(reference.BC_FLOOR)))
        part += d.sum(0)
    part /= n if norm is None else norm  # this call's samples only: callers may stream chunks into `out`
    if b is None:
        part.fill_diagonal_(0.0)
        part = 0.5 * (part + part.T)
    if out is None:
        return part
    out += part
    return out


def _inv_row_sums(t: torch.Tensor, budget: int = 1 << 27) -> torch.Tensor:
    """(m, N) float64 1 / sum_c p on t's device: the kernels renormalise every stored row. Computed in
    blocks of models so that no float64 copy of the whole input is ever made."""
    m, n, c = t.shape
    out = torch.empty((m, n), dtype=torch.float64, device=t.device)
    step = max(1, budget // max(1, n * c))
    for i0 in range(0, m, step):
        s = t[i0:i0 + step].sum(-1, dtype=torch.float64)
        out[i0:i0 + step] = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
    return out


def _file_backed(x) -> tuple[str, int] | None:
    """(path, byte offset) of a C-contiguous numpy memory map that owns its mapping, else None. Views
    of a memory map (``mm[2:7]``) keep their parent's ``offset``, so they are copied, not read."""
    import mmap

    if isinstance(x, np.memmap) and isinstance(x.base, mmap.mmap) and x.flags.c_contiguous and \
            getattr(x, "filename", None):
        return str(x.filename), int(x.offset)
    return None


_READERS = None
_READ_WORKERS = min(16, os.cpu_count() or 2)


def read_chunk_into(src, n0: int, n1: int, dst: np.ndarray) -> None:
    """Copy samples [n0, n1) of every model of ``src`` (m, N, C) into ``dst[:, :n1 - n0]``. A memory-mapped
    file is read with parallel ``os.preadv`` calls (one contiguous range per model, the GIL released),
    which is several times faster than page-faulting through the map; anything else is copied."""
    global _READERS
    length = n1 - n0
    fb = _file_backed(src) if isinstance(src, np.ndarray) else None
    if fb is None:
        view = src[:, n0:n1]
        dst[:, :length] = view.numpy() if isinstance(view, torch.Tensor) else view
        return
    path, offset = fb
    m, n, c = src.shape
    item = src.dtype.itemsize
    row = length * c * item
    if _READERS is None:
        from concurrent.futures import ThreadPoolExecutor

        _READERS = ThreadPoolExecutor(max_workers=_READ_WORKERS)
    fd = os.open(path, os.O_RDONLY)
    try:
        def read(rows):
            for i in rows:
                target = memoryview(dst[i].reshape(-1).view(np.uint8))[:row]
                got = os.preadv(fd, [target], offset + (i * n + n0) * c * item)
                if got != row:
                    raise OSError(f"{path}: short read ({got} of {row} bytes) for model {i}: truncated file?")

        step = max(1, m // (4 * _READ_WORKERS))
        list(_READERS.map(read, [range(i, min(m, i + step)) for i in range(0, m, step)]))
    finally:
        os.close(fd)


def _pairwise_streamed(a: torch.Tensor, b: torch.Tensor | None, code: int, chunk: int | None, validate: bool,
                       tol: float, device: torch.device | None = None, method: str = "tiled", a_src=None,
                       b_src=None) -> torch.Tensor:
    """Host data (memory maps included) on the GPU: sample chunks go through two pinned host buffers
    and a side stream, so the copy of chunk k+1 overlaps the kernel on chunk k. The kernel adds each
    chunk's sum (divided by the total N) into one float64 matrix: the result equals the in-memory one."""
    from ._validate import check_probabilities

    mod = cuda_module()
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else device
    sets = [a] if b is None else [a, b]
    sources = [a_src] if b is None else [a_src, b_src]
    m, n, c = a.shape
    item = a.element_size()
    per_sample = sum(s.shape[0] for s in sets) * c * item
    nc = int(chunk) if chunk else max(1, min(n, (256 << 20) // max(1, per_sample)))
    nc = min(nc, n)
    pinned = [[torch.empty((s.shape[0], nc, c), dtype=s.dtype, pin_memory=True) for s in sets] for _ in range(2)]
    dev = [[torch.empty((s.shape[0], nc, c), dtype=s.dtype, device=device) for s in sets] for _ in range(2)]
    out = torch.zeros((m, sets[-1].shape[0]), dtype=torch.float64, device=device)
    copy_stream = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)
    done = [None, None]
    scratch = None
    with torch.cuda.device(device):
        for idx, n0 in enumerate(range(0, n, nc)):
            slot = idx % 2
            n1 = min(n, n0 + nc)
            length = n1 - n0
            if done[slot] is not None:
                done[slot].synchronize()  # the kernel that read this slot has finished
            for host, src, raw in zip(pinned[slot], sets, sources):
                if raw is not None and isinstance(raw, np.ndarray):
                    read_chunk_into(raw, n0, n1, host.numpy())
                else:
                    host[:, :length].copy_(src[:, n0:n1])
            with torch.cuda.stream(copy_stream):
                for d, host in zip(dev[slot], pinned[slot]):
                    d[:, :length].copy_(host[:, :length], non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(copy_stream)
            compute.wait_event(copied)
            views = [d[:, :length] for d in dev[slot]]
            if validate:
                for name, v in zip(("models", "others"), views):
                    check_probabilities(v, name, tol, sample_offset=n0)
            other = None if b is None else views[1]
            if method == "gram64":
                _pairwise_gram64(views[0], other, out=out, norm=n)
            else:
                if scratch is None:
                    scratch = _scratch(mod, views[0], other, code)
                _launch_tiled(mod, views[0], other, code, out, n, False, scratch)
            done[slot] = torch.cuda.Event()
            done[slot].record(compute)
    if b is None and method != "gram64":
        upper = torch.triu(out, 1)
        out = upper + upper.T
    return out


def progress(a: torch.Tensor, labels: torch.Tensor, backend: str, threads: int | None = None,
             validate: bool = True, tol: float = 1e-4, xtol: float = 1e-12) -> torch.Tensor:
    """Progress (float64, shape (m,)) of ``(m, N, C)`` models on the ignorance -> truth geodesic."""
    if backend == "torch":
        return reference.progress(a, labels, xtol=xtol)
    if backend == "cpu":
        lab = labels.to(torch.int64).contiguous()
        out = np.empty(a.shape[0], dtype=np.float64)
        cpu_module().progress(view(a), lab.data_ptr(), lab.numel(), out.ctypes.data, _threads(threads),
                              bool(validate), float(tol), float(xtol))
        return torch.from_numpy(out)
    mod = cuda_module()
    lab = labels.to(device=a.device, dtype=torch.int64).contiguous()
    out = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
    scratch = torch.empty(2 * a.shape[0] * a.shape[1], dtype=torch.float64, device=a.device)
    with torch.cuda.device(a.device):
        stream = torch.cuda.current_stream(a.device).cuda_stream
        mod.progress(view(a), lab.data_ptr(), lab.numel(), out.data_ptr(), scratch.data_ptr(), float(xtol), stream)
    return out
