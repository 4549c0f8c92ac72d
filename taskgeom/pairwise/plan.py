"""Planning and executing a pairwise matrix in tiles, whatever holds the models and wherever the matrix
goes.

* a **source** is anything with ``len()`` and ``block(i0, i1)`` giving models ``[i0, i1)``: a
  :class:`~taskgeom.modelsets.ModelSet` (``.npy`` files, stores, arrays) or :class:`Blocks` (arrays,
  tensors or store trajectories in memory, each handed to the kernels as it is);
* :func:`plan` turns row and column bounds into :class:`Tile` s: the upper triangle of a symmetric matrix
  (diagonal tiles compute one block against itself; the others are mirrored by the sink) or every tile of
  a cross matrix;
* a **sink** takes each computed tile with ``put(tile, block)``: :class:`ArraySink` (an array in memory),
  :class:`taskgeom.tiled.DistanceMatrix` (a matrix on disk with its ledger of finished tiles),
  :class:`taskgeom.large.DeviceDistances` (tiles kept in a GPU's memory), or any object of the caller's
  (the landmark InPCA places each tile of models as it arrives);
* :func:`execute` runs the tiles in this process; :func:`taskgeom.engines.run_tiles` runs them on Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._validate import host_array

__all__ = ["Tile", "uniform", "sized", "plan", "Blocks", "ArraySink", "FunctionSink", "execute"]


@dataclass(frozen=True)
class Tile:
    """Rows ``[r0, r1)`` against columns ``[c0, c1)``; ``(i, j)`` its place in the plan. In a symmetric
    matrix a ``diagonal`` tile computes one block against itself and the others stand for their mirror too."""

    i: int
    j: int
    r0: int
    r1: int
    c0: int
    c1: int
    symmetric: bool

    @property
    def diagonal(self) -> bool:
        return self.symmetric and self.i == self.j

    @property
    def mirrored(self) -> bool:
        """The tile's transpose is also part of the matrix (a symmetric matrix's off-diagonal tile)."""
        return self.symmetric and self.i != self.j


def uniform(m: int, tile: int) -> list[tuple[int, int]]:
    """Bounds of ``m`` models in tiles of ``tile`` (the last may be smaller)."""
    return [(r0, min(m, r0 + tile)) for r0 in range(0, m, tile)]


def sized(sizes) -> list[tuple[int, int]]:
    """Bounds of consecutive blocks of the given sizes."""
    ends = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def plan(rows: list, cols: list | None = None) -> list[Tile]:
    """The tiles of the matrix of ``rows`` bounds against ``cols`` bounds, row by row; without ``cols``
    the symmetric matrix's upper triangle (``i <= j``). Empty blocks get no tile."""
    symmetric = cols is None
    cols = rows if symmetric else cols
    return [
        Tile(i, j, r0, r1, c0, c1, symmetric)
        for i, (r0, r1) in enumerate(rows)
        for j, (c0, c1) in enumerate(cols)
        if (not symmetric or j >= i) and r1 > r0 and c1 > c0
    ]


class Blocks:
    """A source of models held by the caller: one ``(m, N, C)`` array or tensor, or a sequence of model
    sets (``(T, N, C)`` arrays or tensors, store trajectories), in order. A request for exactly one of
    them returns it unchanged (a memory map stays a map: the kernels read it as a file); other requests
    are slices (of the array) or concatenations."""

    def __init__(self, parts):
        from ..store import Trajectory

        whole = not isinstance(parts, (list, tuple))
        self.parts = [parts] if whole else [p.probs if isinstance(p, Trajectory) else p for p in parts]
        self.bounds = sized([len(p) for p in self.parts])

    @staticmethod
    def holds_sets(x) -> bool:
        """``x`` is a sequence of model sets (store trajectories or (T, N, C) arrays), not of single models."""
        from ..store import Trajectory

        return (
            isinstance(x, (list, tuple))
            and len(x) > 0
            and all(isinstance(e, Trajectory) or (hasattr(e, "ndim") and e.ndim == 3) for e in x)
        )

    def __len__(self) -> int:
        return self.bounds[-1][1] if self.bounds else 0

    def block(self, i0: int, i1: int):
        for (a, b), part in zip(self.bounds, self.parts):
            if (a, b) == (i0, i1):
                return part
            if a <= i0 and i1 <= b:
                return part[i0 - a : i1 - a]
        pieces = [p[max(i0, a) - a : min(i1, b) - a] for (a, b), p in zip(self.bounds, self.parts) if a < i1 and i0 < b]
        if all(isinstance(p, torch.Tensor) for p in pieces):
            return torch.cat(pieces)
        return np.concatenate([host_array(p) for p in pieces])


class ArraySink:
    """A float64 ``rows x cols`` array in memory; an off-diagonal tile of a symmetric matrix fills its
    mirror too."""

    def __init__(self, rows: int, cols: int):
        self.out = np.zeros((rows, cols))

    def put(self, tile: Tile, block) -> None:
        d = host_array(block)
        self.out[tile.r0 : tile.r1, tile.c0 : tile.c1] = d
        if tile.mirrored:
            self.out[tile.c0 : tile.c1, tile.r0 : tile.r1] = d.T


class FunctionSink:
    """A sink that hands each computed tile to ``fn(tile, block)`` (e.g. to reduce it and keep only that)."""

    def __init__(self, fn):
        self.put = fn


def execute(tiles: list[Tile], rows, cols, sink, compute, progress=None) -> int:
    """Compute each tile in this process: ``compute(row_block, col_block or None)`` (None for a diagonal
    tile), handed to ``sink.put``. ``progress(done, total)`` after each tile. Returns how many ran."""
    cols = rows if cols is None else cols
    for k, t in enumerate(tiles, 1):
        a = rows.block(t.r0, t.r1)
        sink.put(t, compute(a, None if t.diagonal else cols.block(t.c0, t.c1)))
        if progress is not None:
            progress(k, len(tiles))
    return len(tiles)
