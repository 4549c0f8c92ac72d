"""FFCV .beton files: writing from an ImageFolder and loading with random-resized crops and flips.

Skips where FFCV is not installed, unless TASKGEOM_REQUIRE_FFCV=1 (set by .ci/run, which installs it)."""

import importlib.util
import os

import hypothesis  # noqa: F401 - imported before FFCV's threads run: CPython 3.11's ast.parse (pytest's
import numpy as np  # assertion rewriting of the lazily imported plugin) can raise a spurious SystemError
import pytest  # after them (python/cpython#106905)
import torch
from PIL import Image

# (found, not imported: importing ffcv itself sets torch's global thread count, which the other tests'
# bit-for-bit reproducibility depends on; taskgeom's FFCV support imports it with the count kept)
if os.environ.get("TASKGEOM_REQUIRE_FFCV") != "1" and importlib.util.find_spec("ffcv") is None:
    pytest.skip("FFCV is an optional extra", allow_module_level=True)

from taskgeom.data.beton import FFCVLoader, classes_of, write_beton  # noqa: E402

# numba's dispatcher finalizers (inside FFCV) raise ignorable KeyErrors when collected
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CLASSES = ["cat", "dog", "truck"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny ImageFolder: 3 classes x 6 images of different sizes, JPEG and PNG, each class a distinct
    colour so that labels can be checked against the pixels after cropping and flipping."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    colours = {"cat": (220, 30, 30), "dog": (30, 220, 30), "truck": (30, 30, 220)}
    for c in CLASSES:
        (root / c).mkdir()
        for i in range(6):
            h, w = 40 + 7 * i, 64 - 3 * i
            img = np.clip(np.array(colours[c]) + rng.integers(-15, 16, (h, w, 3)), 0, 255).astype(np.uint8)
            img[: h // 4, : w // 4] = 255  # an asymmetric corner, so flips and crops change the image
            Image.fromarray(img).save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def beton(folder, tmp_path_factory):
    return write_beton(folder, tmp_path_factory.mktemp("beton") / "tiny.beton", max_resolution=48, num_workers=1)


def test_write_records_classes_and_nothing_partial(beton):
    assert beton.is_file() and beton.stat().st_size > 0
    assert classes_of(beton) == CLASSES
    assert not beton.with_name(beton.name + ".tmp").exists()


def test_eval_loader_file_order_centre_crop(beton):
    loader = FFCVLoader(beton, batch_size=4, train=False, resolution=24, num_workers=1)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (18, 3, 24, 24) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == [k for k in range(3) for _ in range(6)]
    # normalised as in Appendix A: (v / 255 - 0.5) / 0.25 lies in [-2, 2]; each class's colour dominates
    assert float(x.min()) >= -2 and float(x.max()) <= 2
    channel_means = x.mean(dim=(2, 3))
    assert torch.equal(channel_means.argmax(1), y)
    assert loader.classes == CLASSES and len(loader) == 5
    again = torch.cat([b for b, _ in FFCVLoader(beton, batch_size=4, train=False, resolution=24, num_workers=1)])
    assert torch.equal(x, again)


def test_train_loader_random_resized_crop_and_flip(beton):
    def epoch(seed):
        loader = FFCVLoader(beton, batch_size=4, train=True, resolution=16, seed=seed, num_workers=1)
        return [(x.clone(), y.clone()) for x, y in loader]

    first = epoch(0)
    assert len(first) == 4  # 18 samples, incomplete last batch dropped
    x = torch.cat([b for b, _ in first])
    y = torch.cat([b for _, b in first])
    assert x.shape == (16, 3, 16, 16)
    assert y.tolist() != sorted(y.tolist())  # shuffled order
    assert torch.equal(x.mean(dim=(2, 3)).argmax(1), y)  # crops keep each image's own class colour
    # FFCV's seed fixes the order; its numba augmentations draw from an unseeded generator
    assert [c.tolist() for _, c in epoch(0)] == [c.tolist() for _, c in first], "same seed, same order"
    assert [c.tolist() for _, c in epoch(1)] != [c.tolist() for _, c in first]
    again = torch.cat([b for b, _ in epoch(0)])
    assert not torch.equal(x, again)  # fresh crops and flips


def test_torch_thread_count_is_left_alone(beton):
    """FFCV sets torch's global thread count when imported and when a loader is made or read; the run
    that imports taskgeom's FFCV support must keep its own (CPU results depend on it)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # FFCV will set its worker count, 2
        loader = FFCVLoader(beton, batch_size=4, train=False, resolution=16, num_workers=2)
        assert torch.get_num_threads() == 1
        for _ in loader:
            pass
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_clear_errors(tmp_path, beton):
    with pytest.raises(FileNotFoundError, match="no such image folder"):
        write_beton(tmp_path / "missing", tmp_path / "x.beton")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images found"):
        write_beton(tmp_path / "empty", tmp_path / "x.beton")
    with pytest.raises(FileNotFoundError, match="no such .beton"):
        FFCVLoader(tmp_path / "nope.beton")
    with pytest.raises(FileNotFoundError, match="no class list"):
        classes_of(tmp_path / "nope.beton")


def test_cli_writes_beton(folder, tmp_path, capsys):
    from taskgeom.cli import main

    assert main(["beton", str(folder), str(tmp_path / "cli.beton"), "--max-resolution", "32", "--workers", "1"]) == 0
    assert "cli.beton" in capsys.readouterr().out
    assert classes_of(tmp_path / "cli.beton") == CLASSES
    assert main(["beton", str(tmp_path / "missing"), str(tmp_path / "x.beton")]) == 1
    assert "no such image folder" in capsys.readouterr().err


def test_train_cli_on_beton_files(tmp_path, capsys):
    """`taskgeom train --data beton` end to end: train.beton and val.beton written from a generated
    ImageNet-style folder (WordNet-id classes), a random-k task, progressive resizing, the val split
    recorded; batches hold the same samples whichever order they are asked for (exact order on resume)."""
    from taskgeom import cli
    from taskgeom.data.stream import BetonSource
    from taskgeom.store import PredictionStore

    from testing import WNIDS, make_image_folder

    folder = make_image_folder(tmp_path / "folder")
    for split in ("train", "val"):
        write_beton(folder, tmp_path / "b" / f"{split}.beton", split=split, max_resolution=64, num_workers=1)
    src = BetonSource(tmp_path / "b" / "train.beton")
    assert src.classes == WNIDS and np.bincount(src.labels).tolist() == [10] * 5
    a = src.loader(np.arange(50), src.labels, train=True, resolution=lambda e: 16 if e == 0 else 24, batch_size=8)
    x0, y0 = a.batch(0, 0)
    x, y = a.batch(1, 2)  # the decoder's output size follows the epoch's resolution
    assert x0.shape == (8, 3, 16, 16) and x.shape == (8, 3, 24, 24)
    assert torch.equal(a.batch(0, 0)[1], y0) and torch.equal(a.batch(1, 2)[1], y)  # same samples, any order
    argv = ["train", "--data", "beton", "--data-path", str(tmp_path / "b"), "--store", str(tmp_path / "s")]
    argv += ["--task", "random3-s0", "--arch", "small-cnn", "--epochs", "2", "--batch-size", "8", "--device", "cpu"]
    argv += ["--resolution", "32", "--min-res", "16", "--res-ramp", "0", "1", "--checkpoints", "3"]
    assert cli.main(argv) == 0
    assert "random3-s0/supervised/small-cnn/seed0@beton-b-val-20-seed0" in capsys.readouterr().out
    (traj,) = PredictionStore(tmp_path / "s").select()
    probs = np.asarray(traj.probs, dtype=np.float64)
    assert probs.shape == (len(traj), 20, 5) and len(traj) >= 3
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=2e-2)
