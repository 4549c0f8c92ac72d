"""Out-of-core divergence matrices: tiles computed into a matrix on disk, with a ledger of finished tiles
(the public entry point is :func:`taskgeom.pairwise_distances` with ``out=PATH``, in :mod:`taskgeom.distances`).

``pairwise_distances(models, out=PATH)`` (and ``taskgeom distances SOURCE --out PATH``) splits the
``m x m`` matrix into ``T x T`` tiles (``T`` from a memory budget that does not grow with ``m``) and
computes each tile from two blocks of models read on demand. The result is a folder::

    PATH/D.npy        the matrix (float64), an ordinary .npy file: np.load(PATH/"D.npy", mmap_mode="r")
    PATH/meta.json    size, tile, divergence, shape of the models
    PATH/keys.json    one identity key per model (see taskgeom.modelsets)
    PATH/tiles/I-J.json   the ledger: one marker per finished tile (I <= J) with the extent it covers

Why a ``.npy`` memory map with a ledger rather than zarr: InPCA's streamed operator reads the whole
matrix a hundred times or more, which a raw memory map serves at page-cache bandwidth with no decoding
(distances barely compress); any numpy program reads the file; tiles are disjoint byte ranges written
with ``pwrite``, so parallel writers (Ray workers on a shared filesystem) never touch each other's bytes;
and a marker is written (atomically) only after its tile's bytes are fsynced, so a killed run resumes
where it stopped without recomputing a finished tile. Adding models grows the file once (the old block is
copied, not recomputed) and computes only the new rows and columns.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import geometry as _geometry
from .modelsets import ModelSet

__all__ = ["DistanceMatrix", "Task", "tile_size", "open_for", "compute_tile", "DEFAULT_BUDGET"]

DEFAULT_BUDGET = 1 << 30  # bytes of model blocks and tile output held at once


def tile_size(n: int, c: int, itemsize: int, budget: int = DEFAULT_BUDGET) -> int:
    """Models per tile side so that two blocks of models (as stored and as float64 staging) and one
    float64 tile fit in ``budget`` bytes; independent of the number of models."""
    per_model = n * c * (itemsize + 8)  # a block as read, and the kernel's float64 staging of it
    t = int(budget // max(1, 2 * per_model))
    while t > 16 and 2 * t * per_model + 8 * t * t > budget:
        t -= max(1, t // 8)
    return max(16, min(t, 4096))


@dataclass
class Task:
    """One tile's missing regions: (r0, r1, c0, c1) in models, and the extent the tile will then cover."""

    I: int  # noqa: E741
    J: int
    regions: list
    r1: int
    c1: int


class DistanceMatrix:
    """The on-disk matrix of a folder written by :func:`pairwise_distances` (see the module docstring)."""

    def __init__(self, path):
        self.path = Path(path).resolve()  # absolute: Ray workers may run in another directory
        try:
            self.meta = json.loads((self.path / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: not a taskgeom distance folder ({exc})") from exc
        self.m, self.tile = int(self.meta["m"]), int(self.meta["tile"])

    @property
    def file(self) -> Path:
        return self.path / "D.npy"

    def array(self) -> np.memmap:
        """The matrix as a read-only memory map (complete only when :meth:`missing` is empty)."""
        return np.load(self.file, mmap_mode="r")

    def _marker(self, i: int, j: int) -> Path:
        return self.path / "tiles" / f"{i}-{j}.json"

    def finished(self, i: int, j: int) -> tuple[int, int]:
        """(r1, c1): the extent tile (i, j) covers (its start when nothing is done)."""
        try:
            d = json.loads(self._marker(i, j).read_text())
            return int(d["r1"]), int(d["c1"])
        except (OSError, ValueError, KeyError):
            return i * self.tile, j * self.tile

    def tasks(self) -> list[Task]:
        """The tiles (i <= j) that are not finished, each with its missing regions."""
        t, m = self.tile, self.m
        out = []
        for i in range((m + t - 1) // t):
            for j in range(i, (m + t - 1) // t):
                R0, C0, R1, C1 = i * t, j * t, min(m, (i + 1) * t), min(m, (j + 1) * t)
                r1, c1 = self.finished(i, j)
                if r1 >= R1 and c1 >= C1:
                    continue
                if i == j or r1 <= R0 or c1 <= C0:
                    regions = [(R0, R1, C0, C1)]  # diagonal or untouched: the whole tile
                else:
                    regions = ([(r1, R1, C0, C1)] if r1 < R1 else []) + ([(R0, r1, c1, C1)] if c1 < C1 else [])
                out.append(Task(i, j, regions, R1, C1))
        return out

    def write_block(self, block: np.ndarray, r0: int, c0: int, mirror: bool) -> None:
        """Write ``block`` at rows ``r0..``, columns ``c0..`` (and its transpose, with ``mirror``), fsynced."""
        offset = int(self.meta["offset"])
        item = 8
        fd = os.open(self.file, os.O_RDWR)
        try:
            for part, (a0, b0) in ((block, (r0, c0)), (block.T, (c0, r0))) if mirror else ((block, (r0, c0)),):
                rows = np.ascontiguousarray(part, dtype=np.float64)
                for k, row in enumerate(rows):
                    view = memoryview(row.tobytes())
                    pos = offset + ((a0 + k) * self.m + b0) * item
                    while view:
                        n = os.pwrite(fd, view, pos)
                        if n <= 0:
                            raise OSError(28, "short write")
                        pos, view = pos + n, view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def mark(self, task: Task) -> None:
        tmp = self._marker(task.I, task.J).with_suffix(".tmp")
        tmp.write_text(json.dumps({"r1": task.r1, "c1": task.c1}))
        os.replace(tmp, self._marker(task.I, task.J))

    def row_blocks(self, budget: int = DEFAULT_BUDGET):
        """(r0, rows) blocks of the matrix, each at most ``budget`` bytes, read with ``pread`` into one
        reused buffer (not through a memory map, whose touched pages would count in this process's
        resident memory): reading the whole matrix holds one block."""
        step = max(1, int(budget // max(1, 8 * self.m)))
        buf = np.empty((min(step, self.m), self.m))
        offset = int(self.meta["offset"])
        fd = os.open(self.file, os.O_RDONLY)
        try:
            for r0 in range(0, self.m, step):
                rows = min(step, self.m - r0)
                view = memoryview(buf[:rows].reshape(-1).view(np.uint8))
                got = os.preadv(fd, [view], offset + r0 * self.m * 8)
                if got != rows * self.m * 8:
                    raise OSError(f"{self.file}: short read ({got} bytes) at row {r0}: truncated?")
                yield r0, buf[:rows]
        finally:
            os.close(fd)


def _create(path: Path, models: ModelSet, divergence: str, tile: int, keys: list) -> DistanceMatrix:
    (path / "tiles").mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(path / "D.npy.tmp", mode="w+", dtype=np.float64, shape=(models.m, models.m))
    offset = int(mm.offset)
    del mm
    os.replace(path / "D.npy.tmp", path / "D.npy")
    (path / "keys.json").write_text(json.dumps(keys))
    meta = {
        "m": models.m,
        "n": models.n,
        "c": models.c,
        "tile": tile,
        "divergence": divergence,
        "offset": offset,
        "format": "taskgeom-distances-1",
    }
    _write_meta(path, meta)
    return DistanceMatrix(path)


def _write_meta(path: Path, meta: dict) -> None:
    tmp = path / "meta.json.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, path / "meta.json")


def _grow(dm: DistanceMatrix, models: ModelSet, keys: list) -> DistanceMatrix:
    """Grow the matrix to ``models.m``: the old block is copied into a larger file (not recomputed)."""
    old, m_old = dm.array(), dm.m
    tmp = dm.path / "D.npy.grow"
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(models.m, models.m))
    step = max(1, (256 << 20) // max(1, 8 * m_old))
    for r0 in range(0, m_old, step):
        r1 = min(m_old, r0 + step)
        mm[r0:r1, :m_old] = old[r0:r1]
    mm.flush()
    offset = int(mm.offset)
    del mm, old
    os.replace(tmp, dm.file)
    (dm.path / "keys.json").write_text(json.dumps(keys))
    _write_meta(dm.path, {**dm.meta, "m": models.m, "offset": offset})
    return DistanceMatrix(dm.path)


def open_for(path, models: ModelSet, divergence: str, tile: int | None, budget: int) -> DistanceMatrix:
    """The distance folder at ``path`` for ``models``: created, reused (resume) or grown (new models)."""
    path = Path(path)
    keys = models.keys()
    if not (path / "meta.json").exists():
        t = tile or tile_size(models.n, models.c, np.dtype(models.dtype).itemsize, budget)
        return _create(path, models, divergence, t, keys)
    dm = DistanceMatrix(path)
    meta = dm.meta
    if meta["divergence"] != divergence or (meta["n"], meta["c"]) != (models.n, models.c):
        raise ValueError(
            f"{path}: holds a {meta['divergence']} matrix of ({meta['n']}, {meta['c']}) models; "
            f"asked for {divergence} of ({models.n}, {models.c}): use another output folder"
        )
    old_keys = json.loads((path / "keys.json").read_text())
    if models.m < dm.m or keys[: dm.m] != old_keys:
        first = next((i for i, (a, b) in enumerate(zip(keys, old_keys)) if a != b), min(len(keys), len(old_keys)))
        raise ValueError(
            f"{path}: was computed for {dm.m} models, and model {first} of the {models.m} given differs "
            "(models can only be added at the end): use another output folder"
        )
    return _grow(dm, models, keys) if models.m > dm.m else dm


def compute_tile(
    dm: DistanceMatrix, models: ModelSet, task: Task, divergence: str, backend: str = "auto", threads: int | None = None
) -> None:
    """Compute a tile's missing regions, write them (mirrored), then mark the tile finished."""
    for r0, r1, c0, c1 in task.regions:
        rows = models.block(r0, r1)
        if (r0, r1) == (c0, c1):
            block = np.asarray(
                _geometry.pairwise_distances(rows, divergence=divergence, backend=backend, threads=threads)
            )
        else:
            cols = models.block(c0, c1)
            block = np.asarray(
                _geometry.pairwise_distances(rows, cols, divergence=divergence, backend=backend, threads=threads)
            )
        dm.write_block(block, r0, c0, mirror=(r0, r1) != (c0, c1) or task.I != task.J)
    dm.mark(task)
