"""Image datasets decoded once into uint8 arrays and cached.

Sources: an ImageFolder-style directory (``root/<class>/<image>`` or ``root/<split>/<class>/<image>``),
a tar / tar.gz of one (members are read in memory; nothing is extracted onto disk, so member paths
such as ``../x`` can do no harm), or torchvision's ``cifar-10-batches-py`` folder. Decoded arrays are
cached as ``.npy`` files keyed by the source's identity (path, size, modification time) and split.

Untrusted input is bounded: an archive member larger than ``max_member_bytes`` is rejected before it is
read, an image whose header declares more than ``max_pixels`` pixels is rejected before it is decoded,
and decoding stops once the images would take more than ``max_total_bytes``; each is a one-line
``ValueError``, as are truncated or corrupt archives. The CIFAR-10 python batches (pickles) are read
with a restricted unpickler that admits only the dicts, lists, strings, bytes, numbers and numpy arrays
of that format, so a crafted batch cannot run anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle  # noqa: S403 - only through _SafeUnpickler below
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageDataset", "load_images", "default_cache_dir"]

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}

#: Default limits on untrusted input (see the module docstring); load_images takes overrides.
MAX_PIXELS = 1 << 26  # 67M pixels (8192 x 8192) per image
MAX_MEMBER_BYTES = 64 << 20  # 64 MiB per archive member (encoded)
MAX_TOTAL_BYTES = 16 << 30  # 16 GiB of decoded images in all


@dataclass(frozen=True)
class _Limits:
    max_pixels: int = MAX_PIXELS
    max_member_bytes: int = MAX_MEMBER_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES


@dataclass
class ImageDataset:
    """Decoded images (N, H, W, 3) uint8, labels (N,) int64 and class names (index = label)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, classes) -> "ImageDataset":
        """The samples of the given classes (names or indices), relabelled 0..k-1 in the given order."""
        idx = [self.classes.index(c) if isinstance(c, str) else int(c) for c in classes]
        remap = np.full(len(self.classes), -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        keep = remap[self.labels] >= 0
        return ImageDataset(self.images[keep], remap[self.labels[keep]], [self.classes[i] for i in idx])


def default_cache_dir() -> Path:
    return Path(os.environ.get("TASKGEOM_CACHE", Path.home() / ".cache" / "taskgeom"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _Budget:
    """Decoded bytes so far, against the total limit."""

    def __init__(self, limits: _Limits):
        self.limits = limits
        self.used = 0


def _decode(data: bytes, where: str, budget: _Budget | None = None) -> np.ndarray:
    """Decode one image to (H, W, 3) uint8, checking its declared size against the limits first."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    budget = budget or _Budget(_Limits())
    lim = budget.limits
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > lim.max_pixels:
                    raise ValueError(
                        f"{where}: image of {w} x {h} = {w * h} pixels is over the limit of "
                        f"{lim.max_pixels} pixels per image (max_pixels)"
                    )
                if budget.used + w * h * 3 > lim.max_total_bytes:
                    raise ValueError(
                        f"{where}: decoding it would take the images past {lim.max_total_bytes} "
                        "bytes in all (max_total_bytes)"
                    )
                budget.used += w * h * 3
                img = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: not a readable image ({_one_line(exc)})") from exc
    except Image.DecompressionBombError as exc:  # Pillow's own guard (above ~179M pixels) fires at open
        raise ValueError(f"{where}: image is over the pixel limit ({_one_line(exc)})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, zlib.error, MemoryError) as exc:
        raise ValueError(f"{where}: not a readable image ({type(exc).__name__}: {_one_line(exc)})") from exc
    if img.shape[:2] != (h, w):
        raise ValueError(f"{where}: decoded to shape {img.shape}, its header says {w} x {h}")
    return img


def _split_member(parts: list[str], split: str | None):
    """(class, name) of an archive/folder path, or None when it is not an image of the split."""
    if not parts or Path(parts[-1]).suffix.lower() not in _IMAGE_EXT:
        return None
    if any(p in ("", ".", "..") for p in parts[:-1]):
        return None
    if len(parts) >= 3:  # split/class/name (possibly under a top folder)
        if split is not None and parts[-3] != split:
            return None
        return parts[-2], parts[-1]
    if len(parts) == 2 and split is None:
        return parts[0], parts[1]
    return None


def _from_decoded(rows, where: str) -> ImageDataset:
    """rows: list of (class, name, decoded image), in any order."""
    rows = sorted(rows, key=lambda r: (r[0], r[1]))
    if not rows:
        raise ValueError(f"{where}: no images found (expected <class>/<image> or <split>/<class>/<image>)")
    classes = sorted({r[0] for r in rows})
    shape = rows[0][2].shape
    for cls, name, img in rows:
        if img.shape != shape:
            raise ValueError(f"{where}:{cls}/{name}: image of shape {img.shape}, the others are {shape}")
    images = np.empty((len(rows),) + shape, dtype=np.uint8)
    for k in range(len(rows)):  # filled in place and released one by one: no second full copy
        images[k] = rows[k][2]
        rows[k] = rows[k][:2]
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[r[0]] for r in rows], dtype=np.int64)
    return ImageDataset(images, labels, classes)


def _from_items(items, where: str, limits: _Limits | None = None) -> ImageDataset:
    """items: iterable of (class, name, bytes-loader)."""
    budget = _Budget(limits or _Limits())
    rows = [(cls, name, _decode(load(), f"{where}:{cls}/{name}", budget)) for cls, name, load in items]
    return _from_decoded(rows, where)


def _read_tar(path: Path, split: str | None, limits: _Limits | None = None) -> ImageDataset:
    """Members are checked against the size limit from their headers, then read and decoded one at a
    time: at most one encoded member is in memory besides the decoded images."""
    limits = limits or _Limits()
    budget = _Budget(limits)
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable tar archive ({_one_line(exc)})") from exc
    rows = []
    try:
        with tf:
            for member in tf:
                if not member.isfile():
                    continue
                key = _split_member(member.name.replace("\\", "/").split("/"), split)
                if key is None:
                    continue
                where = f"{path}:{member.name}"
                if member.size > limits.max_member_bytes:
                    raise ValueError(
                        f"{where}: member of {member.size} bytes is over the limit of "
                        f"{limits.max_member_bytes} bytes (max_member_bytes)"
                    )
                f = tf.extractfile(member)
                data = f.read(member.size + 1) if f is not None else b""
                if len(data) != member.size:
                    raise ValueError(
                        f"{where}: member has {len(data)} bytes, its header says {member.size} (truncated archive)"
                    )
                rows.append((key[0], key[1], _decode(data, f"{path}:{key[0]}/{key[1]}", budget)))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ValueError(f"{path}: truncated or corrupt archive ({type(exc).__name__}: {_one_line(exc)})") from exc
    return _from_decoded(rows, str(path))


def _read_folder(path: Path, split: str | None, limits: _Limits | None = None) -> ImageDataset:
    limits = limits or _Limits()
    root = path / split if split is not None and (path / split).is_dir() else path
    items = []
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in _IMAGE_EXT:
                items.append((cls_dir.name, f.name, (lambda f=f: _read_file(f, limits))))
    return _from_items(items, str(root), limits)


def _read_file(f: Path, limits: _Limits) -> bytes:
    size = f.stat().st_size
    if size > limits.max_member_bytes:
        raise ValueError(
            f"{f}: file of {size} bytes is over the limit of {limits.max_member_bytes} bytes (max_member_bytes)"
        )
    return f.read_bytes()


#: The only globals a CIFAR-10 batch may name: numpy's array reconstruction (numpy 1 and 2 paths),
#: and the codec Python 3 uses for bytes in protocol-2 pickles. Nothing else can be called.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not part of the CIFAR-10 batch format)")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent references (not part of the CIFAR-10 batch format)")


def _load_batch(file: Path, keys) -> dict:
    """One CIFAR-10 python batch through the restricted unpickler, checked for the expected keys."""
    try:
        with open(file, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{file}: missing from the CIFAR-10 batches folder") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        UnicodeDecodeError,
    ) as exc:
        raise ValueError(f"{file}: not a CIFAR-10 batch ({type(exc).__name__}: {_one_line(exc)})") from exc
    if not isinstance(d, dict):
        raise ValueError(f"{file}: not a CIFAR-10 batch (a {type(d).__name__}, not a dict)")
    d = {k.encode() if isinstance(k, str) else k: v for k, v in d.items()}
    missing = [k.decode() for k in keys if k not in d]
    if missing:
        raise ValueError(f"{file}: not a CIFAR-10 batch (no {', '.join(missing)})")
    return d


def _read_cifar_batches(path: Path, split: str | None) -> ImageDataset:
    """torchvision's cifar-10-batches-py (the dataset's own pickled format, read with bytes encoding by a
    restricted unpickler: see _SafeUnpickler)."""
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    meta = _load_batch(path / "batches.meta", [b"label_names"])
    if not isinstance(meta[b"label_names"], list) or not meta[b"label_names"]:
        raise ValueError(f"{path / 'batches.meta'}: label_names is not a non-empty list")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[b"label_names"]]
    xs, ys = [], []
    for n in names:
        d = _load_batch(path / n, [b"data", b"labels"])
        x, y = d[b"data"], d[b"labels"]
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
            raise ValueError(f"{path / n}: data is not a uint8 array (n, 3072)")
        y = np.asarray(y) if isinstance(y, (list, np.ndarray)) else None
        if y is None or y.dtype.kind not in "iu" or y.shape != (x.shape[0],):
            raise ValueError(f"{path / n}: labels are not {x.shape[0]} integers")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise ValueError(f"{path / n}: labels outside [0, {len(classes)})")
        xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(y.astype(np.int64))
    return ImageDataset(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys), classes)


def _cache_key(path: Path, split: str | None) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{split}|v1"
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def load_images(
    source,
    split: str | None = None,
    cache_dir=None,
    use_cache: bool = True,
    max_pixels: int = MAX_PIXELS,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> ImageDataset:
    """Load an image classification dataset (see the module docstring), decoding only on first use.

    Parameters
    ----------
    source : path to a directory, a .tar/.tar.gz/.tgz archive, or a ``cifar-10-batches-py`` folder.
    split : e.g. ``"train"`` or ``"test"`` for sources laid out as ``<split>/<class>/<image>``.
    cache_dir : where decoded arrays are kept (default ``$TASKGEOM_CACHE`` or ``~/.cache/taskgeom``).
    max_pixels, max_member_bytes, max_total_bytes : limits on untrusted input (module docstring).
    """
    limits = _Limits(int(max_pixels), int(max_member_bytes), int(max_total_bytes))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(path, split)
    files = [cache / f"{key}.{part}" for part in ("images.npy", "labels.npy", "classes.json")]
    if use_cache and all(f.exists() for f in files):
        try:
            return ImageDataset(
                np.load(files[0], allow_pickle=False),
                np.load(files[1], allow_pickle=False),
                json.loads(files[2].read_text()),
            )
        except (ValueError, OSError):
            pass  # a damaged cache is rebuilt below
    if path.is_dir() and (path / "batches.meta").exists():
        ds = _read_cifar_batches(path, split)
    elif path.is_dir():
        ds = _read_folder(path, split, limits)
    else:
        ds = _read_tar(path, split, limits)
    if use_cache:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = [f.with_name(f.name + ".tmp") for f in files]
        with open(tmp[0], "wb") as f:
            np.save(f, ds.images, allow_pickle=False)
        with open(tmp[1], "wb") as f:
            np.save(f, ds.labels, allow_pickle=False)
        tmp[2].write_text(json.dumps(ds.classes))
        for t, f in zip(tmp, files):
            os.replace(t, f)  # atomic: a concurrent reader never sees half a cache
    return ds
