"""ImageNet-style data through FFCV (the optional ``ffcv`` extra).

FFCV needs system libraries before ``pip install "taskgeom[ffcv]"`` can build it::

    apt-get install -y libturbojpeg0-dev libopencv-dev pkg-config

:func:`write_beton` converts an ImageFolder-style directory (``root/<class>/<image>`` or
``root/<split>/<class>/<image>``) into a ``.beton`` file, decoding one image at a time, and records the
class names beside it. :class:`FFCVLoader` reads it back: random-resized crops and horizontal flips for
training, a centre crop for evaluation, moved to ``device`` and normalised as in Appendix A.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .._validate import tensor_of
from .augment import normalize
from .images import _IMAGE_EXT

__all__ = ["FFCVLoader", "classes_of", "labels_of", "write_beton"]

_INSTALL = (
    "FFCV support needs the 'ffcv' extra and its system libraries: apt-get install -y "
    "libturbojpeg0-dev libopencv-dev pkg-config && pip install 'taskgeom[ffcv]'"
)


@contextlib.contextmanager
def _torch_threads_kept():
    """FFCV sets torch's global thread count (to 1 when imported, to its worker count when a loader is made
    or iterated); put the caller's back afterwards. Results of torch CPU ops depend on it: a training run
    would otherwise stop reproducing itself bit for bit after FFCV was merely imported."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def _ffcv():
    try:
        with _torch_threads_kept():
            import ffcv  # noqa: F401
            import ffcv.loader  # noqa: F401 - sets the thread count on import
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return ffcv


class _Folder:
    """An indexed view of an ImageFolder directory: ``folder[i] = (H x W x 3 uint8 array, label)``."""

    def __init__(self, root: Path, split: str | None = None):
        base = root / split if split is not None and (root / split).is_dir() else root
        if not base.is_dir():
            raise FileNotFoundError(f"{base}: no such image folder")
        self.classes = sorted(p.name for p in base.iterdir() if p.is_dir())
        self.items = [
            (f, k)
            for k, c in enumerate(self.classes)
            for f in sorted((base / c).iterdir())
            if f.is_file() and f.suffix.lower() in _IMAGE_EXT
        ]
        if not self.items:
            raise ValueError(f"{base}: no images found (expected <class>/<image> with extensions {sorted(_IMAGE_EXT)})")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path, label = self.items[i]
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"), dtype=np.uint8), label
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable image ({exc})") from exc


def _classes_file(path: Path) -> Path:
    return path.with_name(path.name + ".classes.json")


def write_beton(
    source,
    path,
    split: str | None = None,
    max_resolution: int = 256,
    jpeg_quality: int = 90,
    write_mode: str = "smart",
    num_workers: int | None = None,
) -> Path:
    """Write an ImageFolder-style directory as an FFCV ``.beton`` file (and ``<path>.classes.json``).

    Parameters
    ----------
    source : directory laid out as ``<class>/<image>`` or ``<split>/<class>/<image>``.
    path : the ``.beton`` to write; it appears only once complete (written to a temporary name first).
    max_resolution : longer sides are resized down to this many pixels (FFCV's ``RGBImageField``).
    write_mode : ``"smart"`` (FFCV chooses JPEG or raw per image), ``"jpg"`` or ``"raw"``.

    Returns the path written. Labels are class indices in sorted class-name order, as in
    :func:`taskgeom.data.load_images`.
    """
    _ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    folder = _Folder(Path(source), split)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fields = {
        "image": RGBImageField(
            write_mode=write_mode, max_resolution=int(max_resolution), jpeg_quality=int(jpeg_quality)
        ),
        "label": IntField(),
    }
    workers = num_workers if num_workers is not None else max(1, min(8, os.cpu_count() or 1))
    try:
        DatasetWriter(str(tmp), fields, num_workers=workers).from_indexed_dataset(folder)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    _classes_file(out).write_text(json.dumps(folder.classes))
    return out


def labels_of(path) -> np.ndarray:
    """The labels (int64, in file order) of a ``.beton`` with a ``label`` field, read from its metadata
    without decoding any image."""
    _ffcv()
    from ffcv.reader import Reader

    try:
        reader = Reader(str(path))
    except Exception as exc:  # FFCV raises assorted errors on files that are not .beton files
        raise ValueError(
            f"{path}: not a readable .beton file ({type(exc).__name__}: {' '.join(str(exc).split())})"
        ) from exc
    if "label" not in reader.field_names:
        raise ValueError(f"{path}: no 'label' field (fields: {', '.join(reader.field_names)})")
    return np.asarray(reader.metadata[f"f{reader.field_names.index('label')}"], dtype=np.int64).reshape(-1)


def classes_of(path) -> list[str]:
    """Class names (index = label) recorded beside a ``.beton`` by :func:`write_beton`."""
    f = _classes_file(Path(path))
    if not f.exists():
        raise FileNotFoundError(f"{f}: no class list beside {path} (was it written by taskgeom.data.write_beton?)")
    return json.loads(f.read_text())


class FFCVLoader:
    """Batches ``(images, labels)`` from a ``.beton``: images ``(B, 3, R, R)`` float32 normalised to
    mean 0.5, std 0.25 (Appendix A) on ``device``, labels ``(B,)`` int64.

    Parameters
    ----------
    train : random-resized crop (scale 0.08-1, aspect 3/4-4/3) and horizontal flip, shuffled, last
        incomplete batch dropped; otherwise a centre crop (ratio 224/256) in file order, all samples.
    resolution : side R of the output images, or a function of the epoch (progressive resizing: the
        decoder's output size is set before each epoch, as FFCV's ImageNet recipe does).
    seed : FFCV's ``seed``: fixes the shuffled order of each epoch (``default_rng(seed + epoch)``), so
        :meth:`batch` holds the same samples on a resumed run; its augmentations draw from numba's own,
        unseeded generator, so crops and flips differ between runs.
    indices : the samples to read (default: all); remap : label map applied to the file's labels.

    The training loop's interface: ``batch(epoch, index)``, ``labels`` (of ``indices``, remapped),
    ``generator`` (unused by FFCV's draws) and ``sharded`` (False: a multi-process run shards each batch).
    """

    def __init__(
        self,
        path,
        batch_size: int = 256,
        device="cpu",
        train: bool = True,
        resolution: int = 224,
        seed: int = 0,
        num_workers: int | None = None,
        drop_last: bool | None = None,
        indices=None,
        remap=None,
    ):
        _ffcv()
        from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder, RandomResizedCropRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import RandomHorizontalFlip, Squeeze, ToDevice, ToTensor, ToTorchImage

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such .beton file")
        self.path, self.device, self.train = p, torch.device(device), bool(train)
        self.resolution = resolution if callable(resolution) else (lambda epoch, r=int(resolution): r)
        res = (int(self.resolution(0)),) * 2
        if self.train:
            self._decoder = RandomResizedCropRGBImageDecoder(res)
            image = [self._decoder, RandomHorizontalFlip()]
        else:
            self._decoder = CenterCropRGBImageDecoder(res, ratio=224 / 256)
            image = [self._decoder]
        image += [ToTensor(), ToDevice(self.device, non_blocking=True), ToTorchImage()]
        label = [IntDecoder(), ToTensor(), ToDevice(self.device, non_blocking=True), Squeeze()]
        workers = num_workers if num_workers is not None else max(1, min(8, os.cpu_count() or 1))
        with _torch_threads_kept():
            self._loader = Loader(
                str(p),
                batch_size=int(batch_size),
                num_workers=workers,
                order=OrderOption.RANDOM if self.train else OrderOption.SEQUENTIAL,
                drop_last=self.train if drop_last is None else bool(drop_last),
                pipelines={"image": image, "label": label},
                seed=int(seed),
                indices=None if indices is None else np.asarray(indices, dtype=np.int64),
            )
        self.classes = classes_of(p) if _classes_file(p).exists() else None
        self._remap = None if remap is None else tensor_of(remap, self.device, torch.int64)
        self.generator = torch.Generator(device=self.device)
        self.sharded = False
        self._it, self._next = None, None

    @property
    def labels(self) -> torch.Tensor:
        """The labels of the loader's samples in file order (remapped), on ``device``."""
        y = torch.as_tensor(labels_of(self.path)[self._loader.indices.astype(np.int64)]).to(self.device)
        return y if self._remap is None else self._remap[y]

    def _start(self, epoch: int):
        self._loader.next_epoch = int(epoch)  # FFCV's order of this epoch
        self._decoder.output_size = (int(self.resolution(epoch)),) * 2
        return iter(self)

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of epoch ``epoch``: read on from the current epoch when it is the next one, else
        (a resumed run) the epoch is started again and ``index`` batches are skipped."""
        if self._next != (epoch, index):
            if self._it is not None:
                self._it.close()
            self._it = self._start(epoch)
            for _ in range(index):
                next(self._it)
        out = next(self._it)
        self._next = (epoch, index + 1)
        return out

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        """While an epoch is being read, FFCV's workers hold torch's thread count at their number; the
        caller's count is restored when the epoch ends (or the iteration is abandoned)."""
        with _torch_threads_kept():
            self._decoder.output_size = (int(self.resolution(self._loader.next_epoch)),) * 2
            for x, y in self._loader:
                y = y.to(torch.int64).reshape(-1)
                yield normalize(x), (y if self._remap is None else self._remap[y])
