"""bench/bench_train.py (issue 16's fast-training benchmark) on the CPU: its --smoke mode runs the GPU
run's code path with the fast recipes' settings from the command line, and its test-time augmentation moves
images the way it says."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _module():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_train", BENCH / "bench_train.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def test_settings_and_shifts():
    m = _module()
    assert m._settings(["bn_scale=false", "lookahead=5", "weight_decay=1.5e-3", "conv_init=dirac"]) == {
        "bn_scale": False,
        "lookahead": 5,
        "weight_decay": 1.5e-3,
        "conv_init": "dirac",
    }
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    down = m._shift(x, 1)  # content moves down and right by one pixel
    assert torch.equal(down[..., 1:, 1:], x[..., :-1, :-1])
    up = m._shift(x, -1)
    assert torch.equal(up[..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(down[..., 0, 1:], x[..., 1, :-1])  # the edge row reflected
    for spec in m.FAST_SWEEP:  # every default run names real settings
        epochs, lr, *extra = spec.split(":")
        m.TrainConfig(**{**m.FAST, **m._settings(extra), "epochs": int(epochs), "lr": float(lr)})
    for spec in m.WRN_SWEEP:
        m.TrainConfig(**{**m.WRN, **(m._settings(spec.split(":")) if spec else {})})
    assert len(set(m.FAST_SWEEP)) == len(m.FAST_SWEEP)


def test_concurrency_sweep_is_a_valid_sweep(tmp_path):
    """The concurrency stage's sweep (every fast-resnet setting of the defaults, with the GPU run's common
    settings) passes the sweep's checks: arch, method and seed in its lists, not among the fixed settings
    (which a sweep refuses; the stage failed so on every GPU run before)."""
    from taskgeom.train.sweep import check_spec, expand

    m = _module()
    common = dict(device="cpu", checkpoints=20, imprint_samples=5000, seed=0)
    for spec in m.FAST_SWEEP:
        epochs, lr, *extra = spec.split(":")
        settings = {**m.FAST, **common, **m._settings(extra), "epochs": min(int(epochs), 12), "lr": float(lr)}
        sweep = m.sweep_spec(settings, tmp_path, 4)
        check_spec(sweep)
        jobs = expand(sweep)
        assert sorted(j["config"].seed for j in jobs) == [0, 1, 2, 3]
        assert all(j["config"].arch == m.FAST["arch"] and j["config"].lr == float(lr) for j in jobs)
        assert all(j["config"].method == m.FAST.get("method", "supervised") for j in jobs)


def test_smoke_run_with_the_recipe_settings(tmp_path):
    out = tmp_path / "train.json"
    spec = "1:1.5:" + _module()._AIRBENCH  # every piece of the fast recipes at once
    subprocess.run(
        [sys.executable, "bench_train.py", "--smoke", "--json", str(out), "--skip", "wrn,concurrent", "--fast", spec],
        cwd=BENCH,
        check=True,
        capture_output=True,
        timeout=300,
    )
    res = json.loads(out.read_text())
    (row,) = res["fast"]
    assert row["settings"]["bn_scale"] is False and row["settings"]["lookahead"] == 5
    assert row["settings"]["flip"] == "alternate" and row["settings"]["whiten_bias_epochs"] == 3
    assert row["checkpoints_recorded"] >= 2  # one training step on the tiny data: its start and its end
    for key in ("head_accuracy", "flip_tta_accuracy", "translate_tta_accuracy"):
        assert 0.0 <= row[key] <= 1.0
