"""Importers: trajectories recorded elsewhere, brought into a :class:`~.predictions.PredictionStore`.

``import_h5`` reads the paper authors' released trajectories: an HDF5 file whose dataset ``data`` is
(T, N, C) (float16, LZ4-compressed through hdf5plugin), with the evaluation labels given separately.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import segments
from .errors import StoreError, one_line

__all__ = ["import_h5"]


def _open_h5(path):
    try:
        import h5py
    except ImportError as exc:
        raise RuntimeError("import_h5 needs the 'h5' extra: pip install 'taskgeom[h5]'") from exc
    try:
        import hdf5plugin  # noqa: F401  (registers the LZ4 filter)
    except ImportError:
        pass
    try:
        return h5py, h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"{path}: not a readable HDF5 file ({one_line(exc)})") from exc


def import_h5(
    store,
    path,
    labels,
    eval_set: str,
    task: str | None = None,
    method: str | None = None,
    seed: int | None = None,
    architecture: str | None = None,
    dataset: str = "data",
    dtype: str = "float16",
):
    """Import an HDF5 trajectory (dataset ``dataset`` [T, N, C]) with its labels (an array or a ``.npy``)
    into ``store`` as the trajectory ``<file name>@<eval_set>``; returns it.

    Every checkpoint is validated before anything is written (an error names the checkpoint and sample);
    the import is then one transaction: all of it or nothing. Importing the same file again completes
    what an earlier import left out; a file whose first checkpoints differ from those already imported
    from it (or that now holds fewer) is an error, and the store is left as it was."""
    if dtype not in segments.DTYPES:
        raise ValueError(f"dtype must be one of {sorted(segments.DTYPES)}, got {dtype!r}")
    store._writable("import")
    lab = _labels(labels)
    h5py, f = _open_h5(path)
    with f:
        d = _dataset(h5py, f, path, dataset, lab.size)
        c = store._check_labels(lab, int(d.shape[2]), f"{path}: labels")
        name = f"{Path(path).name}@{eval_set}"
        stored = np.dtype(segments.DTYPES[dtype])
        sums = _checked_checksums(d, path, stored)  # everything validated first: nothing written for a bad file
        with store._manifest.write():
            store._add_eval_set_locked(eval_set, lab, c, None, "{}")
            source = json.dumps({"source": str(path)})
            tid = store._create_locked(
                eval_set, task, method, seed, architecture, dtype, name, True, None, None, source
            )
        traj = store.trajectory(tid)
        if traj.dtype != dtype:
            raise StoreError(f"{path}: trajectory {name!r} was imported as {traj.dtype}, not {dtype}")
        have = traj.checksums
        _same_as_before(have, sums, path, name)
        if len(have) < len(sums):
            nbytes = lab.size * c * stored.itemsize
            blobs = (np.ascontiguousarray(d[t], dtype=stored).tobytes() for t in range(len(have), d.shape[0]))
            rows = [(None, t, None, "{}") for t in range(len(have), d.shape[0])]
            # the checksums were computed from the same bytes: a file changed during the import is caught
            store.commit_checkpoints(traj, blobs, nbytes, rows, first=len(have))
            if traj.checksums != sums:
                raise StoreError(f"{path}: changed while it was imported; run taskgeom store verify {store.root}")
    return store.trajectory(tid)


def _labels(labels) -> np.ndarray:
    """The labels given, or read from a ``.npy`` path (never unpickled)."""
    if not isinstance(labels, (str, os.PathLike)):
        return np.asarray(labels)
    try:
        return np.load(labels, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{labels}: not a readable .npy of labels ({one_line(exc)})") from exc


def _dataset(h5py, f, path, dataset: str, n: int):
    """The (T, n, C) floating-point dataset ``dataset`` of the open file ``f``, or a one-line StoreError."""
    d = f.get(dataset)
    if not isinstance(d, h5py.Dataset):
        found = "no such entry" if d is None else f"a {type(d).__name__.lower()}, not a dataset"
        raise StoreError(f"{path}: {dataset!r} is {found} (entries: {list(f)})")
    if d.ndim != 3 or d.shape[1] != n or d.shape[0] < 1 or d.shape[2] < 1:
        raise StoreError(f"{path}: dataset {dataset!r} has shape {d.shape}, expected (T, {n}, C) with T, C >= 1")
    if d.dtype.kind != "f":
        raise StoreError(f"{path}: dataset {dataset!r} holds {d.dtype}, not floating-point probabilities")
    return d


def _checked_checksums(d, path, stored: np.dtype) -> list:
    """Every checkpoint of ``d`` checked as probabilities (an error names it), and the checksums of their
    bytes as they will be stored."""
    from .._validate import as_tensor, check_probabilities

    sums = []
    for t in range(d.shape[0]):
        p = np.asarray(d[t], dtype=d.dtype.newbyteorder("="))
        try:
            check_probabilities(as_tensor(p, "probs")[0], "probs")
        except ValueError as exc:
            raise ValueError(f"{path}: checkpoint {t}: {exc}; nothing was imported") from exc
        sums.append(segments.checksum(np.ascontiguousarray(p, dtype=stored).tobytes()))
    return sums


def _same_as_before(have: list, sums: list, path, name: str) -> None:
    """Refuse a file whose checkpoints differ from those imported from it earlier (or that now holds fewer)."""
    if len(have) <= len(sums) and all(a is None or a == b for a, b in zip(have, sums)):
        return
    differ = next((k for k, (a, b) in enumerate(zip(have, sums)) if a is not None and a != b), len(sums))
    what = f"checkpoint {differ} differs from" if differ < len(sums) else "the file now holds fewer than"
    raise StoreError(
        f"{path}: the store holds {len(have)} checkpoints of {name!r} imported earlier, and {what} them (the file "
        "changed since); import it under another evaluation-set name or into a new store"
    )
