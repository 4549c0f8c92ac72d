"""PredictionStore and its lazy Trajectory handles: the one public object in front of the manifest
(:mod:`.manifest`), the segments (:mod:`.segments`) and the importers (:mod:`.importers`)."""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._configjson import canonical, config_diff
from . import segments
from .errors import ConfigMismatchError, StoreError, one_line
from .manifest import Manifest, wal_holds_data

__all__ = ["PredictionStore", "Trajectory", "EvalSet"]

_CHECKPOINT_COLUMNS = "trajectory, idx, epoch, step, accuracy, extra, created, checksum"


def _json(obj, what: str) -> str:
    try:
        return json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be JSON-serialisable ({exc})") from exc


@dataclass(frozen=True)
class EvalSet:
    """A fixed evaluation set: N samples, C classes, their labels and class names."""

    name: str
    n: int
    c: int
    labels: np.ndarray
    class_names: list | None
    extra: dict


def trajectory_name(task, method, architecture, seed, eval_set: str) -> str:
    """The name a trajectory gets by default (:meth:`PredictionStore.create_trajectory`, and so every run
    :func:`taskgeom.train.train` records): ``task/method/architecture/seed<seed>@eval_set``."""
    return f"{task}/{method}/{architecture}/seed{seed}@{eval_set}"


class Trajectory:
    """A lazy handle on one trajectory: metadata now, probabilities (a read-only memory map) on use.
    ``len(t)`` checkpoints; ``t[k]`` checkpoint ``k``'s probabilities (N, C), checked; ``t.probs`` all of them
    (T, N, C); ``t.checkpoints`` what was recorded with each (epoch, step, accuracy, ...)."""

    def __init__(self, store: "PredictionStore", row):
        self.store = store
        self.id = int(row["id"])
        self.name = row["name"]
        self.eval_set = row["eval_set"]
        self.task = row["task"]
        self.method = row["method"]
        self.seed = row["seed"]
        self.architecture = row["architecture"]
        self.dtype = row["dtype"]
        if self.dtype not in segments.DTYPES:
            raise StoreError(
                f"trajectory {self.name!r}: the manifest gives dtype {self.dtype!r}, not one of "
                f"{sorted(segments.DTYPES)} (changed outside taskgeom); run taskgeom store verify {store.root}"
            )
        self._rel = row["file"]
        self.extra = json.loads(row["extra"] or "{}")
        self._config = row["config"] if store._manifest.has_config else None
        self._code = row["code"] if store._manifest.has_config else None

    @property
    def file(self) -> Path:
        """The segment holding the probabilities (checked to lie in the store's ``data/`` folder)."""
        return segments.segment_path(self.store.root, self._rel, self.name)

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
        return self.store._manifest.count(self.id, self.name)

    @property
    def checksums(self) -> list:
        """The committed checkpoints' checksums in order (None for checkpoints written before checksums)."""
        if not self.store._manifest.has_checksums:
            return [None] * len(self)
        len(self)  # checks the indices
        rows = self.store._manifest.rows("SELECT checksum FROM checkpoints WHERE trajectory=? ORDER BY idx", (self.id,))
        return [r["checksum"] for r in rows]

    @property
    def checkpoints(self) -> list[dict]:
        """Committed checkpoints in order: idx, epoch, step, accuracy and the free-form fields."""
        len(self)
        rows = self.store._manifest.rows(
            "SELECT idx, epoch, step, accuracy, extra FROM checkpoints WHERE trajectory=? ORDER BY idx", (self.id,)
        )
        return [
            {"idx": r["idx"], "epoch": r["epoch"], "step": r["step"], "accuracy": r["accuracy"]}
            | json.loads(r["extra"] or "{}")
            for r in rows
        ]

    @property
    def labels(self) -> np.ndarray:
        return self.store.eval_set(self.eval_set).labels

    @property
    def probs(self) -> np.ndarray:
        """Read-only memory map (T, N, C) of the committed checkpoints."""
        es = self.store.eval_set(self.eval_set)
        return segments.memmap(self.file, self.dtype, (len(self), es.n, es.c), self.name)

    def read(self, idx: int, verify: bool = True) -> np.ndarray:
        """A copy of checkpoint ``idx`` (N, C); with ``verify`` its bytes are checked against the checksum
        recorded when it was written, so that flipped or zeroed bytes raise StoreError instead of being
        returned. (Checkpoints written before checksums existed are returned unchecked.)"""
        n = len(self)
        if isinstance(idx, bool) or not isinstance(idx, (int, np.integer)):
            raise TypeError(f"checkpoint index must be an integer, got {idx!r}")
        if not -n <= idx < n:
            raise IndexError(f"trajectory {self.name!r} has {n} checkpoints, no checkpoint {idx}")
        idx = int(idx) % n
        out = np.array(self.probs[idx])
        if verify and self.store._manifest.has_checksums:
            row = self.store._manifest.row(
                "SELECT checksum FROM checkpoints WHERE trajectory=? AND idx=?", (self.id, idx)
            )
            if row is not None and row["checksum"] is not None and segments.checksum(out.tobytes()) != row["checksum"]:
                raise StoreError(
                    f"trajectory {self.name!r}: checkpoint {idx}: checksum mismatch (data changed "
                    f"on disk since it was written; run taskgeom store verify {self.store.root})"
                )
        return out

    def __getitem__(self, idx):
        """``t[k]``: checkpoint ``k``'s probabilities (N, C), a copy checked against its checksum (:meth:`read`);
        ``t[a:b]``: those checkpoints (T', N, C), a view of the memory map (:attr:`probs`)."""
        if isinstance(idx, slice):
            return self.probs[idx]
        return self.read(idx)

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.probs)
        return a.astype(dtype) if dtype is not None else a


class PredictionStore:
    """A directory of prediction trajectories::

        store/
          manifest.sqlite          evaluation sets, trajectories, checkpoints (WAL mode; .manifest)
          data/<trajectory>.bin    raw (T, N, C) float16 or float32, checkpoint after checkpoint (.segments)

    Appends are crash-safe: a checkpoint's probabilities are written and fsynced *before* its manifest
    row is committed, and the row is what makes it visible. A writer killed at any moment leaves at most
    orphan bytes past the last committed checkpoint, which the next append overwrites; earlier rows and
    their data are never touched. Readers (other processes included) can read while a writer appends, and
    a read shows the last committed state, never an older one. Nothing is pickled: labels are stored as
    ``.npy`` bytes, metadata as JSON. Every write is checked: a short or failed write (a full disk) raises
    :class:`StoreError` and commits nothing. Each checkpoint's row holds a BLAKE2b checksum of its bytes,
    which :meth:`verify` (and ``taskgeom store verify PATH``) compares with the data on disk. Each
    trajectory can record the resolved configuration that produced it (``config``); creating it again
    with a different configuration raises :class:`ConfigMismatchError`. Creation is idempotent and
    race-free (the name is looked up and inserted in one write transaction).

    Parameters
    ----------
    path : the store's directory.
    create : make the directory and an empty manifest when there is none (or the manifest is an empty
        0-byte file). Without it, a missing, empty or foreign ``manifest.sqlite`` is an error.
    readonly : open without writing anything (appends raise :class:`StoreError`). By default a store is
        opened read-only exactly when its directory or manifest is not writable.

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
        empty = manifest.exists() and manifest.stat().st_size == 0 and not wal_holds_data(manifest)
        if not manifest.exists() or empty:
            if not create or self.readonly:
                what = "an empty (0-byte) manifest.sqlite" if empty else "no manifest.sqlite"
                hint = "" if self.readonly else "; pass create=True to make a new store"
                if (self.root / "store" / "manifest.sqlite").is_file():  # an output folder holding its store
                    hint = f"; the store is {self.root / 'store'}"
                raise StoreError(f"{self.root} is not a taskgeom store ({what}){hint}")
            try:
                (self.root / "data").mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store {self.root}: {one_line(exc)}") from exc
        self._manifest = Manifest(manifest, self.readonly, create, self.root)
        self._eval_cache: dict[str, EvalSet] = {}

    def close(self) -> None:
        self._manifest.close()

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
        extra_json = _json(extra, f"evaluation set {name!r}: extra fields")
        if self.readonly:  # registering an identical set is a no-op, which reading allows
            row = self._manifest.row("SELECT c, labels FROM eval_sets WHERE name=?", (name,))
            if row is None or row["c"] != c or not np.array_equal(self._decode_labels(name, row["labels"]), lab):
                self._writable(f"add evaluation set {name!r}")
            return self.eval_set(name)
        with self._manifest.write():
            self._add_eval_set_locked(name, lab, c, class_names, extra_json)
        return self.eval_set(name)

    def _add_eval_set_locked(self, name, lab, c, class_names, extra_json) -> None:
        row = self._manifest.row("SELECT n, c, labels FROM eval_sets WHERE name=?", (name,))
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
        names = None if class_names is None else json.dumps(list(class_names))
        self._manifest.execute(
            "INSERT INTO eval_sets VALUES (?, ?, ?, ?, ?, ?)",
            (name, int(lab.size), c, buf.getvalue(), names, extra_json),
        )

    @staticmethod
    def _decode_labels(name, blob) -> np.ndarray:
        try:
            return np.load(io.BytesIO(blob), allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise StoreError(f"evaluation set {name!r}: corrupt labels ({one_line(exc)})") from exc

    def eval_set(self, name: str) -> EvalSet:
        if name not in self._eval_cache:
            row = self._manifest.row("SELECT * FROM eval_sets WHERE name=?", (name,))
            if row is None:
                raise KeyError(f"no evaluation set {name!r} in {self.root}")
            labels = self._decode_labels(name, row["labels"])
            if labels.shape != (row["n"],):
                raise StoreError(f"evaluation set {name!r}: {labels.size} labels for n = {row['n']} (corrupt manifest)")
            names = json.loads(row["class_names"]) if row["class_names"] else None
            self._eval_cache[name] = EvalSet(name, row["n"], row["c"], labels, names, json.loads(row["extra"] or "{}"))
        return self._eval_cache[name]

    def eval_sets(self) -> list[str]:
        return [r["name"] for r in self._manifest.rows("SELECT name FROM eval_sets ORDER BY name")]

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
        if dtype not in segments.DTYPES:
            raise ValueError(f"dtype must be one of {sorted(segments.DTYPES)}, got {dtype!r}")
        cfg_json = None if config is None else canonical(config)
        code_json = None if code is None else canonical(code)
        extra_json = _json(extra, "extra trajectory fields")
        self.eval_set(eval_set)
        name = name or trajectory_name(task, method, architecture, seed, eval_set)
        row = self._manifest.row("SELECT * FROM trajectories WHERE name=?", (name,))
        if row is not None or self.readonly:
            if row is None:
                self._writable(f"create trajectory {name!r}")
            self._check_existing(row, name, exist_ok, cfg_json)
            return Trajectory(self, row)
        with self._manifest.write():
            tid = self._create_locked(
                eval_set, task, method, seed, architecture, dtype, name, exist_ok, cfg_json, code_json, extra_json
            )
        return self.trajectory(tid)

    def _check_existing(self, row, name, exist_ok, cfg_json) -> None:
        if not exist_ok:
            raise ValueError(f"trajectory {name!r} exists")
        old = row["config"] if self._manifest.has_config else None
        if old is not None and cfg_json is not None and old != cfg_json:
            diff = config_diff(json.loads(old), json.loads(cfg_json))
            raise ConfigMismatchError(
                f"trajectory {name!r} was recorded with different settings ({'; '.join(diff)}); rerun with the "
                "original settings to resume it, or start a separate trajectory: another name (name= of "
                "taskgeom.Recorder or create_trajectory; new=True in taskgeom.train.train, --new-trajectory on the "
                "command line)"
            )

    def _create_locked(
        self, eval_set, task, method, seed, architecture, dtype, name, exist_ok, cfg_json, code_json, extra_json
    ) -> int:
        row = self._manifest.row("SELECT * FROM trajectories WHERE name=?", (name,))
        if row is not None:  # created by another process since we looked
            self._check_existing(row, name, exist_ok, cfg_json)
            return int(row["id"])
        cur = self._manifest.execute(
            "INSERT INTO trajectories (name, eval_set, task, method, seed, architecture, dtype, file, extra, "
            "created, config, code) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?)",
            (name, eval_set, task, method, seed, architecture, dtype, extra_json, time.time(), cfg_json, code_json),
        )
        tid = cur.lastrowid
        self._manifest.execute("UPDATE trajectories SET file=? WHERE id=?", (segments.segment_name(tid, name), tid))
        return tid

    def trajectory(self, key) -> Trajectory:
        """A trajectory by id or name."""
        col = "id" if isinstance(key, (int, np.integer)) and not isinstance(key, bool) else "name"
        row = self._manifest.row(f"SELECT * FROM trajectories WHERE {col}=?", (key,))
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
        return [Trajectory(self, r) for r in self._manifest.rows(sql, args)]

    # ---- appends ---------------------------------------------------------------------------------
    def _handle(self, trajectory) -> Trajectory:
        return trajectory if isinstance(trajectory, Trajectory) else self.trajectory(trajectory)

    def _probabilities(self, probs, shape: tuple, es: EvalSet, validate: bool) -> np.ndarray:
        p = np.asarray(probs)
        if p.shape[-2:] != shape[-2:] or p.ndim != len(shape):
            want = ", ".join(str(s) for s in shape)
            raise ValueError(f"probs must have shape ({want}) for evaluation set {es.name!r}, got {p.shape}")
        if validate:
            from .._validate import as_tensor, check_probabilities

            check_probabilities(as_tensor(p, "probs")[0], "probs")
        return p

    def commit_checkpoints(self, traj: Trajectory, blobs, nbytes: int, rows, first: int | None = None) -> list[int]:
        """Write checkpoints (byte strings of ``nbytes``) after the committed ones, then commit their rows
        (``(epoch, step, accuracy, extra_json)`` each), all in one write transaction: all of them or none.
        ``first``: the index the caller expects the first to get (checked under the lock). For the
        importers; :meth:`append` and :meth:`extend` are the public way in."""
        with self._manifest.write():
            have = self._manifest.count(traj.id, traj.name)
            if first is not None and first != have:
                raise StoreError(
                    f"trajectory {traj.name!r}: another writer appended while this one prepared checkpoint "
                    f"{first}; nothing was recorded"
                )
            sums = segments.write_checkpoints(traj.file, blobs, have, nbytes, traj.name)
            now = time.time()
            rows = list(rows)
            if len(rows) != len(sums):
                raise ValueError(f"{len(rows)} checkpoint rows for {len(sums)} checkpoints")
            self._manifest.executemany(
                f"INSERT INTO checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(traj.id, have + k, *row, now, sums[k]) for k, row in enumerate(rows)],
            )
        return list(range(have, have + len(sums)))

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
        traj = self._handle(trajectory)
        es = self.eval_set(traj.eval_set)
        p = self._probabilities(probs, (es.n, es.c), es, validate)
        data = np.ascontiguousarray(p, dtype=segments.DTYPES[traj.dtype]).tobytes()
        row = (epoch, step, accuracy, _json(extra, "extra checkpoint fields"))
        return self.commit_checkpoints(traj, [data], len(data), [row])[0]

    def extend(
        self, trajectory, probs, epochs=None, steps=None, accuracies=None, extras=None, validate: bool = True
    ) -> list:
        """Append many checkpoints ``(T, N, C)`` at once (one write, one fsync, one transaction): all of them
        or, on any failure, none. ``epochs``, ``steps``, ``accuracies``, ``extras`` (dicts of free-form
        fields): optional sequences of length T. Returns their indices."""
        self._writable("extend")
        traj = self._handle(trajectory)
        es = self.eval_set(traj.eval_set)
        p = self._probabilities(probs, ("T", es.n, es.c), es, validate)
        t = p.shape[0]
        cols = []
        for what, values in (("epoch", epochs), ("step", steps), ("accuracy", accuracies), ("extra", extras)):
            if values is not None and len(values) != t:
                raise ValueError(f"{what}s: {len(values)} values for {t} checkpoints")
            cols.append([None] * t if values is None else list(values))
        rows = [(e, s, a, _json(x or {}, "extra checkpoint fields")) for e, s, a, x in zip(*cols)]
        data = np.ascontiguousarray(p, dtype=segments.DTYPES[traj.dtype])
        if t == 0:
            return []
        return self.commit_checkpoints(traj, (data[k].tobytes() for k in range(t)), data[0].nbytes, rows)

    # ---- integrity -------------------------------------------------------------------------------
    def verify(self, trajectories=None) -> list[str]:
        """Check the manifest and every committed checkpoint's bytes against its checksum.

        Returns one line per problem (an empty list when the store is intact): a failed SQLite
        integrity check, a data file outside the store, a missing or truncated data file, checkpoint
        indices that are not 0..n-1, a checkpoint whose bytes changed. Checkpoints written before
        checksums existed are counted in :attr:`unchecked`."""
        problems = [f"manifest: {msg}" for msg in self._manifest.integrity()]
        self.unchecked = self.checked = 0
        sum_col = "checksum" if self._manifest.has_checksums else "NULL"  # a version-0 store opened read-only
        trajs = self.select() if trajectories is None else [self._handle(t) for t in trajectories]
        for traj in trajs:
            try:
                es = self.eval_set(traj.eval_set)
                path = traj.file
            except (KeyError, StoreError) as exc:
                line = one_line(exc)
                problems.append(
                    line if line.startswith(f"trajectory {traj.name!r}") else f"trajectory {traj.name!r}: {line}"
                )
                continue
            rows = self._manifest.rows(
                f"SELECT idx, {sum_col} AS checksum FROM checkpoints WHERE trajectory=? ORDER BY idx", (traj.id,)
            )
            if [r["idx"] for r in rows] != list(range(len(rows))):
                problems.append(f"trajectory {traj.name!r}: checkpoint indices are not 0..{len(rows) - 1}")
            if not rows:
                continue
            nbytes = es.n * es.c * np.dtype(segments.DTYPES[traj.dtype]).itemsize
            found, checked, unchecked = segments.verify_segment(
                path, [(r["idx"], r["checksum"]) for r in rows], nbytes, traj.name
            )
            problems += found
            self.checked += checked
            self.unchecked += unchecked
        return problems

    # ---- import ----------------------------------------------------------------------------------
    def import_h5(self, path, labels, eval_set: str, **fields) -> Trajectory:
        """Import a trajectory released by the paper's authors (see :func:`.importers.import_h5`)."""
        from .importers import import_h5

        return import_h5(self, path, labels, eval_set, **fields)
