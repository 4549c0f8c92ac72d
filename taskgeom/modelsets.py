"""Model sets that may not fit in memory: ``m`` models of shape ``(N, C)`` read block by block.

A :class:`ModelSet` is either an ``(m, N, C)`` array (a ``.npy`` file opened as a memory map, or an
array in memory) or the checkpoints of a PredictionStore's trajectories, in order. Blocks of models are
read on demand (:meth:`ModelSet.block`), so that tiled computations hold only the blocks they work on.
A set describes itself by a :meth:`spec` that another process (a Ray worker) can reopen, and by one
identity key per model, so that a matrix computed for a set can tell whether a set it is asked to extend
starts with the same models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._checks import ArgumentTypeError
from ._validate import host_array

__all__ = ["ModelSet", "open_models"]


@dataclass
class ModelSet:
    """``m`` models of shape ``(n, c)``; see the module docstring. Build with :func:`open_models`."""

    kind: str  # "npy" (a file), "array" (in memory) or "store"
    m: int
    n: int
    c: int
    dtype: str
    path: str | None = None
    filters: dict | None = None
    ordered: bool = False  # store: trajectories in the order of filters["name"], not of creation
    _array: np.ndarray | None = None
    _index: list | None = None  # store: (trajectory id, checkpoint) per model
    _store: object = None

    def __len__(self) -> int:
        return self.m

    def block(self, i0: int, i1: int) -> np.ndarray:
        """Models ``[i0, i1)`` as an array ``(i1 - i0, n, c)`` (a view of a memory map where possible)."""
        i0, i1 = max(0, int(i0)), min(self.m, int(i1))
        if self.kind in ("npy", "array"):
            return self._array[i0:i1]
        out = np.empty((i1 - i0, self.n, self.c), dtype=self.dtype)
        k = i0
        while k < i1:  # runs of consecutive checkpoints of one trajectory are one slice of its map
            tid, idx = self._index[k]
            run = 1
            while k + run < i1 and self._index[k + run] == (tid, idx + run):
                run += 1
            out[k - i0 : k - i0 + run] = self._trajectory(tid).probs[idx : idx + run]
            k += run
        return out

    def _trajectory(self, tid: int):
        cache = self.__dict__.setdefault("_trajs", {})
        if tid not in cache:
            cache[tid] = self._store.trajectory(int(tid))
        return cache[tid]

    def spec(self) -> dict:
        """A description another process can reopen with :func:`open_models` (arrays in memory cannot)."""
        if self.kind == "array":
            raise ValueError("an in-memory array cannot be reopened by another process: save it as .npy first")
        spec = {"kind": self.kind, "path": self.path, "filters": self.filters, "m": self.m}
        return {**spec, "ordered": True} if self.ordered else spec

    def keys(self) -> list[str]:
        """One identity key per model: for a store, trajectory name, checkpoint and its checksum; for an
        array, a BLAKE2b digest of the model's bytes (read once, block by block)."""
        if self.kind == "store":
            out = []
            for tid, idx in self._index:
                t = self._trajectory(tid)
                sums = self.__dict__.setdefault("_sums", {})
                if tid not in sums:
                    sums[tid] = t.checksums
                out.append(f"{t.name}#{idx}:{sums[tid][idx] or ''}")
            return out
        out = []
        step = max(1, (64 << 20) // max(1, self.n * self.c * np.dtype(self.dtype).itemsize))
        for i0 in range(0, self.m, step):
            blk = np.ascontiguousarray(self.block(i0, i0 + step))
            out.extend(hashlib.blake2b(b.tobytes(), digest_size=12).hexdigest() for b in blk)
        return out


def open_models(source, **filters) -> ModelSet:
    """A :class:`ModelSet` of ``source``: a path to an ``(m, N, C)`` ``.npy`` file, a PredictionStore
    directory (with ``filters`` as in :meth:`PredictionStore.select`: every checkpoint of the selected
    trajectories, in order), an open PredictionStore, a list of its trajectories (in the order given), an
    array, or a ModelSet spec.

    An ``.npz`` archive is refused with one line (it is not a model source: pass the array inside,
    ``np.load(path)[name]``); a big-endian ``.npy`` is accepted (blocks are converted to native byte order
    as they are read); complex arrays are refused."""
    from .store import PredictionStore, Trajectory

    if isinstance(source, ModelSet):
        return source
    if isinstance(source, (list, tuple)) and source and all(isinstance(t, Trajectory) for t in source):
        return _from_trajectories(list(source))
    if isinstance(source, dict) and "kind" in source:
        filters = source.get("filters") or {}
        if source.get("ordered"):  # trajectories in the order given (taskgeom.modelsets._from_trajectories)
            m = _from_store(PredictionStore(source["path"]), filters, ordered=True)
        else:
            m = open_models(source["path"], **filters)
        if source.get("m") is not None and m.m < source["m"]:
            raise ValueError(f"{source['path']}: has {m.m} models, the task was made for {source['m']}")
        return m
    if isinstance(source, PredictionStore):
        return _from_store(source, filters)
    if isinstance(source, (str, Path)):
        p = Path(source)
        if p.is_dir():
            return _from_store(PredictionStore(p), filters)
        if filters:
            raise ValueError(f"{p}: filters apply to a store, not to a .npy file")
        try:
            a = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "allow_pickle" in detail:  # (never loaded: a data file must not run code)
                detail = "not a .npy array file, or one holding Python objects, which taskgeom does not load"
            raise ValueError(f"{p}: not a readable .npy array ({detail})") from exc
        if not isinstance(a, np.ndarray):  # an .npz archive (np.load gives an NpzFile)
            names = list(getattr(a, "files", []))
            if hasattr(a, "close"):
                a.close()
            raise ValueError(
                f"{p}: an .npz archive (arrays {names}) is not a model source: save the (m, N, C) array as "
                ".npy, or pass np.load(path)[name]"
            )
        return _from_array(a, "npy", str(p.resolve()), name=str(p))
    if isinstance(source, torch.Tensor):
        if source.is_complex():
            raise ArgumentTypeError("models: probabilities must be real, got a complex tensor")
        source = host_array(source)
    a = np.asarray(source)
    return _from_array(a, "array", None)


def _from_array(a: np.ndarray, kind: str, path: str | None, name: str = "models") -> ModelSet:
    if a.dtype.kind == "c":
        raise ArgumentTypeError(f"{name}: probabilities must be real, got a complex array ({a.dtype})")
    if a.ndim != 3:
        raise ValueError(f"{name}: expected (m, N, C), got shape {a.shape}")
    if a.dtype.kind != "f" or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty float array, got {a.dtype} of shape {a.shape}")
    # a big-endian .npy is accepted: each block read is converted to native order at the edge
    # (taskgeom._validate.as_tensor), and identity keys hash the stored bytes
    return ModelSet(kind, a.shape[0], a.shape[1], a.shape[2], a.dtype.str, path=path, _array=a)


def _from_trajectories(trajs: list) -> ModelSet:
    """The checkpoints of store trajectories in the order given (one store)."""
    stores = {id(t.store) for t in trajs}
    if len(stores) > 1:
        raise ValueError("models: trajectories of several stores are not one model set; merge the stores first")
    names = [t.name for t in trajs]
    if len(set(names)) < len(names):
        raise ValueError("models: a trajectory is listed twice")
    return _from_store(trajs[0].store, {"name": names}, ordered=True)


def _from_store(store, filters: dict, ordered: bool = False) -> ModelSet:
    trajs = store.select(**filters)
    if ordered:  # the order of the names given, not the store's order of creation
        rank = {n: i for i, n in enumerate(filters["name"])}
        trajs = sorted(trajs, key=lambda t: rank[t.name])
    if not trajs:
        raise ValueError(f"{store.root}: no trajectories match {filters or 'the store'}")
    sets = {t.eval_set for t in trajs}
    if len(sets) > 1:
        raise ValueError(
            f"{store.root}: the selected trajectories are on different evaluation sets {sorted(sets)}; "
            "select one (eval_set=...)"
        )
    dtypes = {t.dtype for t in trajs}
    es = store.eval_set(trajs[0].eval_set)
    index = [(t.id, k) for t in trajs for k in range(len(t))]
    dtype = "float32" if "float32" in dtypes else "float16"
    return ModelSet(
        "store",
        len(index),
        es.n,
        es.c,
        np.dtype(dtype).str,
        path=str(Path(store.root).resolve()),
        filters=dict(filters),
        ordered=ordered,
        _index=index,
        _store=store,
    )
