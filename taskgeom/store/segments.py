"""Segments: each trajectory's probabilities in one raw file, ``data/<id>_<name>.bin``, checkpoint after
checkpoint ((T, N, C) float16 or float32).

Writes append at the committed length and are checked and fsynced before the manifest row that makes them
visible is committed; each checkpoint's BLAKE2b checksum goes into that row, and :func:`verify_segment`
compares them with the bytes on disk. A segment's file name comes from the manifest, so it is never
trusted: it must be a plain file name inside the store's ``data/`` folder (no separators, no ``..``, no
link leading out of it), or every read and write of it is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from .errors import StoreError, one_line

__all__ = ["DTYPES", "checksum", "segment_name", "segment_path", "write_checkpoints", "memmap", "verify_segment"]

DTYPES = {"float16": np.float16, "float32": np.float32}
_NAME = re.compile(r"data/[0-9]{6,}_[A-Za-z0-9._-]{0,80}\.bin")


def checksum(data: bytes | memoryview) -> str:
    return "blake2b:" + hashlib.blake2b(data, digest_size=16).hexdigest()


def segment_name(tid: int, name: str) -> str:
    """The relative file name a new trajectory's segment gets."""
    return f"data/{tid:06d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', name)[:80]}.bin"


def segment_path(root: Path, rel: str, traj: str) -> Path:
    """``root / rel`` where ``rel`` is a segment name this store could have written, resolving inside the
    store's ``data/`` folder; else StoreError (a manifest edited to point elsewhere)."""
    if not isinstance(rel, str) or not _NAME.fullmatch(rel):
        raise StoreError(
            f"trajectory {traj!r}: the manifest names the data file {rel!r}, which is not a file in the store's "
            "data/ folder (the manifest was changed outside taskgeom); refusing to read or write it"
        )
    path = root / rel
    data = os.path.realpath(root / "data")
    if os.path.dirname(os.path.realpath(path)) != data:
        raise StoreError(
            f"trajectory {traj!r}: data file {path} is a link leading out of the store's data/ folder; "
            "refusing to read or write it"
        )
    return path


def write_checkpoints(path: Path, blobs, first: int, nbytes: int, traj: str) -> list[str]:
    """Write checkpoints ``first, first+1, ...`` (an iterable of ``nbytes``-long byte strings) to the segment
    at ``path`` and fsync, checking every write; returns their checksums. On any failure the file is cut
    back to its committed length and StoreError is raised."""
    offset = first * nbytes
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise StoreError(f"trajectory {traj!r}: cannot open data file {path}: {one_line(exc)}") from exc
    sums = []
    try:
        size = os.fstat(fd).st_size
        if size < offset:
            raise StoreError(
                f"trajectory {traj!r}: data file {path} has {size} bytes but its {first} committed "
                f"checkpoints need {offset} (truncated or corrupt); refusing to append (it would fill the gap "
                "with zeros): restore the file or start a new trajectory"
            )
        try:
            pos = offset
            for blob in blobs:
                if len(blob) != nbytes:
                    raise ValueError(f"checkpoint of {len(blob)} bytes, expected {nbytes}")
                sums.append(checksum(blob))
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
                    f"trajectory {traj!r}: could not write checkpoint {first + max(len(sums) - 1, 0)} "
                    f"to {path} ({one_line(exc)}); nothing was committed"
                ) from exc
            raise
    finally:
        os.close(fd)
    return sums


def memmap(path: Path, dtype: str, shape: tuple, traj: str) -> np.ndarray:
    """A read-only memory map of the first ``shape[0]`` checkpoints of a segment."""
    dt = np.dtype(DTYPES[dtype])
    if shape[0] == 0:
        return np.zeros(shape, dtype=dt)
    if not path.is_file():
        raise StoreError(f"trajectory {traj!r}: data file {path} is missing")
    need = int(np.prod(shape)) * dt.itemsize
    size = path.stat().st_size
    if size < need:
        raise StoreError(
            f"trajectory {traj!r}: data file {path} has {size} bytes but the manifest's {shape[0]} checkpoints "
            f"need {need} (truncated or corrupt)"
        )
    return np.memmap(path, dtype=dt, mode="r", shape=shape)


def verify_segment(path: Path, sums: list, nbytes: int, traj: str) -> tuple[list[str], int, int]:
    """Compare the bytes of each checkpoint ``(idx, checksum)`` in ``sums`` (checksum None: written before
    checksums) with the slot ``idx`` of the segment. Returns (problems, checked, unchecked)."""
    if not path.is_file():
        return [f"trajectory {traj!r}: data file {path} is missing ({len(sums)} checkpoints lost)"], 0, 0
    problems, checked, unchecked = [], 0, 0
    size = path.stat().st_size
    with open(path, "rb") as f:
        for idx, want in sums:
            if (idx + 1) * nbytes > size:
                problems.append(
                    f"trajectory {traj!r}: checkpoint {idx}: data file {path} is truncated ({size} bytes, "
                    f"need {(idx + 1) * nbytes})"
                )
                break
            if want is None:
                unchecked += 1
                continue
            f.seek(idx * nbytes)
            checked += 1
            if checksum(f.read(nbytes)) != want:
                problems.append(
                    f"trajectory {traj!r}: checkpoint {idx}: checksum mismatch (data changed on disk since it "
                    "was written)"
                )
    return problems, checked, unchecked
