"""Augmentations, batched on the device: crop-and-flip for supervised training (Appendix A),
random-resized crops, colour jitter and cutout for the contrastive and semi-supervised methods, and the
normalisation of Appendix A. Every random draw comes from the generator passed in, so results are a
function of its seed."""

from __future__ import annotations

import math

import torch

from ..choices import FILLS, FLIPS  # noqa: F401 (the names, importable from here too)

__all__ = [
    "MEAN",
    "STD",
    "FILLS",
    "FLIPS",
    "normalize",
    "pad_crop_flip",
    "random_resized_crop",
    "color_jitter",
    "cutout",
]

MEAN, STD = 0.5, 0.25

#: Paddings of :func:`pad_crop_flip`'s crops, and the flip schedules of the training loader
#: (:class:`taskgeom.data.DeviceLoader`).


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 with mean 0.5, std 0.25 (Appendix A): (x / 255 - 0.5) / 0.25."""
    return (x_uint8.float() / 255.0 - MEAN) / STD


def pad_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator,
    pad: int,
    fill: str = "zeros",
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-sample random crop of the image padded by ``pad`` pixels each side and random horizontal flip,
    as one gather, of a batch ``x`` laid out (B, C, H, W) (any dtype). ``fill``: the padding, ``"zeros"``
    (black) or ``"reflect"`` (the image mirrored about its edge pixels, as the WRN paper's and the fast
    recipes' crops; needs ``pad`` below the image's sides).
    ``flip``: which samples to mirror (a boolean tensor of the batch's size); none: each with probability
    1/2 from ``generator``, drawn after the crop offsets."""
    if fill not in FILLS:
        raise ValueError(f"crop fill must be one of {', '.join(FILLS)}, got {fill!r}")
    if x.dim() != 4:
        raise ValueError(f"x must be a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    b, _, h, w = x.shape
    if flip is not None and not (isinstance(flip, torch.Tensor) and flip.dtype == torch.bool):
        raise ValueError(f"flip must be a boolean tensor (which samples to mirror) or None, got {flip!r}")
    if flip is not None and flip.shape != (b,):
        raise ValueError(f"flip must have one entry per sample ({b}), got shape {tuple(flip.shape)}")
    p = int(pad)
    if fill == "reflect" and p >= min(h, w):
        raise ValueError(f"reflect padding of {p} px needs images larger than {p} px, got {h} x {w}")
    dy = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1), padded coordinates
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    bidx = torch.arange(b, device=x.device)[:, None, None, None]
    cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    if fill == "zeros":
        out = torch.nn.functional.pad(x, (p, p, p, p))[bidx, cidx, rows, cols]
    else:  # reflect: padded coordinate i is image coordinate |i - p| folded back at the far edge

        def fold(i, n):
            i = (i - p).abs()
            return torch.where(i > n - 1, 2 * (n - 1) - i, i)

        out = x[bidx, cidx, fold(rows, h), fold(cols, w)]
    if flip is None:
        flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], out.flip(3), out)


def random_resized_crop(
    x: torch.Tensor, generator: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5
) -> torch.Tensor:
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


def color_jitter(x: torch.Tensor, g: torch.Generator, strength: float = 0.4, gray_p: float = 0.2) -> torch.Tensor:
    """Random brightness, contrast, saturation per sample and random grayscale, on normalised images."""
    b = x.shape[0]
    img = x * STD + MEAN  # back to [0, 1]

    def factor():
        return 1 + strength * (2 * torch.rand(b, 1, 1, 1, device=x.device, generator=g) - 1)

    img = img * factor()
    mean = img.mean((1, 2, 3), keepdim=True)
    img = (img - mean) * factor() + mean
    gray = img.mean(1, keepdim=True)
    img = (img - gray) * factor() + gray
    to_gray = torch.rand(b, 1, 1, 1, device=x.device, generator=g) < gray_p
    img = torch.where(to_gray, gray.expand_as(img), img)
    return (img.clamp(0, 1) - MEAN) / STD


def cutout(x: torch.Tensor, g: torch.Generator, size: int | None = None) -> torch.Tensor:
    """Zero a random square (side ``size``, default a quarter of the height) of each image."""
    b, _, h, w = x.shape
    size = size or max(1, h // 4)
    cy = torch.randint(0, h, (b,), device=x.device, generator=g)[:, None, None]
    cx = torch.randint(0, w, (b,), device=x.device, generator=g)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    hole = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(hole[:, None], 0.0)
