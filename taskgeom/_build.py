"""What was compiled: :func:`taskgeom.build_info`."""

from __future__ import annotations

import torch

from . import _native as kernels


def build_info() -> dict:
    """Backends compiled into this install, OpenMP threads, CUDA architectures and GPU visibility.

    Returns a dict with ``cpu`` (bool), ``cuda`` (bool), and, where built, ``openmp_threads``, ``simd``,
    ``cuda_architectures``, ``cuda_runtime_version``, ``cuda_devices`` (as the static runtime sees them),
    plus ``torch`` and ``torch_cuda_available``.
    """
    info: dict = {
        "cpu": kernels.has_cpu(),
        "cuda": kernels.has_cuda(),
        "torch": torch.__version__,
        "torch_cuda_available": bool(torch.cuda.is_available()),
    }
    if info["cpu"]:
        c = kernels.cpu_module().build_info()
        info.update(openmp_threads=c["openmp_max_threads"], simd=c["simd"], compiler=c["compiler"])
    else:
        info["cpu_error"] = kernels.import_error("_C")
    if info["cuda"]:
        g = kernels.cuda_module().build_info()
        info.update(
            cuda_architectures=g["cuda_architectures"].split(","),
            cuda_runtime_version=g["cuda_runtime_version"],
            cuda_devices=g["cuda_device_count"],
        )
    info["gpu_visible"] = bool(info.get("cuda_devices", 0)) or info["torch_cuda_available"]
    return info
