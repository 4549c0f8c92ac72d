"""ImageNet-style data streamed from disk (issue 14, item 1): ImageFolder training through the command
line with progressive resizing, exact reruns and resumes, tasks files (JSON, YAML, WordNet ids), the
ImageNet preset, and clear errors. The .beton path is tested in tests/test_beton.py."""

import json

import numpy as np
import pytest
import torch

from taskgeom import cli
from taskgeom.data import DataConfig, ImageFolderSource, load, load_tasks, resolution_at
from taskgeom.data.stream import crop_box
from taskgeom.store import PredictionStore
from taskgeom.train import PRESETS, TrainConfig, apply_preset

from testing import WNIDS, make_image_folder

TINY = [
    "--arch", "small-cnn", "--epochs", "2", "--batch-size", "8", "--resolution", "32", "--min-res", "16",
    "--res-ramp", "0", "1", "--checkpoints", "3", "--device", "cpu", "--imprint-samples", "25",
]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imagenet"))


def _train(folder, store, *extra):
    argv = ["train", "--data", "imagefolder", "--data-path", str(folder), "--store", str(store), *TINY, *extra]
    assert cli.main(argv) == 0


def test_imagefolder_cli_records_the_val_split_and_reruns_exactly(folder, tmp_path, capsys):
    _train(folder, tmp_path / "a")
    assert "all/supervised/small-cnn/seed0@imagefolder-" in capsys.readouterr().out
    (traj,) = PredictionStore(tmp_path / "a").select()
    probs = np.asarray(traj.probs, dtype=np.float64)
    assert probs.shape == (len(traj), 4 * len(WNIDS), len(WNIDS)) and len(traj) >= 3
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=2e-2)
    assert traj.config["min_res"] == 16 and traj.config["res_ramp"] == [0, 1]
    _train(folder, tmp_path / "b")
    (again,) = PredictionStore(tmp_path / "b").select()
    np.testing.assert_array_equal(np.asarray(again.probs), np.asarray(traj.probs))


def test_imagefolder_resume_after_an_interruption_is_exact(folder, tmp_path, interrupt_saves):
    _train(folder, tmp_path / "ref")
    (ref,) = PredictionStore(tmp_path / "ref").select()
    arm, disarm = interrupt_saves
    arm(2)
    assert (
        cli.main(["train", "--data", "imagefolder", "--data-path", str(folder), "--store", str(tmp_path / "r"), *TINY])
        == 130
    )
    assert len(PredictionStore(tmp_path / "r").select()[0]) == 2
    disarm()
    _train(folder, tmp_path / "r")
    (resumed,) = PredictionStore(tmp_path / "r").select()
    np.testing.assert_array_equal(np.asarray(resumed.probs), np.asarray(ref.probs))


def test_stream_loader_batches_resolution_schedule_and_determinism(folder):
    src = ImageFolderSource(folder, "train")
    assert src.classes == WNIDS and len(src) == 50
    res = lambda e: resolution_at(e, 16, 32, (0, 1))  # noqa: E731
    a = src.loader(np.arange(50), src.labels, batch_size=8, train=True, resolution=res, seed=3)
    b = src.loader(np.arange(50), src.labels, batch_size=8, train=True, resolution=res, seed=3)
    assert len(a) == 6  # 50 // 8, the last incomplete batch dropped
    x0, y0 = a.batch(0, 2)
    x1, _ = a.batch(1, 0)
    assert x0.shape == (8, 3, 16, 16) and x1.shape == (8, 3, 32, 32) and x0.dtype == torch.float32
    assert torch.equal(b.batch(1, 0)[0], x1) and torch.equal(b.batch(0, 2)[0], x0)  # any order of calls
    ev = src.loader(np.arange(50), src.labels, batch_size=16, train=False, resolution=24)
    xs = [x for x, _ in ev]
    assert [len(x) for x in xs] == [16, 16, 16, 2] and xs[0].shape[-1] == 24
    assert torch.equal(torch.cat([y for _, y in ev]), torch.as_tensor(src.labels))
    with pytest.raises(ValueError, match="images in memory"):
        a.images  # noqa: B018
    halves = [
        src.loader(np.arange(50), src.labels, batch_size=8, train=True, resolution=res, seed=3, shard=(r, 2))
        for r in (0, 1)
    ]  # two processes of a multi-GPU run decode one half each of the same global batch
    assert halves[0].sharded and torch.equal(torch.cat([h.batch(0, 2)[0] for h in halves]), x0)


def test_resolution_schedule_and_crop_boxes():
    r = [resolution_at(e, 160, 224, (29, 34)) for e in range(40)]
    assert r[:30] == [160] * 30 and r[34:] == [224] * 6 and r == sorted(r)
    assert all(v % 32 == 0 for v in r)
    assert crop_box(100, 50, None) == pytest.approx((28.125, 3.125, 71.875, 46.875))
    rng = np.random.default_rng(0)
    for _ in range(200):
        w, h = (int(v) for v in rng.integers(20, 90, 2))
        x0, t, x1, b = crop_box(w, h, rng.random((10, 4)))
        assert 0 <= x0 < x1 <= w and 0 <= t < b <= h


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_tasks_file_with_wordnet_ids(folder, tmp_path, fmt, capsys):
    tasks = {"animals": WNIDS[:3], "artifacts": WNIDS[3:]}
    f = tmp_path / f"tasks.{fmt}"
    if fmt == "json":
        f.write_text(json.dumps(tasks))
    else:
        f.write_text("".join(f"{k}:\n" + "".join(f"  - {c}\n" for c in v) for k, v in tasks.items()))
    data = load(DataConfig(data="imagefolder", data_path=str(folder), tasks_file=str(f)))
    assert data.task("animals") == [0, 1, 2] and data.task("artifacts") == [3, 4]
    assert data.task("random3-s0") == data.task("random3-s0") and len(data.task("random3-s0")) == 3
    assert sorted(load_tasks(f, WNIDS)) == ["animals", "artifacts"]
    if fmt == "yaml":  # one run of a file's task through the command line
        _train(folder, tmp_path / "s", "--tasks-file", str(f), "--task", "artifacts", "--epochs", "1")
        (traj,) = PredictionStore(tmp_path / "s").select()
        assert traj.task == "artifacts" and traj.extra.get("classes", [3, 4]) == [3, 4]


def test_bad_input_is_a_one_line_error(folder, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dogs: [n02084071, n09999999]\n")
    with pytest.raises(ValueError, match=r"task 'dogs': unknown class 'n09999999'"):
        load_tasks(bad, WNIDS)
    (tmp_path / "notalist.json").write_text('{"dogs": "n02084071"}')
    with pytest.raises(ValueError, match="expected a list of class names"):
        load_tasks(tmp_path / "notalist.json")
    (tmp_path / "broken.yaml").write_text("a: [b\n")
    with pytest.raises(ValueError, match="not a valid YAML"):
        load_tasks(tmp_path / "broken.yaml")
    cases = [
        (["--data-path", str(tmp_path)], "expected train"),
        (["--data-path", str(folder), "--tasks-file", str(bad)], "unknown class 'n09999999'"),
        (["--data-path", str(folder), "--method", "simclr"], "images in memory"),
        (["--data-path", str(folder), "--min-res", "64"], "min_res (64) must not exceed resolution (32)"),
        ([], "needs --data-path"),
    ]
    for extra, message in cases:
        argv = ["train", "--data", "imagefolder", "--store", str(tmp_path / "e"), *TINY, *extra]
        assert cli.main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
    (folder / "train" / WNIDS[0] / "broken.jpg").write_bytes(b"not a jpeg")
    try:
        src = ImageFolderSource(folder, "train")
        ld = src.loader(np.arange(len(src)), src.labels, batch_size=64, train=False, resolution=16)
        with pytest.raises(ValueError, match="broken.jpg: not a readable image"):
            next(iter(ld))
    finally:
        (folder / "train" / WNIDS[0] / "broken.jpg").unlink()


def test_imagenet_preset_sets_appendix_a_and_yields_to_explicit_options():
    from taskgeom.cli import build_parser

    args = build_parser().parse_args(["train", "--lr", "0.05", "--preset", "imagenet-resnet50", "--epochs", "3"])
    cfg = apply_preset(TrainConfig(**{k: getattr(args, k) for k in ("preset", "lr", "epochs")}), args._explicit)
    assert cfg.lr == 0.05 and cfg.epochs == 3  # given explicitly, before or after --preset
    assert (cfg.arch, cfg.batch_size, cfg.label_smoothing) == ("resnet50", 512, 0.1)
    assert (cfg.min_res, cfg.resolution, tuple(cfg.res_ramp)) == (160, 224, (29, 34))
    full = apply_preset(TrainConfig(preset="imagenet-resnet50"))
    assert {k: getattr(full, k) for k in PRESETS["imagenet-resnet50"]} == PRESETS["imagenet-resnet50"]


def test_a_sweep_takes_the_preset_for_the_fields_it_does_not_give():
    from taskgeom.train.sweep import expand

    (run,) = expand({"fixed": {"preset": "imagenet-resnet50", "epochs": 2}, "grid": {"lr": [0.1]}, "seeds": [1]})
    cfg = run["config"]
    assert (cfg.arch, cfg.epochs, cfg.lr, cfg.seed, cfg.min_res) == ("resnet50", 2, 0.1, 1, 160)
    assert run["id"].startswith("all-supervised-resnet50-s1-")
    (other,) = expand({"fixed": {"preset": "imagenet-resnet50"}, "archs": ["small-cnn"]})
    assert other["config"].arch == "small-cnn" and other["config"].batch_size == 512


def test_runs_recorded_before_the_streaming_settings_existed_still_resume(tmp_path, capsys):
    import sqlite3

    argv = ["train", "--data", "digits", "--task", "0-4", "--arch", "small-cnn", "--epochs", "1"]
    argv += ["--checkpoints", "2", "--device", "cpu", "--imprint-samples", "100", "--store", str(tmp_path / "s")]
    assert cli.main(argv) == 0
    db = sqlite3.connect(tmp_path / "s" / "manifest.sqlite")
    (cfg,) = db.execute("SELECT config FROM trajectories").fetchone()
    old = {k: v for k, v in json.loads(cfg).items() if k not in ("preset", "resolution", "min_res", "res_ramp")}
    db.execute("UPDATE trajectories SET config=?", (json.dumps(old, sort_keys=True),))
    db.commit()
    db.close()
    capsys.readouterr()
    assert cli.main(argv) == 0  # resumed (nothing left to train), not a changed-settings error
    assert len(PredictionStore(tmp_path / "s").select()) == 1
    assert cli.main([*argv, "--resolution", "64"]) != 0
    assert "resolution" in capsys.readouterr().err
