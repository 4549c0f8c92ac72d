"""The manifest: one SQLite file (write-ahead log) that lists evaluation sets, trajectories and checkpoints.

Its schema version lives in ``PRAGMA user_version`` and is migrated once, when a writer opens the store
(stores written before versioning read as version 0 and get the columns added since, NULL). Reads never
guess: a read-only open that SQLite cannot serve in place (a write-ahead log on a read-only mount, or a
copy without its ``-shm`` file) reads a private copy of the manifest and its log, so that it shows the
last committed state, never an older one. Every SQLite error reaches the caller as one
:class:`~taskgeom.store.errors.StoreError` line naming the manifest.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

from .errors import StoreError, one_line

__all__ = ["Manifest", "SCHEMA_VERSION", "TABLES"]

#: the schema this code writes; stores of a newer version are refused (their meaning is unknown here)
SCHEMA_VERSION = 1
TABLES = ("eval_sets", "trajectories", "checkpoints")
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
#: columns that version 0 (the first release) may lack: (table, column, type)
_ADDED_IN_V1 = (
    ("trajectories", "config", "TEXT"),
    ("trajectories", "code", "TEXT"),
    ("checkpoints", "checksum", "TEXT"),
)
_TIMEOUT_S = 60.0


def wal_holds_data(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return wal.is_file() and wal.stat().st_size > 0


class Manifest:
    """One connection to a store's manifest (see the module docstring).

    Attributes
    ----------
    readonly : nothing is ever written through this connection.
    has_checksums, has_config : whether the schema holds these columns (False only for a version-0 store
        opened read-only, which is not migrated).
    """

    def __init__(self, path: Path, readonly: bool, create: bool, root: Path):
        self.path = Path(path)
        self.readonly = readonly
        self._root = root
        self._db = None
        try:
            self._db = self._connect()
            self._open_schema(create)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"{self.path}: not a readable manifest ({one_line(exc)})") from exc
        except BaseException:
            self.close()
            raise

    # ---- connection ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if not self.readonly:
            db = sqlite3.connect(self.path, timeout=_TIMEOUT_S, isolation_level=None)
        else:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            db = sqlite3.connect(uri, uri=True, timeout=_TIMEOUT_S, isolation_level=None)
            try:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                # SQLite cannot open the log's index here (a read-only mount without -shm): read a copy
                db.close()
                db = self._connect_snapshot(uri)
        db.row_factory = sqlite3.Row
        return db

    def _connect_snapshot(self, uri: str) -> sqlite3.Connection:
        """A read-only connection that sees every committed transaction: the manifest as an immutable file
        where its log is empty, else a private copy of the manifest and its log (SQLite replays the log's
        committed frames into the copy's view; a torn last frame is ignored, as after a crash)."""
        if not wal_holds_data(self.path):
            return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=_TIMEOUT_S, isolation_level=None)
        tmp = tempfile.mkdtemp(prefix="taskgeom-manifest-")
        weakref.finalize(self, shutil.rmtree, tmp, True)
        copy = Path(tmp) / self.path.name
        try:
            shutil.copyfile(self.path, copy)
            shutil.copyfile(f"{self.path}-wal", f"{copy}-wal")
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read the manifest's log ({one_line(exc)})") from exc
        return sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    # ---- schema ----------------------------------------------------------------------------------
    def _columns(self) -> dict:
        return {t: {r[1] for r in self._db.execute(f"PRAGMA table_info({t})")} for t in TABLES}

    def _open_schema(self, create: bool) -> None:
        db = self._db
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ours = set(TABLES)
        if tables & ours != ours:
            if tables - {"sqlite_sequence"}:
                raise StoreError(
                    f"{self.path} is not a taskgeom manifest (it has the tables {sorted(tables)}, not {sorted(ours)})"
                )
            if not create or self.readonly:
                raise StoreError(
                    f"{self._root} is not a taskgeom store ({self.path} is an empty database); "
                    "pass create=True to make a new store"
                )
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} was written by a newer taskgeom (this one reads up to "
                f"{SCHEMA_VERSION}); upgrade taskgeom to read it"
            )
        if not self.readonly:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                retry_locked(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("PRAGMA synchronous=FULL")
            if version < SCHEMA_VERSION or tables & ours != ours:
                retry_locked(self._migrate)
        cols = self._columns()
        self.has_checksums = "checksum" in cols["checkpoints"]
        self.has_config = "config" in cols["trajectories"]

    def _migrate(self) -> None:
        """Create the tables, or bring a version-0 store to this version; once, under the write lock (a
        concurrent opener that got there first leaves nothing to do)."""
        with self.write():
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            have = self._columns()
            for table, col, typ in _ADDED_IN_V1:
                if col not in have[table]:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # ---- reads and writes ------------------------------------------------------------------------
    def rows(self, sql: str, args=()) -> list:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {one_line(exc)}") from exc

    def row(self, sql: str, args=()):
        found = self.rows(sql, args)
        return found[0] if found else None

    def execute(self, sql: str, args=()) -> sqlite3.Cursor:
        """One statement inside :meth:`write`."""
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {one_line(exc)}; nothing was recorded") from exc

    def executemany(self, sql: str, rows) -> None:
        try:
            self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {one_line(exc)}; nothing was recorded") from exc

    def integrity(self) -> list[str]:
        return [msg for (msg,) in self.rows("PRAGMA quick_check") if msg != "ok"]

    @contextmanager
    def write(self):
        """One write transaction (SQLite's write lock, retried while another writer holds it): committed
        when the block ends, rolled back on any error."""
        if self.readonly:
            raise StoreError(f"{self._root} is open read-only")
        db = self._db
        try:
            retry_locked(lambda: db.execute("BEGIN IMMEDIATE"))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot start a write ({one_line(exc)})") from exc
        try:
            yield
        except BaseException:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as err:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(
                f"{self._root}: could not commit to the manifest ({one_line(err)}); nothing was recorded"
            ) from err

    # ---- checkpoints -----------------------------------------------------------------------------
    def count(self, tid: int, name: str) -> int:
        """The number of committed checkpoints of trajectory ``tid``; their indices must be 0..n-1 (a gap or
        a shifted index means the manifest was edited outside taskgeom, and every read of it would be
        misplaced)."""
        n, lo, hi = self.row("SELECT COUNT(*), MIN(idx), MAX(idx) FROM checkpoints WHERE trajectory=?", (tid,))
        if n and (lo != 0 or hi != n - 1):
            raise StoreError(
                f"trajectory {name!r}: its {n} checkpoints have indices {lo}..{hi}, not 0..{n - 1} (the manifest "
                f"was changed outside taskgeom); run taskgeom store verify {self._root}"
            )
        return int(n)


def retry_locked(fn, seconds: float = _TIMEOUT_S):
    """Run ``fn``, retrying while another connection holds a lock SQLite does not wait for."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
