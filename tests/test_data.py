"""Datasets (folders, tar archives, the real CIFAR-10 tarballs), tasks, episodes and the device loader."""

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from taskgeom.data import (
    CIFAR10_CLASSES,
    CIFAR10_TASKS,
    DeviceLoader,
    EpisodeSampler,
    Task,
    episodes,
    load_images,
    load_tasks,
    union,
)

from testing import SHARED


def _png(rng, size=8) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_tar(path, classes=("cat", "dog", "eel"), per_class=3, split="train", evil=True):
    rng = np.random.default_rng(0)
    truth = {}
    with tarfile.open(path, "w:gz") as tf:
        for c in classes:
            for k in range(per_class):
                data = _png(rng)
                truth[(c, f"{k:04d}.png")] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                info = tarfile.TarInfo(f"{split}/{c}/{k:04d}.png")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        if evil:  # never extracted: a traversal path and a non-image are ignored
            for name, data in (("../../evil.png", _png(rng)), (f"{split}/cat/readme.txt", b"hello")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return truth


def test_tar_archive_is_read_in_memory_and_cached(tmp_path):
    truth = make_tar(tmp_path / "d.tar.gz")
    ds = load_images(tmp_path / "d.tar.gz", split="train", cache_dir=tmp_path / "cache")
    assert ds.classes == ["cat", "dog", "eel"] and len(ds) == 9
    assert ds.images.shape == (9, 8, 8, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images[4], truth[("dog", "0001.png")])
    assert list(ds.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert not (tmp_path.parent / "evil.png").exists()
    cached = load_images(tmp_path / "d.tar.gz", split="train", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(cached.images, ds.images)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    with pytest.raises(ValueError, match="no images"):
        load_images(tmp_path / "d.tar.gz", split="test", cache_dir=tmp_path / "cache")


def test_image_folder_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    for c in ("b", "a"):
        (tmp_path / "root" / c).mkdir(parents=True)
        for k in range(2):
            (tmp_path / "root" / c / f"{k}.png").write_bytes(_png(rng))
    ds = load_images(tmp_path / "root", use_cache=False)
    assert ds.classes == ["a", "b"] and len(ds) == 4
    (tmp_path / "root" / "a" / "9.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="a/9.png: not a readable image"):
        load_images(tmp_path / "root", use_cache=False)
    (tmp_path / "junk.tar.gz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable tar"):
        load_images(tmp_path / "junk.tar.gz", use_cache=False)
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "absent")


@pytest.mark.skipif(not (SHARED / "cifar10" / "test.tar.gz").exists(), reason="../shared/data/cifar10 absent")
def test_real_cifar10_test_split(tmp_path, monkeypatch):
    from taskgeom.data import images

    ds = load_images(SHARED / "cifar10" / "test.tar.gz", split="test", cache_dir=tmp_path)
    assert ds.images.shape == (10_000, 32, 32, 3)
    assert ds.classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(ds.labels), np.full(10, 1000))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(images, "_read_tar", no_decoding)  # decoded once, then read from the cache
    again = load_images(SHARED / "cifar10" / "test.tar.gz", split="test", cache_dir=tmp_path)
    np.testing.assert_array_equal(again.labels, ds.labels)
    np.testing.assert_array_equal(again.images[::997], ds.images[::997])
    vehicles = ds.subset(CIFAR10_TASKS["vehicles"].classes)
    assert len(vehicles) == 4000 and vehicles.classes == ["airplane", "automobile", "ship", "truck"]


def test_tasks_union_json_and_episodes(tmp_path):
    assert CIFAR10_TASKS["pets"].indices(CIFAR10_CLASSES) == [3, 5]
    u = union([CIFAR10_TASKS["vehicles"], CIFAR10_TASKS["pets"]])
    assert len(u.classes) == 6
    (tmp_path / "t.json").write_text('{"first": [0, 1, 2], "named": ["cat", "dog"]}')
    tasks = load_tasks(tmp_path / "t.json")
    assert tasks["first"].indices(CIFAR10_CLASSES) == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown class"):
        Task("x", ("cat", "unicorn")).indices(CIFAR10_CLASSES)
    with pytest.raises(ValueError, match="at least two"):
        Task("x", ("cat",))
    labels = np.repeat(np.arange(6), 20)
    eps = list(episodes(labels, way=5, shot=2, query=3, count=4, seed=1))
    assert len(eps) == 4
    for s_idx, s_y, q_idx, q_y in eps:
        assert len(s_idx) == 10 and len(q_idx) == 15
        assert not set(s_idx) & set(q_idx)
        assert sorted(set(s_y)) == list(range(5))
        # relabelled consistently: every support sample of episode label j shares one true class
        for j in range(5):
            assert len(set(labels[s_idx[s_y == j]]) | set(labels[q_idx[q_y == j]])) == 1
    with pytest.raises(ValueError, match="fewer than"):
        next(episodes(labels, way=2, shot=15, query=10, count=1))


def test_episode_sampler_draws_what_episodes_draws():
    """Protonet runs draw each step's episode from a sampler that indexes the labels once; its draws are the
    generator's (recorded runs resume with the same episodes), pinned here for one seed."""
    labels = np.random.default_rng(0).permutation(np.repeat([3, 7, 8, 9], 30))  # labels need not be 0..k-1
    sampler = EpisodeSampler(labels, way=3, shot=2, query=4)
    for seed in range(20):
        got, want = sampler(seed), next(episodes(labels, way=3, shot=2, query=4, count=1, seed=seed))
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, want))
    pinned = [a.tolist() for a in EpisodeSampler(np.repeat(np.arange(4), 6), 2, 1, 2)(3)]
    assert pinned == [[0, 12], [0, 1], [4, 5, 13, 16], [0, 0, 1, 1]]
    with pytest.raises(ValueError, match="5-way episodes from 4 classes"):
        EpisodeSampler(labels, way=5, shot=1, query=1)
    with pytest.raises(ValueError, match="fewer than"):
        EpisodeSampler(labels, way=2, shot=20, query=20)


def test_device_loader_batches_augmentation_and_normalisation():
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(50) % 5
    plain = DeviceLoader(imgs, labels, batch_size=16, shuffle=False, augment=False)
    batches = list(plain)
    assert len(batches) == 4 and batches[-1][0].shape == (2, 3, 8, 8)
    x0 = batches[0][0]
    torch.testing.assert_close(x0, (torch.as_tensor(imgs[:16]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25)
    shuffled = DeviceLoader(imgs, labels, batch_size=16, shuffle=True, augment=True, drop_last=True, seed=3)
    seen = torch.cat([y for _, y in shuffled])
    assert len(seen) == 48
    aug = DeviceLoader(imgs[:1].repeat(200, 0), labels[:1].repeat(200), batch_size=200, shuffle=False, seed=4)
    x, _ = next(iter(aug))
    src = torch.nn.functional.pad(torch.as_tensor(imgs[:1]).permute(0, 3, 1, 2).float(), (4, 4, 4, 4))
    src = (src / 255 - 0.5) / 0.25
    # every augmented sample is a crop of the padded image, possibly flipped; both flips occur
    crops = src.unfold(2, 8, 1).unfold(3, 8, 1)[0].permute(1, 2, 0, 3, 4).reshape(-1, 3, 8, 8)
    pad_value = (0 - 0.5) / 0.25
    flips = 0
    for k in range(200):
        d = (crops - x[k]).abs().amax((1, 2, 3))
        df = (crops - x[k].flip(2)).abs().amax((1, 2, 3))
        assert min(float(d.min()), float(df.min())) < 1e-6
        flips += float(df.min()) < 1e-6 and float(d.min()) > 1e-6
    assert 40 < flips < 160
    assert float(x.min()) >= pad_value - 1e-6
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(imgs.astype(np.float32), labels)


def test_reflect_padded_crops_and_alternating_flips():
    from taskgeom.data import pad_crop_flip

    rng = np.random.default_rng(5)
    x = torch.as_tensor(rng.integers(0, 256, (64, 3, 7, 9), dtype=np.uint8))
    g = torch.Generator().manual_seed(11)
    dy, dx = torch.randint(0, 7, (64,), generator=g), torch.randint(0, 7, (64,), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    padded = torch.nn.functional.pad(x.double(), (3, 3, 3, 3), mode="reflect")  # torch's reflection
    for fill, src in (("reflect", padded), ("zeros", torch.nn.functional.pad(x.double(), (3, 3, 3, 3)))):
        out = pad_crop_flip(x, torch.Generator().manual_seed(11), 3, fill)  # same draws: dy, dx, then flips
        assert out.dtype == torch.uint8
        for i in range(64):
            want = src[i, :, dy[i] : dy[i] + 7, dx[i] : dx[i] + 9]
            assert torch.equal(out[i].double(), want.flip(-1) if flip[i] else want)
    given = torch.arange(64) % 3 == 0  # flips given, not drawn
    out = pad_crop_flip(x, torch.Generator().manual_seed(11), 0, "reflect", given)
    assert torch.equal(out, torch.where(given[:, None, None, None], x.flip(-1), x))
    with pytest.raises(ValueError, match="larger than 7 px"):
        pad_crop_flip(x, g, 7, "reflect")
    with pytest.raises(ValueError, match="crop fill"):
        pad_crop_flip(x, g, 2, "wrap")
    with pytest.raises(ValueError, match="one entry per sample"):
        pad_crop_flip(x, g, 2, "zeros", given[:5])
    # alternating flips: with no crop (pad 0), each image is mirrored in exactly one of any two
    # consecutive epochs, whatever the order it comes in; a resumed loader draws the same
    imgs = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    imgs[:, :, 0] = 0  # a dark left column: mirrored when it is on the right
    labels = np.arange(40)
    loader = DeviceLoader(imgs, labels, batch_size=16, pad=0, flip="alternate", fill="reflect", seed=2)
    mirrored = []
    for epoch in range(4):
        m = np.zeros(40, bool)
        for i in range(len(loader)):
            xb, yb = loader.batch(epoch, i)
            m[yb.numpy()] = (xb[:, :, :, -1] == xb.min()).all((1, 2)).numpy()
        mirrored.append(m)
    assert 5 < mirrored[0].sum() < 35
    assert np.array_equal(mirrored[1], ~mirrored[0]) and np.array_equal(mirrored[2], mirrored[0])
    again = DeviceLoader(imgs, labels, batch_size=16, pad=0, flip="alternate", fill="reflect", seed=2)
    assert torch.equal(again.batch(3, 1)[0], loader.batch(3, 1)[0])
    with pytest.raises(ValueError, match="flip"):
        DeviceLoader(imgs, labels, flip="sometimes")
    with pytest.raises(ValueError, match="reflect padding"):
        DeviceLoader(imgs, labels, pad=8, fill="reflect")


def test_random_resized_crop_identity_flip_and_zoom():
    from taskgeom.data.loader import random_resized_crop

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 12, 16, generator=g)
    same = random_resized_crop(x, torch.Generator().manual_seed(1), scale=(1, 1), ratio=(4 / 3, 4 / 3), flip_p=0)
    torch.testing.assert_close(same, x, rtol=0, atol=1e-6)  # aspect W / H = 4/3 and full area: the whole image
    flipped = random_resized_crop(x, torch.Generator().manual_seed(1), scale=(1, 1), ratio=(4 / 3, 4 / 3), flip_p=1)
    torch.testing.assert_close(flipped, x.flip(3), rtol=0, atol=1e-6)
    # small crops of an image whose left half is 0 and right half is 1 zoom in: some outputs lie mostly
    # in one half, and every output is a monotone ramp along the width
    step = torch.zeros(200, 1, 8, 8)
    step[..., 4:] = 1
    out = random_resized_crop(step, torch.Generator().manual_seed(2), scale=(1 / 16, 1 / 16), ratio=(1, 1), flip_p=0)
    assert out.shape == step.shape
    rows = out[:, 0, 0]
    assert torch.all(rows[:, 1:] >= rows[:, :-1] - 1e-6)
    assert (rows.amax(1) < 0.5).any() and (rows.amin(1) > 0.5).any()
    # a pure function of the generator's seed
    a = random_resized_crop(x, torch.Generator().manual_seed(5))
    b = random_resized_crop(x, torch.Generator().manual_seed(5))
    c = random_resized_crop(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_k_class_tasks_are_seeded_size_matched_subsets():
    from taskgeom.data import DataConfig, load, random_task

    a, b = random_task("random6-s0", 10), random_task("random6-s0", 10)
    assert a == b and len(a) == 6 and len(set(a)) == 6 and a == sorted(a) and all(0 <= c < 10 for c in a)
    assert random_task("random6-s1", 10) != a and random_task("animals", 10) is None
    with pytest.raises(ValueError, match="2 to 10"):
        random_task("random11-s0", 10)
    data = load(DataConfig(data="digits"))
    assert data.task("random3-s2") == random_task("random3-s2", 10) and data.task("0-4") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        data.task("nope")
