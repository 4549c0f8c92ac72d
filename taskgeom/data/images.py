"""Image datasets decoded once into uint8 arrays and cached.

Sources: an ImageFolder-style directory (``root/<class>/<image>`` or ``root/<split>/<class>/<image>``),
a tar / tar.gz of one (members are read in memory; nothing is extracted onto disk, so member paths
such as ``../x`` can do no harm), or torchvision's ``cifar-10-batches-py`` folder. Decoded arrays are
cached as ``.npy`` files keyed by the source's identity (path, size, modification time) and split.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageDataset", "load_images", "default_cache_dir"]

_IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}


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


def _decode(data: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{where}: not a readable image ({exc})") from exc


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


def _from_items(items, where: str) -> ImageDataset:
    """items: iterable of (class, name, bytes-loader)."""
    rows = sorted(items, key=lambda r: (r[0], r[1]))
    if not rows:
        raise ValueError(f"{where}: no images found (expected <class>/<image> or <split>/<class>/<image>)")
    classes = sorted({r[0] for r in rows})
    images = []
    for cls, name, load in rows:
        img = _decode(load(), f"{where}:{cls}/{name}")
        if images and img.shape != images[0].shape:
            raise ValueError(f"{where}:{cls}/{name}: image of shape {img.shape}, the others are {images[0].shape}")
        images.append(img)
    labels = np.array([classes.index(r[0]) for r in rows], dtype=np.int64)
    return ImageDataset(np.stack(images), labels, classes)


def _read_tar(path: Path, split: str | None) -> ImageDataset:
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ValueError(f"{path}: not a readable tar archive ({exc})") from exc
    with tf:
        items = []
        for member in tf:
            if not member.isfile():
                continue
            key = _split_member(member.name.replace("\\", "/").split("/"), split)
            if key is None:
                continue
            f = tf.extractfile(member)
            data = f.read() if f is not None else b""
            items.append((key[0], key[1], (lambda d=data: d)))
    return _from_items(items, str(path))


def _read_folder(path: Path, split: str | None) -> ImageDataset:
    root = path / split if split is not None and (path / split).is_dir() else path
    items = []
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in _IMAGE_EXT:
                items.append((cls_dir.name, f.name, (lambda f=f: f.read_bytes())))
    return _from_items(items, str(root))


def _read_cifar_batches(path: Path, split: str | None) -> ImageDataset:
    """torchvision's cifar-10-batches-py (the dataset's own pickled format, read with bytes encoding)."""
    import pickle  # noqa: S403 - the standard CIFAR-10 python release is a pickle

    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    xs, ys = [], []
    for n in names:
        with open(path / n, "rb") as f:
            d = pickle.load(f, encoding="bytes")  # noqa: S301
        xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d[b"labels"], dtype=np.int64))
    with open(path / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")  # noqa: S301
    classes = [c.decode() for c in meta[b"label_names"]]
    return ImageDataset(np.concatenate(xs), np.concatenate(ys), classes)


def _cache_key(path: Path, split: str | None) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{split}|v1"
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def load_images(source, split: str | None = None, cache_dir=None, use_cache: bool = True) -> ImageDataset:
    """Load an image classification dataset (see the module docstring), decoding only on first use.

    Parameters
    ----------
    source : path to a directory, a .tar/.tar.gz/.tgz archive, or a ``cifar-10-batches-py`` folder.
    split : e.g. ``"train"`` or ``"test"`` for sources laid out as ``<split>/<class>/<image>``.
    cache_dir : where decoded arrays are kept (default ``$TASKGEOM_CACHE`` or ``~/.cache/taskgeom``).
    """
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(path, split)
    files = [cache / f"{key}.{part}" for part in ("images.npy", "labels.npy", "classes.json")]
    if use_cache and all(f.exists() for f in files):
        try:
            return ImageDataset(np.load(files[0], allow_pickle=False), np.load(files[1], allow_pickle=False),
                                json.loads(files[2].read_text()))
        except (ValueError, OSError):
            pass  # a damaged cache is rebuilt below
    if path.is_dir() and (path / "batches.meta").exists():
        ds = _read_cifar_batches(path, split)
    elif path.is_dir():
        ds = _read_folder(path, split)
    else:
        ds = _read_tar(path, split)
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
