"""Streaming image data for ImageNet-scale training: nothing is decoded until a batch needs it.

:class:`ImageFolderSource` indexes an ImageFolder split (``<root>/<split>/<class>/<image>``: paths and
labels only); :class:`BetonSource` does the same for a ``.beton`` written by
:func:`taskgeom.data.write_beton` (its labels are read from the file's metadata). ``source.loader(...)``
makes a loader with the interface the training loop uses (``__len__``, ``batch(epoch, index)``,
iteration over one epoch, ``labels``):

* :class:`StreamLoader` (ImageFolder) decodes each batch with PIL in a thread pool, the next batch
  prefetched while the current one trains. Training: random-resized crops (area 0.08-1, aspect 3/4-4/3,
  torchvision's ten tries then a centre crop) and horizontal flips; evaluation: a centre crop of
  224/256 of the shorter side (FFCV's). Order and every crop and flip are drawn from
  (seed, epoch, index) before decoding, so a batch is the same whatever the threads do and a resumed run
  is exact. The training resolution may depend on the epoch (progressive resizing).
* :class:`taskgeom.data.FFCVLoader` (``.beton``): FFCV's pipeline, its per-epoch order fixed by the seed;
  FFCV's crops and flips draw from numba's unseeded generator (see there).

Images are checked against the same limits as :func:`taskgeom.data.load_images` (file size, declared
pixels) before they are decoded; a bad image is a one-line ``ValueError`` naming the file.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .. import seeding
from .._native import usable_cores
from .._validate import tensor_of
from .augment import normalize
from .images import _IMAGE_EXT, MAX_MEMBER_BYTES, MAX_PIXELS

__all__ = ["ImageFolderSource", "BetonSource", "StreamLoader", "resolution_at", "crop_box"]

EVAL_RATIO = 224 / 256  # centre crop of evaluation images (FFCV's CenterCropRGBImageDecoder ratio)


def resolution_at(epoch: int, min_res: int, max_res: int, ramp) -> int:
    """Progressive resizing (FFCV's ImageNet recipe): ``min_res`` up to epoch ``ramp[0]``, ``max_res`` from
    ``ramp[1]``, linear in between, rounded to a multiple of 32 (of 8 below 64 pixels)."""
    start, end = ramp
    if epoch <= start or min_res == max_res:
        return int(min_res)
    if epoch >= end:
        return int(max_res)
    r = float(np.interp(epoch, [start, end], [min_res, max_res]))
    step = 32 if max_res >= 64 else 8
    return int(min(max(round(r / step) * step, min_res), max_res))


def crop_box(w: int, h: int, u: np.ndarray | None, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(left, top, right, bottom) of a random-resized crop of a ``w x h`` image from pre-drawn uniforms
    ``u`` ((10, 4): torchvision's ten tries, then a centre crop of clipped aspect), or of the evaluation
    centre crop when ``u`` is None."""
    if u is None:
        side = EVAL_RATIO * min(w, h)
        return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    area = w * h
    for a, r, y, x in u:
        target = area * (scale[0] + a * (scale[1] - scale[0]))
        aspect = math.exp(math.log(ratio[0]) + r * (math.log(ratio[1]) - math.log(ratio[0])))
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top, left = int(y * (h - ch + 1)), int(x * (w - cw + 1))
            return (left, top, left + cw, top + ch)
    aspect = w / h
    cw, ch = (w, int(round(w / ratio[0]))) if aspect < ratio[0] else (w, h)
    if aspect > ratio[1]:
        cw, ch = int(round(h * ratio[1])), h
    ch, cw = min(ch, h), min(cw, w)
    return ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)


def read_crop(path, res: int, u, flip: bool) -> np.ndarray:
    """The ``res x res`` crop of one image file (see :func:`crop_box`), checked against the limits first."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        size = os.stat(path).st_size
        if size > MAX_MEMBER_BYTES:
            raise ValueError(f"{path}: file of {size} bytes is over the limit of {MAX_MEMBER_BYTES} bytes")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ValueError(f"{path}: image of {w} x {h} pixels is over the limit of {MAX_PIXELS}")
                box = crop_box(w, h, u)
                im.draft(
                    "RGB",
                    (max(1, math.ceil(w * res / (box[2] - box[0]))), max(1, math.ceil(h * res / (box[3] - box[1])))),
                )
                sx, sy = im.size[0] / w, im.size[1] / h  # JPEG draft mode may decode at a reduced scale
                box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
                out = im.convert("RGB").resize((res, res), Image.BILINEAR, box=box)
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable image ({' '.join(str(exc).split())})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    if flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


class ImageFolderSource:
    """An ImageFolder split as (files, labels, classes): class folders in sorted order (label = position),
    images in sorted order; nothing is decoded."""

    kind = "imagefolder"

    def __init__(self, root, split: str | None = None, files=None, labels=None, classes=None):
        if files is not None:
            self.root, self.files, self.labels, self.classes = Path(root), list(files), labels, list(classes)
            return
        base = Path(root) / split if split is not None else Path(root)
        if not base.is_dir():
            raise FileNotFoundError(f"{base}: no such image folder")
        self.root = base
        self.classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        items = [
            (f, k)
            for k, c in enumerate(self.classes)
            for f in sorted((base / c).iterdir())
            if f.is_file() and f.suffix.lower() in _IMAGE_EXT
        ]
        if not items:
            raise ValueError(f"{base}: no images found (expected <class>/<image> with extensions {sorted(_IMAGE_EXT)})")
        self.files = [str(f) for f, _ in items]  # strings: lighter than Path objects at ImageNet scale
        self.labels = np.array([k for _, k in items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices) -> "ImageFolderSource":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageFolderSource(
            self.root, files=[self.files[i] for i in idx], labels=self.labels[idx], classes=self.classes
        )

    def loader(self, indices, labels, **kw) -> "StreamLoader":
        """A :class:`StreamLoader` over the samples ``indices`` with the given labels."""
        return StreamLoader([self.files[i] for i in np.asarray(indices, dtype=np.int64)], labels, **kw)


class BetonSource:
    """A ``.beton`` (and its class list) as labels and classes; :meth:`loader` makes an FFCVLoader."""

    kind = "beton"

    def __init__(self, path, indices=None):
        from .beton import classes_of, labels_of

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such .beton file")
        self.classes = classes_of(self.path)
        all_labels = labels_of(self.path)
        if all_labels.size and not 0 <= all_labels.min() <= all_labels.max() < len(self.classes):
            raise ValueError(f"{self.path}: labels outside [0, {len(self.classes)}) of its class list")
        self._all = all_labels
        self.indices = np.arange(len(all_labels)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.labels = all_labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, indices) -> "BetonSource":
        return BetonSource(self.path, self.indices[np.asarray(indices, dtype=np.int64)])

    def loader(self, indices, labels, *, train: bool, resolution, seed: int = 0, shard=(0, 1), **kw):
        """An FFCVLoader over the samples ``indices``, its labels mapped to ``labels`` (per sample)."""
        from .beton import FFCVLoader

        idx = self.indices[np.asarray(indices, dtype=np.int64)]
        remap = np.full(len(self.classes), -1, dtype=np.int64)  # original label -> the loader's label
        remap[self._all[idx]] = np.asarray(labels, dtype=np.int64)
        return FFCVLoader(self.path, train=train, resolution=resolution, seed=seed, indices=idx, remap=remap, **kw)


class StreamLoader:
    """Batches ``(images (B, 3, R, R) float32 normalised, labels (B,) int64)`` on ``device``, decoded from
    image files per batch (see the module docstring).

    Parameters
    ----------
    files, labels : the samples, in order.
    train : shuffled, random-resized crops and flips, last incomplete batch dropped (unless ``drop_last``
        says otherwise); else file order, centre crops, every sample.
    resolution : side R, or a function of the epoch (progressive resizing).
    shard : (rank, world): each batch is the global batch's ``rank``-th contiguous share (only that share is
        decoded); :attr:`sharded` tells the training loop not to shard again.
    workers : decoding threads (default: the CPUs this process may use, at most 16).
    """

    def __init__(
        self,
        files,
        labels,
        batch_size: int = 256,
        device="cpu",
        train: bool = True,
        resolution=224,
        seed: int = 0,
        drop_last: bool | None = None,
        shard=(0, 1),
        workers: int | None = None,
    ):
        self.files = list(files)
        self.device, self.train, self.seed = torch.device(device), bool(train), int(seed)
        self.labels = tensor_of(labels, self.device, torch.int64)
        if self.labels.numel() != len(self.files):
            raise ValueError(f"{self.labels.numel()} labels for {len(self.files)} images")
        self.batch_size = int(batch_size)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.resolution = resolution if callable(resolution) else (lambda epoch, r=int(resolution): r)
        self.rank, self.world = int(shard[0]), int(shard[1])
        if self.batch_size % self.world:
            raise ValueError(f"batch size {self.batch_size} does not split evenly over {self.world} processes")
        self.sharded = self.world > 1
        self.generator = torch.Generator(device=self.device)  # the loop seeds it for extra per-step draws
        n = workers if workers is not None else min(16, usable_cores())
        self._pool = ThreadPoolExecutor(max(1, n), thread_name_prefix="taskgeom-decode")
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="taskgeom-prefetch")
        self._pending: dict = {}
        self._order: tuple | None = None
        self._epoch = 0

    def __len__(self) -> int:
        n = len(self.files)
        return n // self.batch_size if self.drop_last and n >= self.batch_size else math.ceil(n / self.batch_size)

    def _positions(self, epoch: int, index: int) -> np.ndarray:
        order = self._order  # read once: the prefetch thread may replace it meanwhile
        if order is None or order[0] != epoch:
            n = len(self.files)
            rng = np.random.default_rng(seeding.epoch_seed(self.seed, epoch))
            order = self._order = (epoch, rng.permutation(n) if self.train else np.arange(n))
        pos = order[1][index * self.batch_size : (index + 1) * self.batch_size]
        if self.sharded:
            k = len(pos) // self.world
            pos = pos[self.rank * k : (self.rank + 1) * k]
        return pos

    def _load(self, epoch: int, index: int):
        """(uint8 images (B, 3, R, R), positions) of one batch, on the CPU."""
        pos = self._positions(epoch, index)
        res = int(self.resolution(epoch))
        if self.train:  # every draw of the global batch, made before decoding and before sharding
            rng = np.random.default_rng(seeding.batch_seed(self.seed, epoch, index))
            b = min(self.batch_size, len(self.files) - index * self.batch_size)
            u, flips = rng.random((b, 10, 4)), rng.random(b) < 0.5
            off = self.rank * len(pos) if self.sharded else 0
            draws = [(u[off + j], bool(flips[off + j])) for j in range(len(pos))]
        else:
            draws = [(None, False)] * len(pos)
        imgs = list(self._pool.map(lambda j: read_crop(self.files[pos[j]], res, *draws[j]), range(len(pos))))
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2), pos

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of epoch ``epoch`` (a pure function of seed, epoch and index); the next one is
        decoded in the background meanwhile."""
        fut = self._pending.pop((epoch, index), None)
        x, pos = fut.result() if fut is not None else self._load(epoch, index)
        for stale in self._pending.values():
            stale.cancel()
        self._pending.clear()
        nxt = (epoch, index + 1) if index + 1 < len(self) else ((epoch + 1, 0) if self.train else None)
        if nxt is not None:
            self._pending[nxt] = self._ahead.submit(self._load, *nxt)
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        return normalize(x), self.labels[torch.as_tensor(pos, device=self.device)]

    def __iter__(self):
        epoch = self._epoch
        self._epoch += 1
        for i in range(len(self)):
            yield self.batch(epoch, i)

    @property
    def images(self):
        raise ValueError(
            "this method needs the images in memory; streaming data (imagefolder, beton) trains the "
            "supervised and finetune methods only"
        )
