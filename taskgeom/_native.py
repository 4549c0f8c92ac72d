"""Loading the compiled modules (``taskgeom._C``, ``taskgeom._cuda``) and describing arrays to them.

Kernels take raw buffers: a 3-d array travels as ``(data_ptr, dtype code, shape, strides in elements)``.
A module that was not built (or fails to import) raises a RuntimeError saying so when it is needed;
nothing falls back silently.
"""

from __future__ import annotations

import importlib
import os

import torch

__all__ = [
    "cpu_module",
    "cuda_module",
    "native_module",
    "has_cpu",
    "has_cuda",
    "import_error",
    "view",
    "threads",
    "usable_cores",
]

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


def import_error(name: str) -> str | None:
    """Why ``taskgeom.<name>`` could not be imported (None when it was)."""
    _load(name)
    mod = _modules[name]
    return str(mod) if isinstance(mod, ImportError) else None


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


def native_module():
    """Whichever compiled module is available (for shared definitions such as the divergence enum)."""
    mod = _load("_C") or _load("_cuda")
    if mod is None:
        cpu_module()  # raises with the reason
    return mod


def has_cpu() -> bool:
    return _load("_C") is not None


def has_cuda() -> bool:
    return _load("_cuda") is not None


def view(t: torch.Tensor, name: str = "models"):
    """(data_ptr, dtype code, shape, strides in elements) of a 3-d tensor, for the native modules."""
    if t.dim() != 3:
        raise ValueError(f"{name}: expected (models, samples, classes), got shape {tuple(t.shape)}")
    if t.dtype not in _DTYPE_CODES:
        raise TypeError(f"{name}: unsupported dtype {t.dtype}")
    return (t.data_ptr(), _DTYPE_CODES[t.dtype], tuple(t.shape), tuple(t.stride()))


def threads(requested: int | None) -> int:
    """OpenMP threads for a CPU kernel call: the argument, else $TASKGEOM_NUM_THREADS, else 0 (OpenMP's default)."""
    if requested is not None:
        return int(requested)
    env = os.environ.get("TASKGEOM_NUM_THREADS")
    return int(env) if env else 0


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def busy_machine() -> tuple[int, int] | None:
    """(runnable tasks, usable cores) when more tasks are runnable than this process may use cores (Linux's
    /proc/loadavg, this thread included), else None (also where it cannot be read)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    cores = usable_cores()
    return (running, cores) if running > cores else None


def warn_if_openmp_spins(what: str) -> None:
    """One warning when torch's OpenMP threads spin while they wait (torch was imported before taskgeom, no
    OMP_WAIT_POLICY or GOMP_SPINCOUNT chosen) and the machine is busy: ``what`` then runs several times slower than its share."""
    import warnings

    from . import _openmp

    busy = busy_machine() if _openmp.spins else None
    if busy:
        warnings.warn(
            f"{what}: {busy[0]} tasks are runnable on {busy[1]} cores and torch's OpenMP threads spin while they "
            "wait (torch was imported before taskgeom): expect it several times slower than its share; set "
            "GOMP_SPINCOUNT=1000 (or OMP_WAIT_POLICY=passive) before Python starts, or import taskgeom before torch",
            RuntimeWarning,
            stacklevel=3,
        )
