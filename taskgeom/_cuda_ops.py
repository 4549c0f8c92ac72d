"""Host-side launches of the CUDA kernels (taskgeom._cuda) on device tensors, and the float64 Gram
method that runs on cuBLAS. Called by :mod:`taskgeom.kernels` (dispatch) and
:mod:`taskgeom.streaming` (host data through the GPU)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch

from . import divergences
from ._native import cuda_module, view

__all__ = [
    "GRAM64_MIN_CLASSES",
    "GRAM64_DIVERGENCES",
    "scratch",
    "launch_tiled",
    "pairwise_tiled",
    "pairwise_gram64",
    "FP64TC_DIVERGENCES",
    "FP64TC_CAPABILITIES",
    "DEFAULT_FP64TC_CONFIG",
    "fp64tc_supported",
    "fp64tc_config",
    "fp64tc_runnable",
    "fp64tc_scratch",
    "launch_fp64tc",
    "pairwise_fp64tc",
    "inv_row_sums",
    "progress",
]

#: From this many classes on, ``cuda_method="auto"`` uses float64 Gram matrices for Bhattacharyya: on an
#: H100 (bench/results/pairwise_cuda.json) gram64 took 0.34 s against the tiled kernel's 0.52 s at C = 1000, and lost at
#: C = 100 (0.54 s against 0.16 s). Both stay within 1e-6 of the float64 reference.
GRAM64_MIN_CLASSES = 512

#: The divergences that are functions of the per-sample BC alone, which gram64 can compute.
GRAM64_DIVERGENCES = ("bhattacharyya", "hellinger")


#: The divergences the fp64 tensor-core kernel computes (functions of the per-sample BC).
FP64TC_DIVERGENCES = ("bhattacharyya", "hellinger")

#: Compute capabilities with fast FP64 tensor cores (A100, H100/H200, B200), where ``cuda_method="auto"``
#: uses the fp64 tensor-core kernel. Elsewhere (sm_86/89 run DMMA at a small fraction of that rate, and
#: older GPUs have none) ``auto`` keeps the tiled float32 kernel.
FP64TC_CAPABILITIES = ((8, 0), (9, 0), (10, 0))

#: The instance used where the tuning table has no entry (also before any tuning run).
DEFAULT_FP64TC_CONFIG = "t64_w4x2_k8"

#: The table ``auto`` reads: per benchmark case (m, C), the fastest instance of the last tuning sweep
#: (bench/bench_fp64tc.py writes a new one; copy it here to adopt it). The environment variable
#: TASKGEOM_FP64TC_TUNING names another table (the tuning run uses it for its own benchmarks).
TUNING_FILE = Path(__file__).with_name("_tuning.json")


def scratch(a: torch.Tensor, b: torch.Tensor | None, code: int) -> torch.Tensor:
    """Staging buffer for the tiled CUDA kernel: the whole sample range if it fits in 1 GiB (and a
    quarter of free memory), else as many samples as do (at least one)."""
    mod = cuda_module()
    ma, n, c = a.shape
    mb = ma if b is None else b.shape[0]
    need = mod.pairwise_scratch_floats(ma, mb, b is not None, c, code, n)
    one = mod.pairwise_scratch_floats(ma, mb, b is not None, c, code, 1)
    free = torch.cuda.mem_get_info(a.device)[0]
    budget = max(one, min(need, (1 << 28), free // 16))
    return torch.empty(int(budget), dtype=torch.float32, device=a.device)


def launch_tiled(a, b, code, out, norm, mirror, buf=None) -> None:
    """Add the tiled kernel's sums over ``a``'s samples, divided by ``norm``, into ``out`` (float64)."""
    buf = scratch(a, b, code) if buf is None else buf
    _launch(cuda_module().pairwise, a, b, code, out, norm, mirror, buf)


def _launch(kernel, a, b, code, out, norm, mirror, buf, *extra) -> None:
    """Call a pairwise kernel binding on ``a``'s device and current stream with the row-normalisation
    factors of both operands; ``extra`` goes between the scratch buffer and the stream."""
    with torch.cuda.device(a.device):
        stream = torch.cuda.current_stream(a.device).cuda_stream
        a_inv = inv_row_sums(a)
        b_inv = None if b is None else inv_row_sums(b)
        kernel(
            view(a),
            a_inv.data_ptr(),
            None if b is None else view(b, "others"),
            0 if b_inv is None else b_inv.data_ptr(),
            out.data_ptr(),
            code,
            int(norm),
            bool(mirror),
            buf.data_ptr(),
            buf.numel(),
            *extra,
            stream,
        )


def pairwise_tiled(a: torch.Tensor, b: torch.Tensor | None, code: int) -> torch.Tensor:
    """The divergence matrix of device tensors with the tiled kernel."""
    out = torch.zeros((a.shape[0], (a if b is None else b).shape[0]), dtype=torch.float64, device=a.device)
    launch_tiled(a, b, code, out, a.shape[1], True)
    return out


def pairwise_gram64(
    a: torch.Tensor,
    b: torch.Tensor | None,
    out: torch.Tensor | None = None,
    norm: int | None = None,
    divergence: str = "bhattacharyya",
) -> torch.Tensor:
    """Bhattacharyya (or squared Hellinger) matrix from float64 batched Gram matrices
    BC_n = sqrt(P_n) sqrt(Q_n)^T (DGEMM); per sample ``-log1p(BC - 1)`` (BC - 1 is exact in float64 near
    1) or ``1 - BC``, summed over sample chunks."""
    if divergence not in GRAM64_DIVERGENCES:
        raise ValueError(f"cuda_method='gram64' computes {' and '.join(GRAM64_DIVERGENCES)} only, not {divergence!r}")
    ma, n, c = a.shape
    bb = a if b is None else b
    mb = bb.shape[0]
    part = torch.zeros((ma, mb), dtype=torch.float64, device=a.device)
    per_sample = ma * mb * 8 + (ma + mb) * c * 8
    step = max(1, min(n, (1 << 30) // per_sample))
    for n0 in range(0, n, step):
        sa = divergences.normalized(a[:, n0 : n0 + step]).sqrt().transpose(0, 1)  # (nc, ma, C)
        sb = sa if b is None else divergences.normalized(bb[:, n0 : n0 + step]).sqrt().transpose(0, 1)
        bc = torch.bmm(sa, sb.transpose(1, 2))
        if divergence == "hellinger":
            d = 1 - bc
        else:
            d = torch.where(bc > 0.5, -torch.log1p(bc - 1), -torch.log(bc.clamp_min(divergences.BC_FLOOR)))
        part += d.sum(0)
    part /= n if norm is None else norm  # this call's samples only: callers may stream chunks into `out`
    if b is None:
        part.fill_diagonal_(0.0)
        part = 0.5 * (part + part.T)
    if out is None:
        return part
    out += part
    return out


@functools.lru_cache(maxsize=None)
def fp64tc_supported(device_index: int) -> bool:
    """Whether ``cuda_method="auto"`` may use the fp64 tensor-core kernel on this GPU: fast FP64 tensor
    cores (:data:`FP64TC_CAPABILITIES`) and a module built with a binary for them."""
    from ._native import has_cuda

    if not has_cuda() or torch.cuda.get_device_capability(device_index) not in FP64TC_CAPABILITIES:
        return False
    with torch.cuda.device(device_index):
        return bool(cuda_module().fp64tc_available())


@functools.lru_cache(maxsize=None)
def _tuning_cases(path: str) -> tuple:
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return ()
    return tuple((int(e["m"]), int(e["C"]), str(e["config"])) for e in table.get("fp64tc", {}).get("cases", []))


def fp64tc_config(m: int, c: int, path: str | Path | None = None, names: list[str] | None = None) -> str:
    """The instance for ``m`` models of ``c`` classes: that of the tuned case nearest in (log C, log m)
    (classes first: they set the k-loop length), or :data:`DEFAULT_FP64TC_CONFIG` without a table.
    ``names``: the compiled-in instances (default: the module's)."""
    import math

    cases = _tuning_cases(str(path or os.environ.get("TASKGEOM_FP64TC_TUNING") or TUNING_FILE))
    names = fp64tc_runnable(classes=c) if names is None else names
    best, key = DEFAULT_FP64TC_CONFIG, None
    for cm, cc, name in cases:
        if name not in names:
            continue  # a table from a build with other instances, or one that takes fewer classes
        k = (abs(math.log(max(c, 1) / cc)), abs(math.log(max(m, 1) / cm)))
        if key is None or k < key:
            best, key = name, k
    return best


def fp64tc_runnable(device_index: int | None = None, classes: int | None = None) -> list[str]:
    """The compiled-in instances this GPU can run (the ``mma1684_``/``mma1688_`` ones need sm_90), and
    with ``classes`` only those that take that many (the lean ``..._c12`` / ``..._c16`` ones take at most
    12 / 16)."""
    mod = cuda_module()
    index = torch.cuda.current_device() if device_index is None else device_index
    major, minor = torch.cuda.get_device_capability(index)
    names, archs = mod.fp64tc_configs(), mod.fp64tc_config_archs()
    most = mod.fp64tc_config_max_classes()
    return [
        n
        for n, a, k in zip(names, archs, most)
        if a <= 10 * major + minor and (classes is None or k == 0 or classes <= k)
    ]


def _config_index(config: str | None, m: int, c: int) -> int:
    names = cuda_module().fp64tc_configs()
    name = config or fp64tc_config(m, c)
    if name not in names:
        raise ValueError(f"unknown fp64tc config {name!r}; compiled in: {', '.join(names)}")
    return names.index(name)


def fp64tc_scratch(a: torch.Tensor, b: torch.Tensor | None, index: int) -> torch.Tensor:
    """float64 staging buffer for the fp64 tensor-core kernel: the whole sample range if it fits in
    4 GiB (and a sixteenth of free memory), else as many samples as do (at least one)."""
    mod = cuda_module()
    ma, n, c = a.shape
    mb = ma if b is None else b.shape[0]
    need = mod.fp64tc_scratch_doubles(ma, mb, b is not None, c, index, n)
    one = mod.fp64tc_scratch_doubles(ma, mb, b is not None, c, index, 1)
    free = torch.cuda.mem_get_info(a.device)[0]
    budget = max(one, min(need, (1 << 29), free // 128))
    return torch.empty(int(budget), dtype=torch.float64, device=a.device)


def launch_fp64tc(a, b, code, out, norm, mirror, buf=None, config: str | None = None) -> None:
    """Add the fp64 tensor-core kernel's sums over ``a``'s samples, divided by ``norm``, into ``out``.
    ``config``: an instance name (:func:`fp64tc_config` by default)."""
    ma, _, c = a.shape
    index = _config_index(config, ma if b is None else max(ma, b.shape[0]), c)
    with torch.cuda.device(a.device):
        buf = fp64tc_scratch(a, b, index) if buf is None else buf
    if buf.dtype != torch.float64:
        raise ValueError("the fp64tc scratch buffer must be float64")
    _launch(cuda_module().pairwise_fp64tc, a, b, code, out, norm, mirror, buf, index)


def pairwise_fp64tc(a: torch.Tensor, b: torch.Tensor | None, code: int, config: str | None = None) -> torch.Tensor:
    """The divergence matrix of device tensors with the fp64 tensor-core kernel."""
    out = torch.zeros((a.shape[0], (a if b is None else b).shape[0]), dtype=torch.float64, device=a.device)
    launch_fp64tc(a, b, code, out, a.shape[1], True, config=config)
    return out


def inv_row_sums(t: torch.Tensor, budget: int = 1 << 27) -> torch.Tensor:
    """(m, N) float64 1 / sum_c p on t's device: the kernels renormalise every stored row. Computed in
    blocks of models so that no float64 copy of the whole input is ever made."""
    m, n, c = t.shape
    out = torch.empty((m, n), dtype=torch.float64, device=t.device)
    step = max(1, budget // max(1, n * c))
    for i0 in range(0, m, step):
        s = t[i0 : i0 + step].sum(-1, dtype=torch.float64)
        out[i0 : i0 + step] = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
    return out


def progress(a: torch.Tensor, labels: torch.Tensor, xtol: float) -> torch.Tensor:
    """Progress of device models (the CUDA kernel)."""
    mod = cuda_module()
    lab = labels.to(device=a.device, dtype=torch.int64).contiguous()
    out = torch.empty(a.shape[0], dtype=torch.float64, device=a.device)
    buf = torch.empty(2 * a.shape[0] * a.shape[1], dtype=torch.float64, device=a.device)
    with torch.cuda.device(a.device):
        stream = torch.cuda.current_stream(a.device).cuda_stream
        mod.progress(view(a), lab.data_ptr(), lab.numel(), out.data_ptr(), buf.data_ptr(), float(xtol), stream)
    return out
