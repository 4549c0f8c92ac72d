"""Out-of-core divergence matrices: tiles computed into a matrix on disk, with a ledger of finished tiles:
the on-disk sink of the one pairwise path (:mod:`taskgeom.pairwise`; its public face is
:func:`taskgeom.pairwise_distances` with ``out=PATH``).

``pairwise_distances(models, out=PATH)`` (and ``taskgeom distances SOURCE --out PATH``) splits the
``m x m`` matrix into ``T x T`` tiles (``T`` from a memory budget that does not grow with ``m``) and
computes each tile from two blocks of models read on demand. The result is a folder::

    PATH/D.npy        the matrix (float64), an ordinary .npy file: np.load(PATH/"D.npy", mmap_mode="r")
    PATH/meta.json    the commit record: size, tile, divergence, shape of the models, one identity key per
                      model (see taskgeom.modelsets) and the ledger's id
    PATH/tiles/I-J.json   the ledger: one marker per finished tile (I <= J) with the extent it covers
    PATH/lock         taken (flock) by writers: exclusively to create or grow, shared to write a tile

Why a ``.npy`` memory map with a ledger rather than zarr: InPCA's streamed operator reads the whole
matrix a hundred times or more, which a raw memory map serves at page-cache bandwidth with no decoding
(distances barely compress); any numpy program reads the file; tiles are disjoint byte ranges written
with ``pwrite``, so parallel writers (Ray workers on a shared filesystem) never touch each other's bytes;
and a marker is written (atomically) only after its tile's bytes are fsynced, so a killed run resumes
where it stopped without recomputing a finished tile. Adding models grows the file once (the old block is
copied, not recomputed) and computes only the new rows and columns.

What a folder can be trusted for (the rules every read and write here keeps):

* ``meta.json`` is the one commit record, replaced atomically. A marker counts only when it carries the
  ledger id of that record and its tile size, and covers no more than its tile: markers left by another
  ledger (a deleted or rewritten ``meta.json``, another source, another tile size) are never honoured.
  A different source (other model keys), divergence or explicit tile size is refused with one line.
* No path is read from the ledger or the record: file names are fixed, markers are named from integers.
* A read (:meth:`DistanceMatrix.array`, :meth:`DistanceMatrix.row_blocks`, InPCA out of core) sees the last
  committed matrix or fails with one line: an unfinished folder says how many tiles are missing.
* Growing is crash-safe: the larger matrix is written under a temporary name and fsynced, then replaces
  ``D.npy``, then the record is committed. A kill between the last two leaves ``D.npy`` larger than the
  record says, with the committed block in its top-left corner: that state is recognised, refused by
  reads, and finished (or redone for another number of models) by the next ``pairwise_distances``.
* Temporary files are unique per process (pid and random suffix), fsynced and renamed into place, so
  several processes (or Ray workers) may work on one folder: creation and growth are serialised by an
  exclusive lock; a tile is written under a shared lock into the file the writer opened, and a writer
  whose matrix was grown by another process meanwhile stops with one line instead of writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._checks import check_int
from ._fileio import fsync_dir
from .modelsets import ModelSet
from .pairwise.compute import block_distances
from .pairwise.plan import plan, uniform

__all__ = ["DistanceMatrix", "Task", "tile_size", "open_for", "compute_tile", "DEFAULT_BUDGET", "FORMAT"]

DEFAULT_BUDGET = 1 << 30  # bytes of model blocks and tile output held at once
FORMAT = "taskgeom-distances-2"


def tile_size(n: int, c: int, itemsize: int, budget: int = DEFAULT_BUDGET) -> int:
    """Models per tile side so that two blocks of models (as stored and as float64 staging) and one
    float64 tile fit in ``budget`` bytes; independent of the number of models."""
    n, c = check_int(n, "n", minimum=1), check_int(c, "c", minimum=1)
    itemsize, budget = check_int(itemsize, "itemsize", minimum=1), check_int(budget, "budget", minimum=1)
    per_model = n * c * (itemsize + 8)  # a block as read, and the kernel's float64 staging of it
    t = int(budget // max(1, 2 * per_model))
    while t > 16 and 2 * t * per_model + 8 * t * t > budget:
        t -= max(1, t // 8)
    return max(16, min(t, 4096))


def _tmp_name(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp")


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a unique temporary file, fsync it, and rename it onto ``path``."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool):
    """``flock`` on ``path/lock``: exclusive to create or grow the matrix, shared to write a tile."""
    fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _header(f, name) -> tuple[int, int]:
    """(rows, data offset) of an open square float64 C-order .npy file, checked against its size."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, SyntaxError) as exc:
        raise ValueError(f"{name}: not a .npy matrix ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    if dtype != np.dtype("<f8") or fortran or len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name}: expected a square float64 matrix in C order, got {dtype} {shape}")
    offset = f.tell()
    size = os.fstat(f.fileno()).st_size
    if size < offset + 8 * shape[0] * shape[0]:
        raise ValueError(f"{name}: truncated ({size} bytes for a {shape[0]} x {shape[0]} matrix)")
    return int(shape[0]), int(offset)


def _read_meta(path: Path) -> dict:
    """The commit record of the folder ``path``, every field checked (one-line ValueError otherwise)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a taskgeom distance folder ({detail})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a taskgeom distance folder (meta.json is not an object)")
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path}: a distance folder of format {meta.get('format')!r}, not {FORMAT!r} (written by another "
            "taskgeom version, whose ledger is not bound to its source): use another output folder"
        )

    def bad(field):
        return ValueError(f"{path}: meta.json is damaged ({field}): use another output folder")

    for field in ("m", "n", "c", "tile"):
        v = meta.get(field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(field)
    for field in ("divergence", "ledger", "dtype"):
        if not isinstance(meta.get(field), str):
            raise bad(field)
    keys = meta.get("keys")
    if not isinstance(keys, list) or len(keys) != meta["m"] or not all(isinstance(k, str) for k in keys):
        raise bad("keys")
    return meta


@dataclass
class Task:
    """One tile's missing regions: (r0, r1, c0, c1) in models, and the extent the tile will then cover."""

    I: int  # noqa: E741
    J: int
    regions: list
    r1: int
    c1: int


class DistanceMatrix:
    """The on-disk matrix of a folder written by :func:`pairwise_distances` (see the module docstring).

    ``pending``: ``D.npy`` holds more models than the commit record (a growth step was interrupted);
    reads refuse such a folder, and :func:`open_for` finishes or redoes the growth."""

    def __init__(self, path):
        self.path = Path(path).resolve()  # absolute: Ray workers may run in another directory
        if not self.path.is_dir():
            raise ValueError(f"{self.path}: not a taskgeom distance folder (no such folder)")
        self.meta = _read_meta(self.path)
        self.m, self.tile, self.ledger = self.meta["m"], self.meta["tile"], self.meta["ledger"]
        try:
            with open(self.file, "rb") as f:
                self.rows, self.offset = _header(f, self.file)
                st = os.fstat(f.fileno())
        except OSError as exc:
            raise ValueError(f"{self.file}: cannot be read ({exc.strerror or exc})") from None
        self._identity = (st.st_dev, st.st_ino)
        if self.rows < self.m:
            raise ValueError(
                f"{self.file}: holds {self.rows} models, meta.json {self.m}: damaged, use another output folder"
            )
        self.pending = self.rows > self.m

    @property
    def file(self) -> Path:
        return self.path / "D.npy"

    def n_tiles(self) -> int:
        b = (self.m + self.tile - 1) // self.tile
        return b * (b + 1) // 2

    def check_complete(self) -> None:
        """Raise a one-line ValueError unless the folder holds a whole committed matrix."""
        if self.pending:
            raise ValueError(
                f"{self.path}: a growth step was interrupted (D.npy holds {self.rows} models, the record "
                f"{self.m}): rerun pairwise_distances(models, out=PATH) to finish it"
            )
        if getattr(self, "_complete", False):
            return
        missing = len(self.tasks())
        if missing:
            raise ValueError(
                f"{self.path}: unfinished: {missing} of {self.n_tiles()} tiles are missing: rerun "
                "pairwise_distances(models, out=PATH) to finish it"
            )
        self._complete = True  # (for this file: row_blocks checks that the file is still the one opened)

    def array(self) -> np.memmap:
        """The matrix as a read-only memory map; a one-line ValueError unless it is complete."""
        self.check_complete()
        a = np.load(self.file, mmap_mode="r")
        if a.shape != (self.m, self.m):
            raise ValueError(f"{self.file}: changed while it was opened (another process grew it?): open it again")
        return a

    def _marker(self, i: int, j: int) -> Path:
        return self.path / "tiles" / f"{int(i)}-{int(j)}.json"

    def _bounds(self, i: int, j: int) -> tuple[int, int, int, int]:
        t, m = self.tile, self.m
        return i * t, j * t, min(m, (i + 1) * t), min(m, (j + 1) * t)

    def finished(self, i: int, j: int) -> tuple[int, int]:
        """(r1, c1): the extent tile (i, j) covers (its start when nothing is done). A marker counts only
        with this ledger's id and tile size and an extent inside the tile; anything else counts as absent."""
        R0, C0, R1, C1 = self._bounds(i, j)
        try:
            d = json.loads(self._marker(i, j).read_text())
        except (OSError, ValueError):
            return R0, C0
        if not isinstance(d, dict) or d.get("ledger") != self.ledger or d.get("tile") != self.tile:
            return R0, C0
        r1, c1 = d.get("r1"), d.get("c1")
        for v, lo, hi in ((r1, R0, R1), (c1, C0, C1)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                return R0, C0
        return r1, c1

    def tasks(self) -> list[Task]:
        """The tiles (i <= j) that are not finished, each with its missing regions."""
        out = []
        for t in plan(uniform(self.m, self.tile)):  # the upper triangle's tiles, the plan of every route
            R0, C0, R1, C1 = t.r0, t.c0, t.r1, t.c1
            r1, c1 = self.finished(t.i, t.j)
            if r1 >= R1 and c1 >= C1:
                continue
            if t.diagonal or r1 <= R0 or c1 <= C0:
                regions = [(R0, R1, C0, C1)]  # diagonal or untouched: the whole tile
            else:
                regions = ([(r1, R1, C0, C1)] if r1 < R1 else []) + ([(R0, r1, c1, C1)] if c1 < C1 else [])
            out.append(Task(t.i, t.j, regions, R1, C1))
        return out

    def write_tile(self, task: Task, blocks: list) -> None:
        """Write a tile's computed ``blocks`` ((r0, c0, mirror, block) each), fsync, then mark it finished,
        under the folder's shared lock and into the file this object opened: if another process grew the
        matrix meanwhile, nothing is written and a one-line RuntimeError says so."""
        with _locked(self.path, exclusive=False):
            fd = os.open(self.file, os.O_RDWR)
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != self._identity or self.pending:
                    raise RuntimeError(
                        f"{self.path}: the matrix was grown by another process while this tile was computed: "
                        "rerun pairwise_distances(models, out=PATH) to resume"
                    )
                for r0, c0, mirror, block in blocks:
                    self._pwrite(fd, block, r0, c0, mirror)
                os.fsync(fd)
            finally:
                os.close(fd)
            self.mark(task)

    def _pwrite(self, fd: int, block: np.ndarray, r0: int, c0: int, mirror: bool) -> None:
        parts = ((block, (r0, c0)), (block.T, (c0, r0))) if mirror else ((block, (r0, c0)),)
        for part, (a0, b0) in parts:
            rows = np.ascontiguousarray(part, dtype=np.float64)
            if a0 < 0 or b0 < 0 or a0 + rows.shape[0] > self.m or b0 + rows.shape[1] > self.m:
                raise ValueError(
                    f"block of shape {rows.shape} at ({a0}, {b0}) is outside the {self.m} x {self.m} matrix"
                )
            for k, row in enumerate(rows):
                view = memoryview(row.tobytes())
                pos = self.offset + ((a0 + k) * self.m + b0) * 8
                while view:
                    n = os.pwrite(fd, view, pos)
                    if n <= 0:
                        raise OSError(28, "short write")
                    pos, view = pos + n, view[n:]

    def write_block(self, block: np.ndarray, r0: int, c0: int, mirror: bool) -> None:
        """Write ``block`` at rows ``r0..``, columns ``c0..`` (and its transpose, with ``mirror``), fsynced
        (no marker: :meth:`write_tile` writes a tile and its marker together)."""
        with _locked(self.path, exclusive=False):
            fd = os.open(self.file, os.O_RDWR)
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != self._identity:
                    raise RuntimeError(f"{self.path}: the matrix was grown by another process: open it again")
                self._pwrite(fd, block, r0, c0, mirror)
                os.fsync(fd)
            finally:
                os.close(fd)

    def mark(self, task: Task) -> None:
        marker = {"r1": int(task.r1), "c1": int(task.c1), "ledger": self.ledger, "tile": self.tile}
        _atomic_write(self._marker(task.I, task.J), json.dumps(marker))

    def row_blocks(self, budget: int = DEFAULT_BUDGET):
        """(r0, rows) blocks of the complete matrix, each at most ``budget`` bytes, read with ``pread`` into
        one reused buffer (not through a memory map, whose touched pages would count in this process's
        resident memory): reading the whole matrix holds one block. The file is checked, once opened, to be
        the one this object saw (a one-line ValueError if another process grew it meanwhile)."""
        budget = check_int(budget, "budget", minimum=1)
        self.check_complete()
        step = max(1, int(budget // max(1, 8 * self.m)))
        buf = np.empty((min(step, self.m), self.m))
        with open(self.file, "rb") as f:
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != self._identity:
                raise ValueError(f"{self.file}: changed while it was opened (another process grew it?): open it again")
            fd = f.fileno()
            for r0 in range(0, self.m, step):
                rows = min(step, self.m - r0)
                view = memoryview(buf[:rows].reshape(-1).view(np.uint8))
                got = os.preadv(fd, [view], self.offset + r0 * self.m * 8)
                if got != rows * self.m * 8:
                    raise OSError(f"{self.file}: short read ({got} bytes) at row {r0}: truncated?")
                yield r0, buf[:rows]


def _new_matrix(path: Path, m: int, source: Path | None = None, m_old: int = 0, rows_old: int = 0) -> None:
    """Write an ``m x m`` zero matrix under a temporary name (with the top-left ``m_old`` block copied from
    ``source``, whose rows hold ``rows_old`` values), fsync it and rename it onto ``D.npy``."""
    tmp = _tmp_name(path / "D.npy")
    try:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=(m, m))
        if m_old:
            with open(source, "rb") as f:
                _, offset = _header(f, source)
            old = np.memmap(source, dtype="<f8", mode="r", offset=offset, shape=(rows_old, rows_old))
            step = max(1, (256 << 20) // max(1, 8 * rows_old))
            for r0 in range(0, m_old, step):
                r1 = min(m_old, r0 + step)
                mm[r0:r1, :m_old] = old[r0:r1, :m_old]
            del old
        mm.flush()
        del mm
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path / "D.npy")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path)


def _write_meta(path: Path, meta: dict) -> None:
    _atomic_write(path / "meta.json", json.dumps(meta))


def _clean(path: Path, markers: bool) -> None:
    """Remove temporary files left by killed writers (under the exclusive lock: no writer is running),
    and with ``markers`` every tile marker (a new ledger starts)."""
    for d in (path, path / "tiles"):
        if not d.is_dir():
            continue
        for f in d.iterdir():
            if (f.name.startswith(".") and f.name.endswith(".tmp")) or f.name.endswith((".tmp", ".grow")):
                with contextlib.suppress(OSError):
                    f.unlink()
            elif markers and d.name == "tiles" and f.suffix == ".json":
                with contextlib.suppress(OSError):
                    f.unlink()


def _create(path: Path, models: ModelSet, divergence: str, tile: int, keys: list) -> DistanceMatrix:
    _clean(path, markers=True)  # markers of an earlier ledger (a deleted meta.json) are never reused
    (path / "tiles").mkdir(parents=True, exist_ok=True)
    _new_matrix(path, models.m)
    meta = {
        "format": FORMAT,
        "m": models.m,
        "n": models.n,
        "c": models.c,
        "dtype": str(np.dtype(models.dtype)),
        "tile": tile,
        "divergence": divergence,
        "ledger": secrets.token_hex(12),
        "keys": keys,
    }
    _write_meta(path, meta)
    return DistanceMatrix(path)


def _grow(dm: DistanceMatrix, models: ModelSet, keys: list) -> DistanceMatrix:
    """Grow the matrix to ``models.m``: the committed block is copied into a larger file (not recomputed),
    which replaces ``D.npy`` before the record is committed. An interrupted growth (``dm.pending``) whose
    file already has ``models.m`` rows only needs its record; otherwise the growth is redone from the
    committed block of whatever ``D.npy`` holds."""
    if dm.rows != models.m:
        _new_matrix(dm.path, models.m, dm.file, dm.m, dm.rows)
    _write_meta(dm.path, {**dm.meta, "m": models.m, "keys": keys})
    return DistanceMatrix(dm.path)


def open_for(path, models: ModelSet, divergence: str, tile: int | None, budget: int) -> DistanceMatrix:
    """The distance folder at ``path`` for ``models``: created, reused (resume) or grown (new models).

    ``tile``: models per tile side (None: from ``budget`` for a new folder, the folder's own otherwise; a
    tile size other than the folder's is refused). Creation and growth hold the folder's exclusive lock, so
    two processes starting on one fresh folder share one ledger."""
    if tile is not None:
        tile = check_int(tile, "tile", minimum=1)
    budget = check_int(budget, "budget", minimum=1)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder: give out= a folder name")
    path.mkdir(parents=True, exist_ok=True)
    keys = models.keys()
    with _locked(path, exclusive=True):
        if not (path / "meta.json").exists():
            t = tile or tile_size(models.n, models.c, np.dtype(models.dtype).itemsize, budget)
            return _create(path, models, divergence, t, keys)
        _clean(path, markers=False)
        dm = DistanceMatrix(path)
        meta = dm.meta
        if meta["divergence"] != divergence or (meta["n"], meta["c"]) != (models.n, models.c):
            raise ValueError(
                f"{path}: holds a {meta['divergence']} matrix of ({meta['n']}, {meta['c']}) models; "
                f"asked for {divergence} of ({models.n}, {models.c}): use another output folder"
            )
        if tile is not None and tile != dm.tile:
            raise ValueError(
                f"{path}: holds tiles of {dm.tile} models, asked for tile={tile}: pass tile=None to resume it, "
                "or use another output folder"
            )
        old_keys = meta["keys"]
        if old_keys and keys and ("#" in old_keys[0]) != ("#" in keys[0]):  # store keys name a trajectory
            was, now = ("a store", "an array") if "#" in old_keys[0] else ("an array", "a store")
            raise ValueError(
                f"{path}: was computed for models read from {was}, and these come from {now}: models are "
                "identified by their source (a store's trajectory and checkpoint, an array's bytes), so even "
                "identical values count as other models: use another output folder"
            )
        if models.m < dm.m or keys[: dm.m] != old_keys:
            first = next((i for i, (a, b) in enumerate(zip(keys, old_keys)) if a != b), min(len(keys), len(old_keys)))
            raise ValueError(
                f"{path}: was computed for {dm.m} models, and model {first} of the {models.m} given differs "
                "(models can only be added at the end): use another output folder"
            )
        return _grow(dm, models, keys) if (models.m > dm.m or dm.pending) else dm


def compute_tile(
    dm: DistanceMatrix, models: ModelSet, task: Task, divergence: str, backend: str = "auto", threads: int | None = None
) -> None:
    """Compute a tile's missing regions, then write them (mirrored) and mark the tile finished
    (:meth:`DistanceMatrix.write_tile`)."""
    blocks = []
    for r0, r1, c0, c1 in task.regions:
        rows = models.block(r0, r1)
        cols = None if (r0, r1) == (c0, c1) else models.block(c0, c1)
        block = np.asarray(block_distances(rows, cols, divergence=divergence, backend=backend, threads=threads))
        blocks.append((r0, c0, (r0, r1) != (c0, c1) or task.I != task.J, block))
    dm.write_tile(task, blocks)
