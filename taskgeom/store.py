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

Every write is checked: a short or failed write (a full disk) raises :class:`StoreError` and commits
nothing, and an append refuses a data file shorter than its committed checkpoints (it would otherwise
fill the gap with zeros). Each checkpoint's manifest row holds a BLAKE2b checksum of its bytes, which
:meth:`PredictionStore.verify` (and ``taskgeom store verify PATH``) compares with the data on disk.
Each trajectory can record the resolved configuration that produced it (``config``); creating it
again with a different configuration raises :class:`ConfigMismatchError`. Creation is idempotent and
race-free (the name is looked up and inserted in one write transaction).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PredictionStore", "Trajectory", "EvalSet", "StoreError", "ConfigMismatchError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_sets (
    name TEXT PRIMARY KEY, n INTEGER NOT NULL, c INTEGER NOT NULL, labels BLOB NOT NULL,
    class_names TEXT, extra TEXT);
CREATE TABLE IF NOT EXISTS trajectories (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, eval_set TEXT NOT NULL
    REFERENCES eval_sets(name), task TEXT, method TEXT, seed INTEGER, architecture TEXT,
    dtype TEXT NOT NULL, file TEXT NOT NULL, extra TEXT, created REAL, config TEXT, code TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (
    trajectory INTEGER NOT NULL REFERENCES trajectories(id), idx INTEGER NOT NULL, epoch REAL,
    step INTEGER, accuracy REAL, extra TEXT, created REAL, checksum TEXT, PRIMARY KEY (trajectory, idx));
"""
_TABLES = ("eval_sets", "trajectories", "checkpoints")
#: Columns added after the first release: (table, column, type). Old stores get them (NULL) on open.
_MIGRATIONS = (
    ("trajectories", "config", "TEXT"),
    ("trajectories", "code", "TEXT"),
    ("checkpoints", "checksum", "TEXT"),
)

_DTYPES = {"float16": np.float16, "float32": np.float32}


class StoreError(RuntimeError):
    """A store that cannot be opened, read or written as asked (corrupt, truncated, missing, full disk)."""


class ConfigMismatchError(ValueError):
    """A trajectory exists under this name with a different recorded configuration."""


def _checksum(data: bytes | memoryview) -> str:
    return "blake2b:" + hashlib.blake2b(data, digest_size=16).hexdigest()


def _canonical(obj) -> str:
    """JSON of a config (sorted keys), so that equal configs compare equal whatever their order."""
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config must be JSON-serialisable with finite numbers ({exc})") from exc


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = d
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """``["lr: 0.1 -> 0.2", "epochs: 3 -> 5"]``: the fields (dotted for nested dicts) that differ."""
    a, b = _flatten(old), _flatten(new)
    missing = "<absent>"
    return [
        f"{k}: {json.dumps(a.get(k, missing))} -> {json.dumps(b.get(k, missing))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


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
        keys = row.keys()
        self._config = row["config"] if "config" in keys else None
        self._code = row["code"] if "code" in keys else None

    @property
    def config(self) -> dict | None:
        """The resolved configuration recorded when the trajectory was created (None if none was)."""
        return None if self._config is None else json.loads(self._config)

    @property
    def code(self) -> dict | None:
        """The code provenance recorded when the trajectory was created (None if none was)."""
        return None if self._code is None else json.loads(self._code)

    def __repr__(self) -> str:
        return (
            f"Trajectory({self.name!r}, task={self.task!r}, method={self.method!r}, seed={self.seed}, "
            f"checkpoints={len(self)})"
        )

    def __len__(self) -> int:
        return self.store._count(self.id)

    @property
    def checksums(self) -> list:
        """The committed checkpoints' checksums in order (None for checkpoints written before checksums)."""
        cols = {r[1] for r in self.store._db.execute("PRAGMA table_info(checkpoints)")}
        if "checksum" not in cols:
            return [None] * len(self)
        rows = self.store._db.execute(
            "SELECT checksum FROM checkpoints WHERE trajectory=? ORDER BY idx", (self.id,)
        ).fetchall()
        return [r["checksum"] for r in rows]

    @property
    def checkpoints(self) -> list[dict]:
        """Committed checkpoints in order: idx, epoch, step, accuracy and the free-form fields."""
        rows = self.store._db.execute(
            "SELECT idx, epoch, step, accuracy, extra FROM checkpoints WHERE trajectory=? ORDER BY idx", (self.id,)
        ).fetchall()
        return [
            {
                "idx": r["idx"],
                "epoch": r["epoch"],
                "step": r["step"],
                "accuracy": r["accuracy"],
                **json.loads(r["extra"] or "{}"),
            }
            for r in rows
        ]

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
            raise StoreError(
                f"trajectory {self.name!r}: data file {self.file} has {size} bytes but the manifest's "
                f"{t} checkpoints need {need} (truncated or corrupt)"
            )
        return np.memmap(self.file, dtype=dtype, mode="r", shape=(t, es.n, es.c))

    def read(self, idx: int, verify: bool = True) -> np.ndarray:
        """A copy of checkpoint ``idx`` (N, C); with ``verify`` its bytes are checked against the checksum
        recorded when it was written, so that flipped or zeroed bytes raise StoreError instead of being
        returned. (Checkpoints written before checksums existed are returned unchecked.)"""
        n = len(self)
        if not -n <= idx < n:
            raise IndexError(f"trajectory {self.name!r} has {n} checkpoints, no checkpoint {idx}")
        idx = idx % n
        out = np.array(self.probs[idx])
        if verify:
            keys = {r[1] for r in self.store._db.execute("PRAGMA table_info(checkpoints)")}
            if "checksum" in keys:
                row = self.store._db.execute(
                    "SELECT checksum FROM checkpoints WHERE trajectory=? AND idx=?", (self.id, idx)
                ).fetchone()
                if row is not None and row["checksum"] is not None and _checksum(out.tobytes()) != row["checksum"]:
                    raise StoreError(
                        f"trajectory {self.name!r}: checkpoint {idx}: checksum mismatch (data changed "
                        f"on disk since it was written; run taskgeom store verify {self.store.root})"
                    )
        return out

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.probs)
        return a.astype(dtype) if dtype is not None else a


class PredictionStore:
    """A directory of prediction trajectories (see the module docstring).

    Parameters
    ----------
    path : the store's directory.
    create : make the directory and an empty manifest when there is none (or the manifest is an empty
        0-byte file). Without it, a missing, empty or foreign ``manifest.sqlite`` is an error.
    readonly : open without writing anything (SQLite ``mode=ro``; appends raise :class:`StoreError`).
        By default a store is opened read-only exactly when its directory or manifest is not writable.

    Examples
    --------
    >>> store = PredictionStore("preds", create=True)            # doctest: +SKIP
    >>> store.add_eval_set("digits-test", labels)                   # doctest: +SKIP
    >>> traj = store.create_trajectory("digits-test", task="0-4", method="supervised", seed=0)  # doctest: +SKIP
    >>> store.append(traj, probs, epoch=1, step=100, accuracy=0.93)  # doctest: +SKIP
    >>> [t.probs.shape for t in store.select(task="0-4")]          # doctest: +SKIP
    """

    def __init__(self, path, create: bool = False, readonly: bool | None = None):
        self.root = Path(path)
        manifest = self.root / "manifest.sqlite"
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is not a directory (a store is a directory with manifest.sqlite)")
        if manifest.exists() and not manifest.is_file():
            raise StoreError(f"{manifest} is not a file")
        if readonly is None:
            readonly = manifest.exists() and not (os.access(self.root, os.W_OK) and os.access(manifest, os.W_OK))
        self.readonly = bool(readonly)
        empty = manifest.exists() and manifest.stat().st_size == 0
        if not manifest.exists() or empty:
            if not create or self.readonly:
                what = "an empty (0-byte) manifest.sqlite" if empty else "no manifest.sqlite"
                hint = "" if self.readonly else "; pass create=True to make a new store"
                raise StoreError(f"{self.root} is not a taskgeom store ({what}){hint}")
            try:
                (self.root / "data").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store {self.root}: {_one_line(exc)}") from exc
        self._db = None
        try:
            self._db = self._connect(manifest)
            self._check_tables(manifest, create)
        except sqlite3.Error as exc:
            self._close_quietly()
            raise StoreError(f"{manifest}: not a readable manifest ({_one_line(exc)})") from exc
        except BaseException:
            self._close_quietly()
            raise
        self._eval_cache: dict[str, EvalSet] = {}

    def _connect(self, manifest: Path) -> sqlite3.Connection:
        if self.readonly:
            uri = f"{manifest.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=60.0, isolation_level=None)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                # a WAL store whose -shm cannot be created here (read-only directory): nothing can write
                # it through this directory either, so read it as an immutable file
                db.close()
                db = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=60.0, isolation_level=None)
        else:
            db = sqlite3.connect(manifest, timeout=60.0, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def _close_quietly(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _check_tables(self, manifest: Path, create: bool) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ours = set(_TABLES)
        if tables & ours != ours:
            if tables - {"sqlite_sequence"}:
                raise StoreError(
                    f"{manifest} is not a taskgeom manifest (it has the tables {sorted(tables)}, not {sorted(ours)})"
                )
            if not create or self.readonly:
                raise StoreError(
                    f"{self.root} is not a taskgeom store ({manifest} is an empty database); "
                    "pass create=True to make a new store"
                )
        if self.readonly:
            return
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            self._retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
        db.execute("PRAGMA synchronous=FULL")
        if tables & ours != ours:

            def init():
                with self._write():
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            db.execute(stmt)

            self._retry_locked(init)
        if self._missing_columns():

            def migrate():
                with self._write():
                    for table, col, typ in self._missing_columns():
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")

            self._retry_locked(migrate)

    def _missing_columns(self):
        have = {}
        for table in {t for t, _, _ in _MIGRATIONS}:
            have[table] = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
        return [(t, c, typ) for t, c, typ in _MIGRATIONS if c not in have[t]]

    @staticmethod
    def _retry_locked(fn, seconds: float = 60.0):
        """Run ``fn``, retrying while another connection holds a lock SQLite does not wait for."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        self._close_quietly()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise StoreError(f"{self.root} is open read-only; cannot {what}")

    # ---- evaluation sets -------------------------------------------------------------------------
    @staticmethod
    def _check_labels(lab: np.ndarray, c: int | None, where: str = "labels") -> int:
        if lab.ndim != 1 or lab.dtype.kind not in "iu":
            raise ValueError(f"{where} must be a 1-d integer array, got shape {lab.shape} dtype {lab.dtype}")
        if lab.size == 0:
            raise ValueError(f"{where} is empty: an evaluation set needs at least one sample")
        if int(lab.min()) < 0:
            i = int(np.argmax(lab < 0))
            raise ValueError(f"{where}: sample {i}: label {int(lab[i])} is negative")
        c = int(lab.max()) + 1 if c is None else int(c)
        if c < 1:
            raise ValueError(f"the number of classes must be >= 1, got {c}")
        if int(lab.max()) >= c:
            i = int(np.argmax(lab >= c))
            raise ValueError(f"{where}: sample {i}: label {int(lab[i])} is outside [0, {c})")
        return c

    def add_eval_set(self, name: str, labels, class_names=None, c: int | None = None, **extra) -> EvalSet:
        """Register an evaluation set (idempotent when the labels are the same). Labels must lie in
        ``[0, c)``; ``c`` defaults to ``max(labels) + 1``."""
        lab = np.asarray(labels)
        c = self._check_labels(lab, c)
        if class_names is not None and len(class_names) != c:
            raise ValueError(f"{len(class_names)} class names for {c} classes")
        try:
            extra_json = json.dumps(extra, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"evaluation set {name!r}: extra fields must be JSON-serialisable ({exc})") from exc
        if self.readonly:  # registering an identical set is a no-op, which reading allows
            row = self._db.execute("SELECT c, labels FROM eval_sets WHERE name=?", (name,)).fetchone()
            if row is None or row["c"] != c or not np.array_equal(self._decode_labels(name, row["labels"]), lab):
                self._writable(f"add evaluation set {name!r}")
            return self.eval_set(name)
        with self._write():
            self._add_eval_set_locked(name, lab, c, class_names, extra_json)
        return self.eval_set(name)

    def _add_eval_set_locked(self, name, lab, c, class_names, extra_json) -> None:
        row = self._db.execute("SELECT n, c, labels FROM eval_sets WHERE name=?", (name,)).fetchone()
        if row is not None:
            old = self._decode_labels(name, row["labels"])
            if row["c"] != c or not np.array_equal(old, lab):
                raise ValueError(
                    f"evaluation set {name!r} already exists with different labels"
                    + (f" ({row['c']} classes, not {c})" if row["c"] != c else "")
                )
            return
        buf = io.BytesIO()
        np.save(buf, lab.astype(np.int64), allow_pickle=False)
        self._db.execute(
            "INSERT INTO eval_sets VALUES (?, ?, ?, ?, ?, ?)",
            (
                name,
                int(lab.size),
                c,
                buf.getvalue(),
                None if class_names is None else json.dumps(list(class_names)),
                extra_json,
            ),
        )

    @staticmethod
    def _decode_labels(name, blob) -> np.ndarray:
        try:
            return np.load(io.BytesIO(blob), allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise StoreError(f"evaluation set {name!r}: corrupt labels ({_one_line(exc)})") from exc

    def eval_set(self, name: str) -> EvalSet:
        if name not in self._eval_cache:
            row = self._db.execute("SELECT * FROM eval_sets WHERE name=?", (name,)).fetchone()
            if row is None:
                raise KeyError(f"no evaluation set {name!r} in {self.root}")
            labels = self._decode_labels(name, row["labels"])
            self._eval_cache[name] = EvalSet(
                name,
                row["n"],
                row["c"],
                labels,
                json.loads(row["class_names"]) if row["class_names"] else None,
                json.loads(row["extra"] or "{}"),
            )
        return self._eval_cache[name]

    def eval_sets(self) -> list[str]:
        return [r["name"] for r in self._db.execute("SELECT name FROM eval_sets ORDER BY name")]

    # ---- trajectories ----------------------------------------------------------------------------
    def create_trajectory(
        self,
        eval_set: str,
        task: str | None = None,
        method: str | None = None,
        seed: int | None = None,
        architecture: str | None = None,
        dtype: str = "float16",
        name: str | None = None,
        exist_ok: bool = True,
        config: dict | None = None,
        code: dict | None = None,
        **extra,
    ) -> Trajectory:
        """Create (or, with ``exist_ok``, return) a trajectory recorded on ``eval_set``.

        ``config`` (the resolved settings that produce the trajectory) and ``code`` (its provenance) are
        stored as JSON. If a trajectory of this name exists, was created with a config and ``config`` is
        given and differs, :class:`ConfigMismatchError` names the differing fields: resuming it would
        mix two runs. The look-up and the insert are one write transaction, so concurrent creators of
        one name all get the same trajectory."""
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        cfg_json = None if config is None else _canonical(config)
        code_json = None if code is None else _canonical(code)
        try:
            extra_json = json.dumps(extra, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"extra trajectory fields must be JSON-serialisable ({exc})") from exc
        self.eval_set(eval_set)
        name = name or f"{task}/{method}/{architecture}/seed{seed}@{eval_set}"
        row = self._db.execute("SELECT * FROM trajectories WHERE name=?", (name,)).fetchone()
        if row is not None or self.readonly:
            if row is None:
                self._writable(f"create trajectory {name!r}")
            self._check_existing(row, name, exist_ok, cfg_json)
            return Trajectory(self, row)
        with self._write():
            tid = self._create_locked(
                eval_set, task, method, seed, architecture, dtype, name, exist_ok, cfg_json, code_json, extra_json
            )
        return self.trajectory(tid)

    def _check_existing(self, row, name, exist_ok, cfg_json) -> None:
        if not exist_ok:
            raise ValueError(f"trajectory {name!r} exists")
        old = row["config"] if "config" in row.keys() else None
        if old is not None and cfg_json is not None and old != cfg_json:
            diff = config_diff(json.loads(old), json.loads(cfg_json))
            raise ConfigMismatchError(
                f"trajectory {name!r} was recorded with different settings ({'; '.join(diff)}); rerun with the "
                "original settings to resume it, or start a separate trajectory (another name; new=True in "
                "taskgeom.train.train, --new-trajectory on the command line)"
            )

    def _create_locked(
        self, eval_set, task, method, seed, architecture, dtype, name, exist_ok, cfg_json, code_json, extra_json
    ) -> int:
        row = self._db.execute("SELECT * FROM trajectories WHERE name=?", (name,)).fetchone()
        if row is not None:  # created by another process since we looked
            self._check_existing(row, name, exist_ok, cfg_json)
            return int(row["id"])
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
        cur = self._db.execute(
            "INSERT INTO trajectories (name, eval_set, task, method, seed, architecture, dtype, file, extra, "
            "created, config, code) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?)",
            (name, eval_set, task, method, seed, architecture, dtype, extra_json, time.time(), cfg_json, code_json),
        )
        tid = cur.lastrowid
        rel = f"data/{tid:06d}_{safe}.bin"
        self._db.execute("UPDATE trajectories SET file=? WHERE id=?", (rel, tid))
        return tid

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
        store = self

        class _Txn:
            def __enter__(self_inner):
                store._retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))

            def __exit__(self_inner, exc_type, exc, tb):
                if exc_type is not None:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    return False
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as err:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise StoreError(
                        f"{store.root}: could not commit to the manifest ({_one_line(err)}); nothing was recorded"
                    ) from err
                return False

        return _Txn()

    def _write_data(self, traj: Trajectory, blobs, first: int, nbytes: int) -> list[str]:
        """Write checkpoints ``first, first+1, ...`` (an iterable of ``nbytes``-long byte strings) of
        ``traj`` and fsync, checking every write; returns their checksums. On any failure the file is cut
        back to its committed length and StoreError is raised."""
        offset = first * nbytes
        try:
            fd = os.open(traj.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"trajectory {traj.name!r}: cannot open data file {traj.file}: {_one_line(exc)}") from exc
        sums = []
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise StoreError(
                    f"trajectory {traj.name!r}: data file {traj.file} has {size} bytes but its {first} committed "
                    f"checkpoints need {offset} (truncated or corrupt); refusing to append (it would fill the gap "
                    "with zeros): restore the file or start a new trajectory"
                )
            try:
                pos = offset
                for blob in blobs:
                    if len(blob) != nbytes:
                        raise ValueError(f"checkpoint of {len(blob)} bytes, expected {nbytes}")
                    sums.append(_checksum(blob))
                    view = memoryview(blob)
                    while view:
                        n = os.pwrite(fd, view, pos)
                        if n <= 0:
                            raise OSError(28, f"short write ({n} of {len(view)} bytes)")
                        pos += n
                        view = view[n:]
                os.fsync(fd)
                size = os.fstat(fd).st_size
                if size < pos:
                    raise OSError(5, f"data file has {size} bytes after writing up to byte {pos}")
            except BaseException as exc:
                try:  # leave the committed length (and no orphan bytes) behind
                    os.ftruncate(fd, offset)
                except OSError:
                    pass
                if isinstance(exc, OSError):
                    raise StoreError(
                        f"trajectory {traj.name!r}: could not write checkpoint {first + len(sums) - 1} "
                        f"to {traj.file} ({_one_line(exc)}); nothing was committed"
                    ) from exc
                raise
        finally:
            os.close(fd)
        return sums

    def append(
        self,
        trajectory,
        probs,
        epoch: float | None = None,
        step: int | None = None,
        accuracy: float | None = None,
        validate: bool = True,
        **extra,
    ) -> int:
        """Append one checkpoint's probabilities (N, C) to a trajectory; returns its index.

        The data is written (every write checked) and fsynced first, then the manifest row with the
        data's checksum is committed (under SQLite's write lock, so concurrent writers never
        interleave). A failed write raises :class:`StoreError` and lists nothing."""
        self._writable("append")
        traj = trajectory if isinstance(trajectory, Trajectory) else self.trajectory(trajectory)
        es = self.eval_set(traj.eval_set)
        p = np.asarray(probs)
        if p.shape != (es.n, es.c):
            raise ValueError(f"probs must have shape ({es.n}, {es.c}) for evaluation set {es.name!r}, got {p.shape}")
        if validate:
            from ._validate import as_tensor, check_probabilities

            check_probabilities(as_tensor(p, "probs")[0], "probs")
        data = np.ascontiguousarray(p, dtype=_DTYPES[traj.dtype]).tobytes()
        try:
            extra_json = json.dumps(extra, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"extra checkpoint fields must be JSON-serialisable ({exc})") from exc
        with self._write():
            idx = self._count(traj.id)
            (checksum,) = self._write_data(traj, [data], idx, len(data))
            self._db.execute(
                "INSERT INTO checkpoints (trajectory, idx, epoch, step, accuracy, extra, created, "
                "checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (traj.id, idx, epoch, step, accuracy, extra_json, time.time(), checksum),
            )
        return idx

    def extend(
        self, trajectory, probs, epochs=None, steps=None, accuracies=None, extras=None, validate: bool = True
    ) -> list:
        """Append many checkpoints ``(T, N, C)`` at once (one write, one fsync, one transaction): all of them
        or, on any failure, none. ``epochs``, ``steps``, ``accuracies``, ``extras`` (dicts of free-form
        fields): optional sequences of length T. Returns their indices."""
        self._writable("extend")
        traj = trajectory if isinstance(trajectory, Trajectory) else self.trajectory(trajectory)
        es = self.eval_set(traj.eval_set)
        p = np.asarray(probs)
        if p.ndim != 3 or p.shape[1:] != (es.n, es.c):
            raise ValueError(f"probs must have shape (T, {es.n}, {es.c}) for evaluation set {es.name!r}, got {p.shape}")
        t = p.shape[0]
        cols = {}
        for name, values in (("epoch", epochs), ("step", steps), ("accuracy", accuracies), ("extra", extras)):
            if values is not None and len(values) != t:
                raise ValueError(f"{name}s: {len(values)} values for {t} checkpoints")
            cols[name] = [None] * t if values is None else list(values)
        if validate:
            from ._validate import as_tensor, check_probabilities

            check_probabilities(as_tensor(p, "probs")[0], "probs")
        data = np.ascontiguousarray(p, dtype=_DTYPES[traj.dtype])
        with self._write():
            first = self._count(traj.id)
            sums = self._write_data(traj, (data[k].tobytes() for k in range(t)), first, data[0].nbytes)
            now = time.time()
            self._db.executemany(
                "INSERT INTO checkpoints (trajectory, idx, epoch, step, accuracy, extra, created, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        traj.id,
                        first + k,
                        cols["epoch"][k],
                        cols["step"][k],
                        cols["accuracy"][k],
                        json.dumps(cols["extra"][k] or {}, allow_nan=False),
                        now,
                        sums[k],
                    )
                    for k in range(t)
                ],
            )
        return list(range(first, first + t))

    # ---- integrity -------------------------------------------------------------------------------
    def verify(self, trajectories=None) -> list[str]:
        """Check the manifest and every committed checkpoint's bytes against its checksum.

        Returns one line per problem (an empty list when the store is intact): a failed SQLite
        integrity check, a missing or truncated data file, a checkpoint whose bytes changed.
        Checkpoints written before checksums existed are counted in :attr:`unchecked`."""
        problems = []
        for (msg,) in self._db.execute("PRAGMA quick_check").fetchall():
            if msg != "ok":
                problems.append(f"manifest: {msg}")
        self.unchecked = 0
        self.checked = 0
        has_sum = "checksum" in {r[1] for r in self._db.execute("PRAGMA table_info(checkpoints)")}
        sum_col = "checksum" if has_sum else "NULL"  # an old store opened read-only: not migrated
        trajs = (
            self.select()
            if trajectories is None
            else [t if isinstance(t, Trajectory) else self.trajectory(t) for t in trajectories]
        )
        for traj in trajs:
            try:
                es = self.eval_set(traj.eval_set)
            except (KeyError, StoreError) as exc:
                problems.append(f"trajectory {traj.name!r}: {_one_line(exc)}")
                continue
            rows = self._db.execute(
                f"SELECT idx, {sum_col} AS checksum FROM checkpoints WHERE trajectory=? ORDER BY idx", (traj.id,)
            ).fetchall()
            if [r["idx"] for r in rows] != list(range(len(rows))):
                problems.append(f"trajectory {traj.name!r}: checkpoint indices are not 0..{len(rows) - 1}")
            if not rows:
                continue
            nbytes = es.n * es.c * np.dtype(_DTYPES[traj.dtype]).itemsize
            if not traj.file.is_file():
                problems.append(
                    f"trajectory {traj.name!r}: data file {traj.file} is missing ({len(rows)} checkpoints lost)"
                )
                continue
            size = traj.file.stat().st_size
            with open(traj.file, "rb") as f:
                for r in rows:
                    start = r["idx"] * nbytes
                    if start + nbytes > size:
                        problems.append(
                            f"trajectory {traj.name!r}: checkpoint {r['idx']}: data file {traj.file} "
                            f"is truncated ({size} bytes, need {start + nbytes})"
                        )
                        break
                    if r["checksum"] is None:
                        self.unchecked += 1
                        continue
                    f.seek(start)
                    got = _checksum(f.read(nbytes))
                    self.checked += 1
                    if got != r["checksum"]:
                        problems.append(
                            f"trajectory {traj.name!r}: checkpoint {r['idx']}: checksum mismatch "
                            f"(data changed on disk since it was written)"
                        )
        return problems

    # ---- import ----------------------------------------------------------------------------------
    def import_h5(
        self,
        path,
        labels,
        eval_set: str,
        task: str | None = None,
        method: str | None = None,
        seed: int | None = None,
        architecture: str | None = None,
        dataset: str = "data",
        dtype: str = "float16",
    ) -> Trajectory:
        """Import a trajectory released by the paper's authors: an HDF5 file with dataset ``data``
        [T, N, C] (float16, LZ4-compressed through hdf5plugin) and its labels (an array or a ``.npy``).

        Every checkpoint is validated before anything is written (an error names the checkpoint and
        sample); the import is then one transaction: all of it or nothing. Importing again resumes."""
        try:
            import h5py
        except ImportError as exc:
            raise RuntimeError("import_h5 needs the 'h5' extra: pip install 'taskgeom[h5]'") from exc
        try:
            import hdf5plugin  # noqa: F401  (registers the LZ4 filter)
        except ImportError:
            pass
        from ._validate import as_tensor, check_probabilities

        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self._writable("import")
        lab = np.load(labels, allow_pickle=False) if isinstance(labels, (str, os.PathLike)) else np.asarray(labels)
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise StoreError(f"{path}: no dataset {dataset!r} (found {list(f)})")
            d = f[dataset]
            if d.ndim != 3 or d.shape[1] != lab.size or d.shape[0] < 1 or d.shape[2] < 1:
                raise StoreError(
                    f"{path}: dataset {dataset!r} has shape {d.shape}, expected (T, {lab.size}, C) with T, C >= 1"
                )
            c = self._check_labels(lab, int(d.shape[2]), f"{path}: labels")
            for t in range(d.shape[0]):  # validate everything first: nothing is written for a bad file
                try:
                    check_probabilities(as_tensor(np.asarray(d[t]), "probs")[0], "probs")
                except ValueError as exc:
                    raise ValueError(f"{path}: checkpoint {t}: {exc}; nothing was imported") from exc
            name = f"{Path(path).name}@{eval_set}"
            with self._write():
                self._add_eval_set_locked(eval_set, lab, c, None, "{}")
                tid = self._create_locked(
                    eval_set,
                    task,
                    method,
                    seed,
                    architecture,
                    dtype,
                    name,
                    True,
                    None,
                    None,
                    json.dumps({"source": str(path)}),
                )
                traj = Trajectory(self, self._db.execute("SELECT * FROM trajectories WHERE id=?", (tid,)).fetchone())
                have = self._count(tid)
                nbytes = lab.size * c * np.dtype(_DTYPES[traj.dtype]).itemsize
                blobs = (
                    np.ascontiguousarray(d[t], dtype=_DTYPES[traj.dtype]).tobytes() for t in range(have, d.shape[0])
                )  # streamed: one checkpoint in memory at a time
                sums = self._write_data(traj, blobs, have, nbytes) if have < d.shape[0] else []
                now = time.time()
                self._db.executemany(
                    "INSERT INTO checkpoints (trajectory, idx, epoch, step, accuracy, extra, created, checksum) "
                    "VALUES (?, ?, NULL, ?, NULL, '{}', ?, ?)",
                    [(tid, have + k, have + k, now, s) for k, s in enumerate(sums)],
                )
        return self.trajectory(tid)
