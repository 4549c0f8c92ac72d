"""Training methods, recording into the store, and resume after a kill (tiny runs on digits)."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from taskgeom.store import PredictionStore
from taskgeom.train import METHODS, TrainConfig, train


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    img = (d.images / 16 * 255).astype(np.uint8)[..., None].repeat(3, -1)  # (N, 8, 8, 3)
    y = d.target.astype(np.int64)
    return (img[:1200], y[:1200]), (img[1200:], y[1200:])


def run(tmp_path, method, epochs=1, checkpoints=3, name="s", task=None, **kw):
    (xtr, ytr), (xte, yte) = digits()
    store = PredictionStore(tmp_path / name, create=True)
    store.add_eval_set("digits", yte, c=10)
    settings = dict(
        method=method,
        arch="small-cnn",
        epochs=epochs,
        batch_size=64,
        checkpoints=checkpoints,
        device="cpu",
        episodes_per_epoch=10,
        way=5,
        shot=2,
        query=3,
        labelled=200,
        imprint_samples=600,
    )
    cfg = TrainConfig(**{**settings, **kw})
    classes = list(range(10)) if task is None else list(task)
    traj = train(cfg, classes, (xtr, ytr), (xte, yte), store, "digits", "all" if task is None else "part",
                 progress_bar=False)  # fmt: skip
    return store, traj


@pytest.mark.parametrize("method", [m for m in METHODS if m != "finetune"])
def test_each_method_trains_and_records(tmp_path, method):
    store, traj = run(tmp_path, method, imprint_head="euclidean" if method == "protonet" else "cosine")
    probs = np.asarray(traj.probs, dtype=np.float64)
    assert probs.shape[0] >= 3 and probs.shape[1:] == (597, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=2e-2)
    cps = traj.checkpoints
    assert [c["idx"] for c in cps] == list(range(len(cps)))
    assert cps[-1]["step"] > 0 and all(0 <= c["accuracy"] <= 1 for c in cps)


def test_supervised_accuracy_rises_and_finetune_starts_from_a_checkpoint(tmp_path):
    store, traj = run(tmp_path, "supervised", epochs=8, checkpoints=5)
    accs = [c["accuracy"] for c in traj.checkpoints]
    assert accs[-1] > 0.85 and accs[-1] > accs[0] + 0.2
    state = tmp_path / "s" / "state" / f"{traj.id:06d}.pt"
    assert state.exists()
    torch.load(state, weights_only=True)  # plain data only
    _, ft = run(tmp_path, "finetune", epochs=1, checkpoints=3, name="ft", init_from=str(state))
    # starting from the trained backbone, the first imprinted model is already good
    assert ft.checkpoints[0]["accuracy"] > accs[0] + 0.2


RESUME = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from test_train import run
    from pathlib import Path
    run(Path(sys.argv[1]), "supervised", epochs=6, checkpoints=8)
""")


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path):
    _, whole = run(tmp_path / "a", "supervised", epochs=6, checkpoints=8)
    reference = np.asarray(whole.probs)
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen([sys.executable, "-c", RESUME, str(tmp_path / "b"), here])
    store_path = tmp_path / "b" / "s"
    # kill it once it has recorded a few checkpoints
    import time

    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            s = PredictionStore(store_path)
            n = len(s.select()[0]) if s.select() else 0
            s.close()
        except Exception:  # noqa: BLE001 - the store may not exist yet
            n = 0
        if n >= 3:
            break
    # checkpoints are geometric in steps: the third comes after a few of ~110 steps, so the run is mid-way
    assert proc.poll() is None and 3 <= n < len(reference), "the writer must be killed mid-run"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, resumed = run(tmp_path / "b", "supervised", epochs=6, checkpoints=8)
    got = np.asarray(resumed.probs)
    assert [c["idx"] for c in resumed.checkpoints] == list(range(len(reference)))
    assert got.shape == reference.shape
    np.testing.assert_array_equal(got, reference)  # bit-identical to the uninterrupted run (CPU)


def test_train_command(tmp_path, capsys):
    from taskgeom import cli

    args = [
        "train",
        "--data",
        "digits",
        "--task",
        "0-4",
        "--arch",
        "small-cnn",
        "--epochs",
        "1",
        "--checkpoints",
        "3",
        "--seeds",
        "0",
        "1",
        "--store",
        str(tmp_path / "s"),
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "0-4/supervised/small-cnn/seed1" in out and "head accuracy" in out
    assert len(PredictionStore(tmp_path / "s").select(task="0-4")) == 2
    assert cli.main(args[:4] + ["nope"] + args[5:]) == 1  # the data have no such task: exit 1
    assert "unknown task" in capsys.readouterr().err


def test_unknown_method_is_an_error_and_a_new_method_is_one_class(tmp_path):
    from taskgeom.train import METHODS, Method, register_method

    with pytest.raises(ValueError, match="unknown method 'hebbian'; registered methods: supervised"):
        run(tmp_path, "hebbian")

    @register_method
    class LabelSmoothed(Method):  # a new method: one class and its registration
        name = "test-smoothed"

        def batch_loss(self, run_, xb, yb, g):
            return torch.nn.functional.cross_entropy(run_.model(xb), yb, label_smoothing=0.3)

    try:
        _, traj = run(tmp_path, "test-smoothed", epochs=2)
        assert traj.method == "test-smoothed" and len(traj) >= 3
        assert traj.checkpoints[-1]["accuracy"] > traj.checkpoints[0]["accuracy"]
    finally:
        del METHODS["test-smoothed"]
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Again", (Method,), {"name": "supervised"}))


def test_trajectory_records_its_resolved_config_and_code_version(tmp_path):
    """Hidden defaults are resolved before training and stored: SimCLR's optimiser and learning rate are
    explicit in the stored config, and an explicit learning rate is kept as given."""
    _, traj = run(tmp_path, "simclr", checkpoints=2)
    cfg = traj.config if getattr(traj, "config", None) else traj.extra["config"]
    assert cfg["optimizer"] == "adam" and cfg["lr"] == 1e-3 and cfg["method"] == "simclr"
    assert cfg["crop_scale"] == [0.2, 1.0] and "device" not in cfg
    assert traj.extra["run_config"]["device"] == "cpu" and traj.extra["run_config"]["lr"] == 1e-3
    code = getattr(traj, "code", None) or traj.extra["code"]
    assert code["taskgeom"] and "commit" in code
    _, sup = run(tmp_path, "supervised", checkpoints=2, name="sup", lr=0.2)
    cfg = sup.config if getattr(sup, "config", None) else sup.extra["config"]
    assert cfg["optimizer"] == "sgd" and cfg["lr"] == 0.2


def test_config_options_are_documented_and_checked(capsys):
    """Every option of `taskgeom train` and `taskgeom picture` has help text with its default, and
    out-of-range values are one-line argparse errors (exit 2)."""
    from taskgeom import cli

    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("train", "picture"):
        for action in subs[name]._actions:
            if action.dest in ("help",):
                continue
            assert action.help and "default" in action.help, (name, action.dest)
    for argv in (["train", "--epochs", "0"], ["train", "--batch-size", "-3"], ["picture", "--seeds", "x"]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("taskgeom") and ("at least" in err[-1] or "expected" in err[-1]), err


def test_resume_with_changed_settings_is_an_error_unless_a_new_trajectory_is_asked_for(tmp_path):
    from taskgeom.store import ConfigMismatchError

    store, traj = run(tmp_path, "supervised", epochs=1, checkpoints=3)
    n = len(traj)
    (xtr, ytr), (xte, yte) = digits()
    cfg = TrainConfig(
        method="supervised", arch="small-cnn", epochs=2, batch_size=64, checkpoints=3, device="cpu", imprint_samples=600
    )
    with pytest.raises(ConfigMismatchError, match="epochs: 1 -> 2"):
        train(cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits", "all", progress_bar=False)
    assert len(store.select()) == 1 and len(traj) == n  # nothing was appended to the old trajectory
    other = train(cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits", "all", progress_bar=False, new=True)
    assert other.id != traj.id and other.name.endswith("~2") and other.config["epochs"] == 2
    assert len(traj) == n
    # the same settings again, with or without the flag, resume that variant: no duplicates
    for flag in (False, True):
        again = train(
            cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits", "all", progress_bar=False, new=flag
        )
        assert again.id == other.id
    assert len(store.select()) == 2


def test_runs_write_metrics_a_user_can_watch(tmp_path):
    import json

    store, traj = run(tmp_path, "supervised", epochs=2, checkpoints=4, log_every=5)
    path = store.root / "metrics" / f"{traj.id:06d}.jsonl"
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    train_lines = [x for x in lines if x["kind"] == "train"]
    cps = [x for x in lines if x["kind"] == "checkpoint"]
    assert len(cps) == len(traj)  # one line per recorded checkpoint, with its accuracy
    assert [c["accuracy"] for c in cps] == pytest.approx([c["accuracy"] for c in traj.checkpoints])
    assert len(train_lines) >= 5 and all(x["step"] % 5 == 0 or x is train_lines[-1] for x in train_lines)
    for x in train_lines:
        assert np.isfinite(x["loss"]) and x["loss"] > 0 and x["images_per_second"] > 0 and x["lr"] >= 0
    assert train_lines[0]["lr"] > train_lines[-1]["lr"]  # the cosine schedule decays
    assert train_lines[0]["loss"] > train_lines[-1]["loss"]
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return  # the tensorboard extra is not installed: JSON lines only
    events = list((store.root / "tensorboard" / f"{traj.id:06d}").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100


def test_learning_rate_schedules(tmp_path):
    from taskgeom.train import lr_factor

    assert lr_factor(0, 100, "cosine", 0.0) == 1.0 and abs(lr_factor(100, 100, "cosine", 0.0)) < 1e-12
    assert abs(lr_factor(50, 100, "cosine", 0.0) - 0.5) < 1e-12
    # triangle: linear warm-up over the first 20 steps to the peak, then linear decay to 0 at the end
    got = [lr_factor(s, 100, "triangle", 0.2) for s in (0, 10, 20, 60, 100, 120)]
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 0.5, 0.0, 0.0], atol=1e-12)
    assert lr_factor(5, 100, "cosine", 0.1) == 0.5  # warm-up before the cosine too
    with pytest.raises(ValueError, match="warmup"):
        run(tmp_path, "supervised", warmup=1.0)


def test_fast_resnet_trains_on_32px_images_with_the_fast_recipe(tmp_path):
    """The fast recipe's settings (triangle schedule, warm-up, label smoothing, bfloat16 autocast and
    channels-last where there is CUDA) on random 32 x 32 images: the whitening stem is fitted to the task's
    images and recorded checkpoints are normalised predictions."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8), np.arange(300) % 10
    xe, ye = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8), np.arange(60) % 10
    store = PredictionStore(tmp_path / "f", create=True)
    store.add_eval_set("e", ye)
    cfg = TrainConfig(
        arch="fast-resnet",
        epochs=2,
        batch_size=100,
        lr=0.4,
        schedule="triangle",
        warmup=0.25,
        label_smoothing=0.2,
        weight_decay=5e-4,
        checkpoints=3,
        imprint_samples=200,
        device="cpu",
    )
    traj = train(cfg, list(range(10)), (x, y), (xe, ye), store, "e", "all", progress_bar=False)
    probs = np.asarray(traj.probs, dtype=np.float64)
    assert probs.shape[0] >= 3 and probs.shape[1:] == (60, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=2e-2)
    assert traj.config["schedule"] == "triangle" and traj.config["amp_dtype"] == "bfloat16"
    assert "channels_last" not in traj.config  # where it runs, not what it computes


def test_methods_never_share_an_initialisation_unless_asked(tmp_path):
    """Result 5's artefact: FixMatch seed s and supervised seed s started from the same weights, so their
    distance at t = 0 was zero by construction (and supervised seed s on two tasks). Now the
    initialisation is a function of seed, method and task; ``init_seed`` makes runs share one on purpose."""
    _, sup = run(tmp_path, "supervised", name="a")
    _, fix = run(tmp_path, "fixmatch", name="b")
    _, sup2 = run(tmp_path, "supervised", name="c")
    p0 = [np.asarray(t.probs[0], dtype=np.float64) for t in (sup, fix, sup2)]
    assert np.abs(p0[0] - p0[1]).max() > 1e-3  # different methods: different first models
    np.testing.assert_array_equal(p0[0], p0[2])  # same method and seed: the same
    _, other_task = run(tmp_path, "supervised", name="f", task=[0, 1, 2])
    p_other = np.asarray(other_task.probs[0], dtype=np.float64)
    assert np.abs(p0[0] - p_other).max() > 1e-3  # same method and seed on another task: another start
    _, s3 = run(tmp_path, "supervised", name="d", init_seed=7)
    _, f3 = run(tmp_path, "fixmatch", name="e", init_seed=7)
    np.testing.assert_allclose(np.asarray(s3.probs[0], np.float64), np.asarray(f3.probs[0], np.float64), atol=1e-3)


def test_fixmatch_unlabelled_batches_are_mu_times_the_labelled_ones(tmp_path):
    from taskgeom.train import get_method

    cfg = TrainConfig(method="fixmatch", batch_size=16, unlabelled_ratio=7)
    assert get_method("fixmatch").loader_batch_size(cfg) == 112
    assert get_method("supervised").loader_batch_size(cfg) == 16
    # an epoch is one pass over the unlabelled images: 1,200 / 112 -> 10 full batches
    _, traj = run(tmp_path, "fixmatch", batch_size=16, unlabelled_ratio=7)
    assert traj.checkpoints[-1]["step"] == 10


def test_checkpoint_every_spaces_checkpoints_in_proportion_to_steps(tmp_path):
    """checkpoint_every: the same dense start for every run, then every k-th step (issue 29); 0, the default,
    keeps the geometric count of runs recorded before it existed, and such runs resume as they were."""
    from taskgeom.train import checkpoint_steps, identity
    from taskgeom.train.loop import _as_recorded

    assert checkpoint_steps(196, 16, 0) == checkpoint_steps(196, 16)  # the default: unchanged
    short, long = checkpoint_steps(196, 16, 50), checkpoint_steps(5000, 16, 50)
    assert short == [0, 1, 3, 6, 12, 25, 50, 100, 150, 196]
    assert long[:7] == short[:7] and long[-1] == 5000 and all(b - a == 50 for a, b in zip(long[6:-1], long[7:-1]))
    assert len(long) - 5 == 5000 // 50 + 1  # in proportion to the steps beyond the start (0, 50, ..., 5000)
    assert checkpoint_steps(3, 16, 8) == [0, 1, 2, 3]
    # a trajectory recorded before the setting existed (no checkpoint_every in its config) still matches
    ident = identity(TrainConfig(arch="small-cnn"))
    old = {k: v for k, v in ident.items() if k not in ("checkpoint_every", "labelled_draw")}
    assert _as_recorded(ident, old) == old
    assert "checkpoint_every" in _as_recorded(identity(TrainConfig(checkpoint_every=5)), old)
    _, traj = run(tmp_path, "supervised", epochs=2, checkpoint_every=4)  # 18 full batches an epoch
    steps = [c["step"] for c in traj.checkpoints]
    assert steps == checkpoint_steps(36, 3, 4) == [0, 1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36]


def test_fixmatch_balanced_labelled_subset_is_seeded_and_per_class():
    from taskgeom.train.methods import labelled_subset

    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 110, 120, 130, 140])
    cfg = TrainConfig(method="fixmatch", labelled=100, labelled_draw="balanced")
    a = labelled_subset(labels, cfg, np.random.default_rng(3))
    b = labelled_subset(labels, cfg, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)  # seeded
    assert len(set(a.tolist())) == 100 and np.bincount(labels[a], minlength=10).tolist() == [10] * 10
    assert not np.array_equal(a, labelled_subset(labels, cfg, np.random.default_rng(4)))
    rnd = labelled_subset(labels, TrainConfig(method="fixmatch", labelled=100), np.random.default_rng(3))
    assert len(set(rnd.tolist())) == 100  # the draw of runs recorded before (random: not balanced)
    for bad in (105, 510):  # not a multiple of the classes; more than the smallest class holds
        with pytest.raises(ValueError, match="labelled"):
            labelled_subset(
                labels, TrainConfig(method="fixmatch", labelled=bad, labelled_draw="balanced"), np.random.default_rng(0)
            )


@pytest.mark.parametrize("arch", ["small-cnn", "fast-resnet"])
def test_layer_norm_builds_and_trains_a_step(tmp_path, arch):
    from taskgeom.train import get_method

    cfg = TrainConfig(arch=arch, norm="layer")
    model = get_method("supervised").build(cfg, 10, 3, torch.device("cpu"))
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds and "BatchNorm2d" not in kinds
    rng = np.random.default_rng(0)  # 32 x 32 images (fast-resnet pools 8 x 8 digits away)
    x, y = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), np.arange(200) % 10
    store = PredictionStore(tmp_path / "ln", create=True)
    store.add_eval_set("e", y[:40])
    cfg = TrainConfig(
        arch=arch, norm="layer", epochs=1, batch_size=50, checkpoints=3, imprint_samples=100, device="cpu"
    )
    traj = train(cfg, list(range(10)), (x, y), (x[:40], y[:40]), store, "e", "all", progress_bar=False)
    assert traj.config["norm"] == "layer" and traj.checkpoints[-1]["step"] == 4 and len(traj.checkpoints) >= 3


def test_a_run_trains_on_its_threads_and_records_them(tmp_path, monkeypatch):
    """A run trains on ``threads`` torch threads (default 1: the same bytes whatever the core count; 0:
    torch's own count, recorded as the number it is), torch's setting is restored after it, and the count is
    part of the run's recorded settings: a resume with another count is refused (it would mix two runs),
    while a run recorded before the setting existed resumes with any."""
    from taskgeom.config import check_fields
    from taskgeom.store import ConfigMismatchError
    from taskgeom.train import loop

    seen, real = [], loop._train
    monkeypatch.setattr(loop, "_train", lambda *a: (seen.append(torch.get_num_threads()), real(*a))[1])
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        store, traj = run(tmp_path, "supervised", checkpoints=2)
        assert seen == [1] and torch.get_num_threads() == 2
        assert traj.config["threads"] == 1 and traj.extra["run_config"]["threads"] == 1
        with pytest.raises(ConfigMismatchError, match="threads"):
            run(tmp_path, "supervised", checkpoints=2, threads=0)  # torch's 2 here
        _, own = run(tmp_path, "supervised", checkpoints=2, name="own", threads=0)
        assert seen[-1] == 2 and own.config["threads"] == 2  # recorded as the count it was
        # recorded before runs had a thread count: any count resumes it
        assert loop._as_recorded({"lr": 0.1, "threads": 2}, {"lr": 0.1}) == {"lr": 0.1}
        for bad in (-1, 100_000):
            with pytest.raises(ValueError, match="threads"):
                check_fields(TrainConfig(threads=bad))
    finally:
        torch.set_num_threads(old)
