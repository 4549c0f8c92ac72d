"""PredictionStore: memory-mapped prediction files with an SQLite manifest.

A store is a directory::

    store/
      manifest.sqlite          evaluation sets, trajectories, checkpoints (WAL mode)
      data/<trajectory>.bin    raw (T, N, C) float16 or float32, checkpoint after checkpoint

Appends are crash-safe: a checkpoint's probabilities are written and fsynced *before* its manifest
row is committed, and the row is what makes it visible. A writer killed at any moment leaves at most
orphan bytes past the last committed checkpoint, which the next append overwrites; earlier rows and
their data are never touched. Readers (other processes included) can read while a writer appends.
Nothing is pickled: labels are stored as ``.npy`` bytes, metadata as JSON.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PredictionStore", "Trajectory", "EvalSet", "StoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_sets (
    name TEXT PRIMARY KEY, n INTEGER NOT NULL, c INTEGER NOT NULL, labels BLOB NOT NULL,
    class_names TEXT, extra TEXT);
CREATE TABLE IF NOT EXISTS trajectories (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, eval_set TEXT NOT NULL
    REFERENCES eval_sets(name), task TEXT, method TEXT, seed INTEGER, architecture TEXT,
    dtype TEXT NOT NULL, file TEXT NOT NULL, extra TEXT, created REAL);
CREATE TABLE IF NOT EXISTS checkpoints (
    trajectory INTEGER NOT NULL REFERENCES trajectories(id), idx INTEGER NOT NULL, epoch REAL,
    step INTEGER, accuracy REAL, extra TEXT, created REAL, PRIMARY KEY (trajectory, idx));
"""

_DTYPES = {"float16": np.float16, "float32": np.float32}


class StoreError(RuntimeError):
    """A store that cannot be opened or read as asked (corrupt, truncated, missing)."""


@dataclass(frozen=True)
class EvalSet:
    """A fixed evaluation set: N samples, C classes, their labels and class names."""

    name: str
    n: int
    c: int
    labels: np.ndarray
    class_names: list | None
    extra: dict


class Trajectory:
    """A lazy handle on one trajectory: metadata now, probabilities (a read-only memory map) on use."""

    def __init__(self, store: "PredictionStore", row: sqlite3.Row):
        self.store = store
        self.id = int(row["id"])
        self.name = row["name"]
        self.eval_set = row["eval_set"]
        self.task = row["task"]
        self.method = row["method"]
        self.seed = row["seed"]
        self.architecture = row["architecture"]
        self.dtype = row["dtype"]
        self.file = store.root / row["file"]
        self.extra = json.loads(row["extra"] or "{}")

    def __repr__(self) -> str:
        return (f"Trajectory({self.name!r}, task={self.task!r}, method={self.method!r}, seed={self.seed}, "
                f"checkpoints={len(self)})")

    def __len__(self) -> int:
        return self.store._count(self.id)

    @property
    def checkpoints(self) -> list[dict]:
        """Committed checkpoints in order: idx, epoch, step, accuracy and the free-form fields."""
        rows = self.store._db.execute(
            "SELECT idx, epoch, step, accuracy, extra FROM checkpoints WHERE trajectory=? ORDER BY idx", (self.id,)
        ).fetchall()
        return [{"idx": r["idx"], "epoch": r["epoch"], "step": r["step"], "accuracy": r["accuracy"],
                 **json.loads(r["extra"] or "{}")} for r in rows]

    @property
    def labels(self) -> np.ndarray:
        return self.store.eval_set(self.eval_set).labels

    @property
    def probs(self) -> np.ndarray:
        """Read-only memory map (T, N, C) of the committed checkpoints."""
        es = self.store.eval_set(self.eval_set)
        t = len(self)
        dtype = np.dtype(_DTYPES[self.dtype])
        need = t * es.n * es.c * dtype.itemsize
        if t == 0:
            return np.zeros((0, es.n, es.c), dtype=dtype)
        if not self.file.exists():
            raise StoreError(f"trajectory {self.name!r}: data file {self.file} is missing")
        size = self.file.stat().st_size
        if size < need:
            raise StoreError(f"trajectory {self.name!r}: data file {self.file} has {size} bytes but the manifest's "
                             f"{t} checkpoints need {need} (truncated or corrupt)")
        return np.memmap(self.file, dtype=dtype, mode="r", shape=(t, es.n, es.c))

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.probs)
        return a.astype(dtype) if dtype is not None else a


class PredictionStore:
    """A directory of prediction trajectories (see the module docstring).

    Examples
    --------
    >>> store = PredictionStore("preds", create=True)            # doctest: +SKIP
    >>> store.add_eval_set("digits-test", labels)                   # doctest: +SKIP
    >>> traj = store.create_trajectory("digits-test", task="0-4", method="supervised", seed=0)  # doctest: +SKIP
    >>> store.append(traj, probs, epoch=1, step=100, accuracy=0.93)  # doctest: +SKIP
    >>> [t.probs.shape for t in store.select(task="0-4")]          # doctest: +SKIP
    """

    def __init__(self, path, create: bool = False):
        self.root = Path(path)
        manifest = self.root / "manifest.sqlite"
        if not manifest.exists():
            if not create:
                raise StoreError(f"{self.root} is not a taskgeom store (no manifest.sqlite); pass create=True")
            (self.root / "data").mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(manifest, timeout=60.0, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{manifest}: not a readable manifest ({exc})") from exc
        self._eval_cache: dict[str, EvalSet] = {}

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- evaluation sets -------------------------------------------------------------------------
    def add_eval_set(self, name: str, labels, class_names=None, c: int | None = None, **extra) -> EvalSet:
        """Register an evaluation set (idempotent when the labels are the same)."""
        lab = np.asarray(labels)
        if lab.ndim != 1 or lab.dtype.kind not in "iu":
            raise ValueError(f"labels must be a 1-d integer array, got shape {lab.shape} dtype {lab.dtype}")
        c = int(lab.max()) + 1 if c is None else int(c)
        if class_names is not None and len(class_names) != c:
            raise ValueError(f"{len(class_names)} class names for {c} classes")
        existing = self._db.execute("SELECT name FROM eval_sets WHERE name=?", (name,)).fetchone()
        if existing:
            es = self.eval_set(name)
            if es.c != c or not np.array_equal(es.labels, lab):
                raise ValueError(f"evaluation set {name!r} already exists with different labels")
            return es
        buf = io.BytesIO()
        np.save(buf, lab.astype(np.int64), allow_pickle=False)
        self._db.execute("INSERT INTO eval_sets VALUES (?, ?, ?, ?, ?, ?)",
                         (name, int(lab.size), c, buf.getvalue(),
                          None if class_names is None else json.dumps(list(class_names)), json.dumps(extra)))
        return self.eval_set(name)

    def eval_set(self, name: str) -> EvalSet:
        if name not in self._eval_cache:
            row = self._db.execute("SELECT * FROM eval_sets WHERE name=?", (name,)).fetchone()
            if row is None:
                raise KeyError(f"no evaluation set {name!r} in {self.root}")
            try:
                labels = np.load(io.BytesIO(row["labels"]), allow_pickle=False)
            except ValueError as exc:
                raise StoreError(f"evaluation set {name!r}: corrupt labels ({exc})") from exc
            self._eval_cache[name] = EvalSet(name, row["n"], row["c"], labels,
                                             json.loads(row["class_names"]) if row["class_names"] else None,
                                             json.loads(row["extra"] or "{}"))
        return self._eval_cache[name]

    def eval_sets(self) -> list[str]:
        return [r["name"] for r in self._db.execute("SELECT name FROM eval_sets ORDER BY name")]

    # ---- trajectories ----------------------------------------------------------------------------
    def create_trajectory(self, eval_set: str, task: str | None = None, method: str | None = None,
                          seed: int | None = None, architecture: str | None = None, dtype: str = "float16",
                          name: str | None = None, exist_ok: bool = True, **extra) -> Trajectory:
        """Create (or, with ``exist_ok``, return) a trajectory recorded on ``eval_set``."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.eval_set(eval_set)
        name = name or f"{task}/{method}/{architecture}/seed{seed}@{eval_set}"
        row = self._db.execute("SELECT * FROM trajectories WHERE name=?", (name,)).fetchone()
        if row is not None:
            if not exist_ok:
                raise ValueError(f"trajectory {name!r} exists")
            return Trajectory(self, row)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
        with self._write():
            cur = self._db.execute(
                "INSERT INTO trajectories (name, eval_set, task, method, seed, architecture, dtype, file, extra, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?)",
                (name, eval_set, task, method, seed, architecture, dtype, json.dumps(extra), time.time()))
            tid = cur.lastrowid
            rel = f"data/{tid:06d}_{safe}.bin"
            self._db.execute("UPDATE trajectories SET file=? WHERE id=?", (rel, tid))
        return self.trajectory(tid)

    def trajectory(self, key) -> Trajectory:
        """A trajectory by id or name."""
        col = "id" if isinstance(key, (int, np.integer)) else "name"
        row = self._db.execute(f"SELECT * FROM trajectories WHERE {col}=?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"no trajectory {key!r} in {self.root}")
        return Trajectory(self, row)

    def select(self, **where) -> list[Trajectory]:
        """Trajectories whose fields equal the given values (task, method, seed, architecture, eval_set,
        name); a list or tuple value matches any of its elements. Ordered by creation."""
        allowed = {"task", "method", "seed", "architecture", "eval_set", "name", "dtype"}
        unknown = set(where) - allowed
        if unknown:
            raise ValueError(f"cannot select on {sorted(unknown)}; fields: {sorted(allowed)}")
        clauses, args = [], []
        for key, value in where.items():
            if isinstance(value, (list, tuple, set)):
                clauses.append(f"{key} IN ({', '.join('?' * len(value))})")
                args.extend(value)
            else:
                clauses.append(f"{key}=?")
                args.append(value)
        sql = "SELECT * FROM trajectories" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id"
        return [Trajectory(self, r) for r in self._db.execute(sql, args)]

    def _count(self, tid: int) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM checkpoints WHERE trajectory=?", (tid,)).fetchone()[0])

    # ---- appends ---------------------------------------------------------------------------------
    def _write(self):
        db = self._db

        class _Txn:
            def __enter__(self_inner):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, *rest):
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Txn()

    def append(self, trajectory, probs, epoch: float | None = None, step: int | None = None,
               accuracy: float | None = None, validate: bool = True, **extra) -> int:
        """Append one checkpoint's probabilities (N, C) to a trajectory; returns its index.

        The data is written and fsynced first, then the manifest row is committed (under SQLite's write
        lock, so concurrent writers never interleave)."""
        traj = trajectory if isinstance(trajectory, Trajectory) else self.trajectory(trajectory)
        es = self.eval_set(traj.eval_set)
        p = np.asarray(probs)
        if p.shape != (es.n, es.c):
            raise ValueError(f"probs must have shape ({es.n}, {es.c}) for evaluation set {es.name!r}, got {p.shape}")
        if validate:
            from ._validate import as_tensor, check_probabilities

            check_probabilities(as_tensor(p, "probs")[0], "probs")
        data = np.ascontiguousarray(p, dtype=_DTYPES[traj.dtype])
        with self._write():
            idx = self._count(traj.id)
            offset = idx * data.nbytes
            fd = os.open(traj.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data.tobytes(), offset)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (traj.id, idx, epoch, step, accuracy, json.dumps(extra), time.time()))
        return idx

    # ---- import ----------------------------------------------------------------------------------
    def import_h5(self, path, labels, eval_set: str, task: str | None = None, method: str | None = None,
                  seed: int | None = None, architecture: str | None = None, dataset: str = "data",
                  dtype: str = "float16") -> Trajectory:
        """Import a trajectory released by the paper's authors: an HDF5 file with dataset ``data``
        [T, N, C] (float16, LZ4-compressed through hdf5plugin) and its labels (an array or a ``.npy``)."""
        try:
            import h5py
        except ImportError as exc:
            raise RuntimeError("import_h5 needs the 'h5' extra: pip install 'taskgeom[h5]'") from exc
        try:
            import hdf5plugin  # noqa: F401  (registers the LZ4 filter)
        except ImportError:
            pass
        lab = np.load(labels, allow_pickle=False) if isinstance(labels, (str, os.PathLike)) else np.asarray(labels)
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise StoreError(f"{path}: no dataset {dataset!r} (found {list(f)})")
            d = f[dataset]
            if d.ndim != 3 or d.shape[1] != lab.size:
                raise StoreError(f"{path}: dataset {dataset!r} has shape {d.shape}, expected (T, {lab.size}, C)")
            self.add_eval_set(eval_set, lab, c=d.shape[2])
            traj = self.create_trajectory(eval_set, task=task, method=method, seed=seed, architecture=architecture,
                                          dtype=dtype, name=f"{Path(path).name}@{eval_set}", source=str(path))
            for t in range(len(traj), d.shape[0]):  # resumable
                self.append(traj, d[t], step=t)  # validated with the stored dtype's tolerance
        return traj
