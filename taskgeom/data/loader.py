"""A loader for small image datasets that lives on the device: the uint8 images are moved once, and
shuffling (``randperm`` on the device), 4-pixel padding with random crops, horizontal flips and the
normalisation to mean 0.5, std 0.25 of Appendix A are batched tensor operations."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["DeviceLoader", "normalize", "random_resized_crop"]

MEAN, STD = 0.5, 0.25


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 with mean 0.5, std 0.25 (Appendix A): (x / 255 - 0.5) / 0.25."""
    return (x_uint8.float() / 255.0 - MEAN) / STD


def random_resized_crop(x: torch.Tensor, generator: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3),
                        flip_p: float = 0.5) -> torch.Tensor:
    """Per-sample random-resized crops with random horizontal flips (SimCLR's augmentation), as one
    batched bilinear ``grid_sample``.

    Each crop covers a fraction ``s ~ U(scale)`` of the image area with aspect ratio (width / height in
    pixels) ``exp(U(log ratio))``
    (clipped to the image), is placed uniformly inside the image and resized back to ``H x W``. Every
    draw comes from ``generator``, so the result is a function of its seed. ``scale = ratio = (1, 1)``
    with ``flip_p = 0`` returns ``x``. The default scale (0.2, 1) is the usual choice for 32 x 32 images.
    """
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(float(scale[0]), float(scale[1]), generator=generator)
    log_r = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    r = torch.exp(log_r) * (h / w)  # crop aspect (width / height in pixels) in units of the image sides
    cw = torch.sqrt(area * r).clamp(max=1.0)  # crop width as a fraction of the image width
    ch = torch.sqrt(area / r).clamp(max=1.0)
    cx = (2 * torch.rand(b, device=dev, generator=generator) - 1) * (1 - cw)  # centre, normalised coordinates
    cy = (2 * torch.rand(b, device=dev, generator=generator) - 1) * (1 - ch)
    sign = torch.where(torch.rand(b, device=dev, generator=generator) < flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = (cw * sign).to(x.dtype), cx.to(x.dtype)
    theta[:, 1, 1], theta[:, 1, 2] = ch.to(x.dtype), cy.to(x.dtype)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class DeviceLoader:
    """Iterate over (images, labels) batches of a dataset kept on ``device``.

    Parameters
    ----------
    images : (N, H, W, 3) uint8 array or tensor; labels : (N,) integers.
    augment : random crop of the zero-padded image and random horizontal flip, per sample.
    pad : padding of the random crop in pixels (default: H / 8, i.e. 4 for 32 x 32 CIFAR as in Appendix A).
    drop_last : drop the final incomplete batch (training) or keep it (evaluation).
    """

    def __init__(self, images, labels, batch_size: int = 256, device="cpu", shuffle: bool = True,
                 augment: bool = True, pad: int | None = None, drop_last: bool = False, seed: int = 0):
        imgs = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or imgs.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {tuple(imgs.shape)} {imgs.dtype}")
        self.device = torch.device(device)
        self.images = imgs.permute(0, 3, 1, 2).contiguous().to(self.device)  # (N, 3, H, W), moved once
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(self.device)
        if self.labels.numel() != self.images.shape[0]:
            raise ValueError(f"{self.labels.numel()} labels for {self.images.shape[0]} images")
        pad = max(1, round(self.images.shape[2] / 8)) if pad is None else int(pad)
        self.batch_size, self.shuffle, self.augment, self.pad, self.drop_last = batch_size, shuffle, augment, pad, drop_last
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self._epoch = 0
        self._order: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        n = self.images.shape[0]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=self.generator)
        dx = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=self.generator)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        bidx = torch.arange(b, device=x.device)[:, None, None, None]
        cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        out = padded[bidx, cidx, rows, cols]
        flip = torch.rand(b, device=x.device, generator=self.generator) < 0.5
        return torch.where(flip[:, None, None, None], out.flip(3), out)

    def _augment_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Crop-and-flip augmentation of a normalised batch (padding with the normalised zero pixel)."""
        pad_value = (0.0 - MEAN) / STD
        return self._augment(x - pad_value) + pad_value

    def batch(self, epoch: int, index: int):
        """Batch ``index`` of epoch ``epoch``. Shuffling and augmentation are pure functions of
        (seed, epoch, index), so a resumed run sees exactly the batches an uninterrupted one would."""
        n = self.images.shape[0]
        if self._order is None or self._order[0] != epoch:
            g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, device=self.device, generator=g) if self.shuffle else torch.arange(n, device=self.device)
            self._order = (epoch, order)
        idx = self._order[1][index * self.batch_size:(index + 1) * self.batch_size]
        x = self.images[idx]
        if self.augment:
            self.generator.manual_seed((self.seed * 1_000_003 + epoch) * 100_003 + index)
            x = self._augment(x)
        return normalize(x), self.labels[idx]

    def __iter__(self):
        epoch = self._epoch
        self._epoch += 1
        for i in range(len(self)):
            yield self.batch(epoch, i)
