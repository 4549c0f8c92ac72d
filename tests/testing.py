"""Shared test matrix: dtypes, devices, per-dtype tolerances and seeded model generators."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import taskgeom as tg

CUDA = torch.cuda.is_available() and tg.build_info()["cuda"]
requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a GPU and taskgeom._cuda")

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
BACKENDS = ["cpu"] + (["cuda"] if CUDA else [])
DEVICE_BACKENDS = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=requires_cuda)]

#: relative tolerance of a kernel against the float64 reference computed on the same stored values
RTOL = {torch.float64: 1e-6, torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def models(m: int, n: int, c: int, seed: int = 0, scale: float = 2.0, dtype=torch.float32) -> torch.Tensor:
    """m random models (m, n, c): softmax of Gaussian logits, stored in ``dtype`` and renormalised
    in float64 first so that low-precision storage still sums to one within its tolerance."""
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(m, n, c, generator=g, dtype=torch.float64)
    return torch.softmax(logits, -1).to(dtype)


def nearby(n: int, c: int, noise: float, seed: int = 0, count: int = 2) -> torch.Tensor:
    """``count`` models whose logits differ by Gaussian noise of size ``noise`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    base = 2 * torch.randn(n, c, generator=g, dtype=torch.float64)
    logits = base[None] + noise * torch.randn(count, n, c, generator=g, dtype=torch.float64)
    return torch.softmax(logits, -1)


def labels(n: int, c: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def geodesic_length_p0_truth(c: int) -> float:
    return math.sqrt(2) * math.acos(1 / math.sqrt(c))


def to_device(x: torch.Tensor, backend: str) -> torch.Tensor:
    return x.cuda() if backend == "cuda" else x


def assert_rel_close(actual, expected, rtol: float, atol: float = 0.0, what: str = ""):
    a = np.asarray(torch.as_tensor(actual).cpu(), dtype=np.float64)
    e = np.asarray(torch.as_tensor(expected).cpu(), dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e)
    bound = atol + rtol * np.abs(e)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else ()
    assert np.all(err <= bound), (
        f"{what}: worst at {worst}: {a[worst]!r} vs {e[worst]!r} (rel {err[worst] / max(abs(e[worst]), 1e-300):.3g})"
    )


def read_only_memmap(path, a: np.ndarray) -> np.memmap:
    """Write ``a`` to a raw file and map it back read-only (a prediction file as users have them)."""
    mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    mm[:] = a
    mm.flush()
    del mm
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


#: WordNet ids used as the class folders of the generated ImageFolders (tench, dog, domestic cat,
#: electric fan, racer): the layout of ImageNet's folders.
WNIDS = ["n01440764", "n02084071", "n02121808", "n03271574", "n04037443"]


def make_image_folder(root: Path, per_class=(10, 4), seed: int = 0) -> Path:
    """A small ImageNet-style folder: ``train/<wnid>/`` and ``val/<wnid>/`` with ``per_class`` images of
    each of the 5 classes, sides 40-70 px, JPEG and PNG, each class a distinct mean colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, (len(WNIDS), 3))
    for split, n in zip(("train", "val"), per_class):
        for k, wnid in enumerate(WNIDS):
            d = root / split / wnid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(40, 71, 2))
                img = np.clip(colours[k] + rng.integers(-25, 26, (h, w, 3)), 0, 255).astype(np.uint8)
                img[: h // 4, : w // 4] = 255  # an asymmetric corner: flips and crops change the image
                Image.fromarray(img).save(d / f"{i}.{'png' if i % 3 == 0 else 'jpg'}")
    return root
