"""A loader for small image datasets that lives on the device: the uint8 images are moved once, and
shuffling (``randperm`` on the device), 4-pixel padding with random crops, horizontal flips and the
normalisation to mean 0.5, std 0.25 of Appendix A are batched tensor operations."""

from __future__ import annotations

import math

import torch

from .. import seeding
from .._validate import tensor_of
from .augment import FILLS, FLIPS, MEAN, STD, normalize, pad_crop_flip, random_resized_crop

__all__ = ["DeviceLoader", "FLIPS", "normalize", "random_resized_crop"]


class DeviceLoader:
    """Iterate over (images, labels) batches of a dataset kept on ``device``.

    Parameters
    ----------
    images : (N, H, W, 3) uint8 array or tensor; labels : (N,) integers.
    augment : random crop of the padded image and horizontal flip, per sample.
    pad : padding of the random crop in pixels (default: H / 8, i.e. 4 for 32 x 32 CIFAR as in Appendix A).
    fill : the crops' padding, ``"zeros"`` (black) or ``"reflect"`` (mirrored edges).
    flip : ``"random"`` (each image mirrored with probability 1/2 in every batch) or ``"alternate"`` (each
        image mirrored in every other epoch, starting mirrored or not at random: every image is seen both
        ways in any two consecutive epochs, as in the fastest published CIFAR-10 trainings).
    drop_last : drop the final incomplete batch (training) or keep it (evaluation).
    """

    def __init__(
        self,
        images,
        labels,
        batch_size: int = 256,
        device="cpu",
        shuffle: bool = True,
        augment: bool = True,
        pad: int | None = None,
        drop_last: bool = False,
        seed: int = 0,
        fill: str = "zeros",
        flip: str = "random",
    ):
        imgs = tensor_of(images)
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or imgs.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {tuple(imgs.shape)} {imgs.dtype}")
        self.device = torch.device(device)
        self.images = imgs.permute(0, 3, 1, 2).contiguous().to(self.device)  # (N, 3, H, W), moved once
        self.labels = tensor_of(labels, self.device, torch.int64)
        if self.labels.numel() != self.images.shape[0]:
            raise ValueError(f"{self.labels.numel()} labels for {self.images.shape[0]} images")
        pad = max(1, round(self.images.shape[2] / 8)) if pad is None else int(pad)
        self.batch_size, self.shuffle, self.augment, self.pad, self.drop_last = (
            batch_size,
            shuffle,
            augment,
            pad,
            drop_last,
        )
        if fill not in FILLS:
            raise ValueError(f"crop fill must be one of {', '.join(FILLS)}, got {fill!r}")
        if flip not in FLIPS:
            raise ValueError(f"flip must be one of {', '.join(FLIPS)}, got {flip!r}")
        if augment and fill == "reflect" and pad >= min(self.images.shape[2:]):
            raise ValueError(f"reflect padding of {pad} px needs images larger than {pad} px")
        self.fill, self.flip = fill, flip
        self.seed = int(seed)
        self._base_flip = None
        if flip == "alternate":
            g = torch.Generator(device=self.device).manual_seed(seeding.flip_seed(self.seed))
            self._base_flip = torch.rand(self.images.shape[0], device=self.device, generator=g) < 0.5
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self._epoch = 0
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def augment_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """This loader's crop-and-flip augmentation of a normalised batch (its padding: the normalised black
        pixel or reflected edges; flips at random), drawing from :attr:`generator` (seed it first for
        reproducible draws)."""
        pad_value = (0.0 - MEAN) / STD
        return pad_crop_flip(x - pad_value, self.generator, self.pad, self.fill) + pad_value

    def augmented(self, indices) -> torch.Tensor:
        """The images at ``indices``, normalised and augmented (crop and flip) with :attr:`generator`."""
        idx = torch.as_tensor(indices, device=self.device)
        return self.augment_normalized(normalize(self.images[idx]))

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of epoch ``epoch``. Shuffling and augmentation are pure functions of
        (seed, epoch, index), so a resumed run sees exactly the batches an uninterrupted one would."""
        n = self.images.shape[0]
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator(device=self.device).manual_seed(seeding.epoch_seed(self.seed, epoch))
            order = (
                torch.randperm(n, device=self.device, generator=g)
                if self.shuffle
                else torch.arange(n, device=self.device)
            )
            self._order = (epoch, order)
        idx = self._order[1][index * self.batch_size : (index + 1) * self.batch_size]
        x = self.images[idx]
        if self.augment:
            self.generator.manual_seed(seeding.batch_seed(self.seed, epoch, index))
            flip = None if self._base_flip is None else self._base_flip[idx] ^ bool(epoch % 2)
            x = pad_crop_flip(x, self.generator, self.pad, self.fill, flip)
        return normalize(x), self.labels[idx]

    def __iter__(self):
        epoch = self._epoch
        self._epoch += 1
        for i in range(len(self)):
            yield self.batch(epoch, i)
