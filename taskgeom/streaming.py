"""Streaming model sets that do not fit where they are computed on: reading sample chunks of
memory-mapped files (parallel ``preadv``) and the pinned, double-buffered pipeline that feeds host data
(memory maps included) through the GPU kernels chunk by chunk."""

from __future__ import annotations

import os

import numpy as np
import torch

from . import _cuda_ops, divergences
from ._native import cuda_module
from ._validate import check_probabilities, host_array

__all__ = ["file_backed", "read_chunk_into", "pairwise_streamed"]


def file_backed(x) -> tuple[str, int] | None:
    """(path, byte offset) of a C-contiguous numpy memory map that owns its mapping, else None. Views
    of a memory map (``mm[2:7]``) keep their parent's ``offset``, so they are copied, not read."""
    import mmap

    if (
        isinstance(x, np.memmap)
        and x.dtype.isnative  # raw bytes of another byte order would be read as native floats
        and isinstance(x.base, mmap.mmap)
        and x.flags.c_contiguous
        and getattr(x, "filename", None)
    ):
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
    fb = file_backed(src) if isinstance(src, np.ndarray) else None
    if fb is None:
        view = src[:, n0:n1]
        dst[:, :length] = host_array(view)
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


def pairwise_streamed(
    a: torch.Tensor,
    b: torch.Tensor | None,
    divergence: str,
    chunk: int | None,
    validate: bool,
    tol: float,
    method: str = "tiled",
    a_src=None,
    b_src=None,
) -> torch.Tensor:
    """Host data (memory maps included) on the GPU: sample chunks go through two pinned host buffers
    and a side stream, so the copy of chunk k+1 overlaps the kernel on chunk k. The kernel adds each
    chunk's sum (divided by the total N) into one float64 matrix: the result equals the in-memory one."""
    code = divergences.get(divergence).code
    device = torch.device("cuda", torch.cuda.current_device())
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
                    read_chunk_into(raw, n0, n1, host_array(host))
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
                _cuda_ops.pairwise_gram64(views[0], other, out=out, norm=n, divergence=divergence)
            elif method == "fp64tc":
                if scratch is None:
                    config = _cuda_ops.fp64tc_config(max(s.shape[0] for s in sets), c)
                    index = cuda_module().fp64tc_configs().index(config)
                    scratch = _cuda_ops.fp64tc_scratch(views[0], other, index)
                _cuda_ops.launch_fp64tc(views[0], other, code, out, n, False, scratch, config=config)
            else:
                if scratch is None:
                    scratch = _cuda_ops.scratch(views[0], other, code)
                _cuda_ops.launch_tiled(views[0], other, code, out, n, False, scratch)
            done[slot] = torch.cuda.Event()
            done[slot].record(compute)
    if b is None and method != "gram64":
        upper = torch.triu(out, 1)
        out = upper + upper.T
    return out
