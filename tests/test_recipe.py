"""The fast recipes' pieces (taskgeom.train.recipe): frozen BatchNorm scales, BatchNorm momentum,
identity-initialised convolutions, lookahead (its update, its schedule and exact resume), and the random
sample the fast-resnet stem is fitted to."""

import numpy as np
import pytest
import torch
from test_train import digits, run
from torch import nn

from taskgeom.store import PredictionStore
from taskgeom.train import TrainConfig, train
from taskgeom.train.loop import whitening_sample
from taskgeom.train.recipe import Lookahead, apply_recipe


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
    )


def test_apply_recipe_defaults_change_nothing():
    a, b = _net(), _net()
    apply_recipe(b)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert all(p.requires_grad for p in b.parameters()) and b[1].momentum == 0.1


def test_frozen_scales_stay_one_and_dirac_filters_are_the_identity():
    net = apply_recipe(_net(), bn_scale=False, bn_momentum=0.6, conv_init="dirac")
    bn = net[1]
    assert not bn.weight.requires_grad and bn.bias.requires_grad and bn.momentum == 0.6
    w = net[0].weight.detach()
    x = torch.randn(2, 3, 5, 5)
    # the first 3 of 8 output channels of the first convolution pass the input through unchanged
    torch.testing.assert_close(nn.functional.conv2d(x, w, padding=1)[:, :3], x)
    assert w[3:].abs().sum() > 0  # the rest keep their random initialisation
    w2 = net[3].weight.detach()
    assert torch.equal(w2[:, :, 1, 1], torch.eye(8))  # 8 -> 8: every filter is the identity
    with pytest.raises(ValueError, match="conv_init"):
        apply_recipe(_net(), conv_init="xavier")


def test_frozen_scales_through_training(tmp_path):
    store, traj = run(tmp_path, "supervised", bn_scale=False, bn_momentum=0.6, checkpoints=2)
    from taskgeom.train.state import load_state

    st = load_state(store.root / "state" / f"{traj.id:06d}.pt")["model"]
    scales = [v for k, v in st.items() if k.endswith("weight") and v.dim() == 1]
    shifts = [v for k, v in st.items() if k.endswith("bias") and v.dim() == 1]
    assert scales and all(torch.equal(v, torch.ones_like(v)) for v in scales)  # never trained
    assert any(v.abs().max() > 0 for v in shifts)  # the shifts were
    assert traj.config["bn_scale"] is False and traj.config["bn_momentum"] == 0.6


def test_lookahead_update_and_schedule():
    net = nn.Linear(3, 2)
    la = Lookahead(net, every=5, total=20, final_decay=0.8)
    slow0 = {k: v.clone() for k, v in net.state_dict().items()}
    assert la.decay(0) == 0 and la.decay(20) == pytest.approx(0.8) and la.decay(10) == pytest.approx(0.1)
    with torch.no_grad():
        net.weight.add_(1.0)
    fast = net.weight.detach().clone()
    assert not la.step(3)  # not due
    assert torch.equal(net.weight, fast)
    assert la.step(10)  # due, decay 0.1: slow <- 0.1 slow + 0.9 fast, network <- slow
    expected = 0.1 * slow0["weight"] + 0.9 * fast
    torch.testing.assert_close(net.weight.detach(), expected)
    torch.testing.assert_close(la.slow["weight"], expected)
    assert la.step(17) is False and la.step(20)  # the last step always updates
    with pytest.raises(ValueError, match="every"):
        Lookahead(net, 0, 10, 0.5)
    with pytest.raises(ValueError, match="lacks"):
        la.load_state_dict({})


def test_lookahead_changes_the_run_and_resumes_exactly(tmp_path, interrupt_saves):
    _, plain = run(tmp_path, "supervised", name="p", epochs=2, checkpoints=4)
    _, ref = run(tmp_path, "supervised", name="r", epochs=2, checkpoints=4, lookahead=3, lookahead_decay=0.9)
    assert np.abs(np.asarray(ref.probs[-1], np.float64) - np.asarray(plain.probs[-1], np.float64)).max() > 1e-3
    arm, disarm = interrupt_saves
    arm(2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "supervised", name="k", epochs=2, checkpoints=4, lookahead=3, lookahead_decay=0.9)
    disarm()
    _, resumed = run(tmp_path, "supervised", name="k", epochs=2, checkpoints=4, lookahead=3, lookahead_decay=0.9)
    np.testing.assert_array_equal(np.asarray(resumed.probs), np.asarray(ref.probs))


def test_bad_recipe_settings_are_one_line_errors(tmp_path):
    (xtr, ytr), (xte, yte) = digits()
    store = PredictionStore(tmp_path / "s", create=True)
    store.add_eval_set("digits", yte, c=10)
    for field, value in (("lookahead_decay", 1.5), ("bn_momentum", 2.0)):
        cfg = TrainConfig(arch="small-cnn", epochs=1, device="cpu", **{field: value})
        with pytest.raises(ValueError, match=field):
            train(cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits", "all", progress_bar=False)
    assert not store.select()  # nothing was created


def test_whitening_sample_draws_from_every_class():
    """The stem was fitted to the first 5,000 training images, which (stored class by class) are the first
    class's alone; it is now fitted to a random 5,000 of the task's images."""
    labels = np.repeat(np.arange(10), 5000)  # CIFAR-10's training split as loaded: class by class
    pick = whitening_sample(len(labels), seed=0)
    assert len(pick) == 5000 and len(np.unique(pick)) == 5000 and np.all(np.diff(pick) > 0)
    counts = np.bincount(labels[pick], minlength=10)
    assert counts.min() > 400 and counts.max() < 600  # about 500 of each class
    assert np.array_equal(pick, whitening_sample(len(labels), seed=0))  # a function of the seed
    assert not np.array_equal(pick, whitening_sample(len(labels), seed=1))
    np.testing.assert_array_equal(whitening_sample(300, seed=0), np.arange(300))  # all there are


def test_torch_init_is_pytorchs_default_and_spares_frozen_layers():
    from taskgeom.models import FastResNet

    torch.manual_seed(0)
    net = FastResNet(10)
    stem = net.whiten.weight.detach().clone()
    apply_recipe(net, conv_init="torch")
    assert torch.equal(net.whiten.weight, stem)  # the fitted (frozen) stem is not re-drawn
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad:
            fan_in = m.weight[0].numel()
            bound = 1 / np.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            assert m.weight.abs().max() <= bound + 1e-7
            if m.weight.numel() > 10_000:
                assert m.weight.std().item() == pytest.approx(bound / np.sqrt(3), rel=0.05)
    net2 = apply_recipe(_net(), conv_init="torch-dirac")
    assert torch.equal(net2[3].weight.detach()[:, :, 1, 1], torch.eye(8))
    assert net2[0].weight[3:].abs().max() <= 1 / np.sqrt(27) + 1e-7  # torch's bound beyond the identity filters


def _steps(cfg, n, per_epoch):
    """``n`` SGD steps of a FastResNet on random 16 x 16 images with the run's groups and schedule; the
    stem bias after each step."""
    from taskgeom.models import FastResNet
    from taskgeom.train.config import FastRecipe, Optimisation, Schedule
    from taskgeom.train.loop import _lr_lambdas, _optimizer

    torch.manual_seed(0)
    net = apply_recipe(FastResNet(4), cfg.bn_scale, cfg.bn_momentum, cfg.conv_init)
    recipe = cfg.part(FastRecipe)
    opt = _optimizer(net, cfg.part(Optimisation), recipe, torch.device("cpu"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambdas(opt, cfg.part(Schedule), recipe, n, per_epoch))
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    biases = []
    for _ in range(n):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        sched.step()
        biases.append(net.whiten.bias.detach().clone())
    return net, opt, biases


def test_stem_bias_learns_at_the_base_rate_and_freezes_after_its_epochs():
    cfg = TrainConfig(arch="fast-resnet", optimizer="sgd", lr=0.05, bias_lr_scale=64, whiten_bias_epochs=1.5)
    net, opt, biases = _steps(cfg, 12, per_epoch=4)  # frozen from step 6 on
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["stem"]["params"] == [net.whiten.bias] and groups["stem"]["initial_lr"] == 0.05
    assert groups["biases"]["initial_lr"] == pytest.approx(0.05 * 64)
    assert all(net.whiten.bias is not p for p in groups["biases"]["params"])
    assert not torch.equal(biases[0], biases[4])  # learning during the first 1.5 epochs
    for b in biases[6:]:
        assert torch.equal(b, biases[5])  # then exactly still (rate 0: momentum moves nothing)
    # without either setting the stem bias stays in the biases' group (runs recorded before resume)
    _, opt0, _ = _steps(TrainConfig(arch="fast-resnet", optimizer="sgd", lr=0.05), 1, per_epoch=4)
    assert [g["name"] for g in opt0.param_groups] == ["weights", "biases", "norm"]


def test_norm_weight_decay_is_decoupled_from_the_bias_rate():
    cfg = TrainConfig(arch="fast-resnet", optimizer="sgd", lr=0.1, weight_decay=1e-3, bias_lr_scale=10)
    _, opt, _ = _steps(cfg, 1, per_epoch=1)
    wd = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert wd == {"weights": 1e-3, "biases": 0.0, "norm": 0.0, "stem": 0.0}
    _, opt, _ = _steps(TrainConfig(**{**cfg.__dict__, "norm_weight_decay": True}), 1, per_epoch=1)
    g = {g["name"]: g for g in opt.param_groups}
    # the same decay per step, lr x weight_decay, in every group
    for name in ("weights", "biases", "norm", "stem"):
        assert g[name]["initial_lr"] * g[name]["weight_decay"] == pytest.approx(0.1 * 1e-3)


def test_lr_start_and_end():
    from taskgeom.train import lr_factor

    assert lr_factor(0, 100, "triangle", 0.25, start=0.2, end=0.07) == pytest.approx(0.2)
    assert lr_factor(25, 100, "triangle", 0.25, start=0.2, end=0.07) == pytest.approx(1.0)
    assert lr_factor(100, 100, "triangle", 0.25, start=0.2, end=0.07) == pytest.approx(0.07)
    assert lr_factor(100, 100, "cosine", 0.0, end=0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, "cosine", 0.0, end=0.1) == pytest.approx(0.55)
    for s in range(0, 101, 7):  # the defaults compute exactly what they did before these existed
        assert lr_factor(s, 100, "triangle", 0.2) == (s / 20 if s < 20 else 1.0 - (s - 20) / 80)


def _images16(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.integers(0, 80, (n, 16, 16, 3), dtype=np.uint8)
    for c in range(4):  # a class-dependent bright quadrant, learnable in a few steps
        x[y == c, (c // 2) * 8 : (c // 2) * 8 + 8, (c % 2) * 8 : (c % 2) * 8 + 8] += 150
    return x, y


def _fast_run(tmp_path, name, **kw):
    (xtr, ytr), (xte, yte) = _images16(), _images16(80, seed=1)
    store = PredictionStore(tmp_path / name, create=True)
    store.add_eval_set("e", yte, c=4)
    settings = dict(arch="fast-resnet", epochs=2, batch_size=32, checkpoints=4, device="cpu", imprint_samples=100)
    cfg = TrainConfig(**{**settings, **kw})
    return train(cfg, [0, 1, 2, 3], (xtr, ytr), (xte, yte), store, "e", "all", progress_bar=False)


def test_fast_recipe_pieces_change_the_run_and_resume_exactly(tmp_path, interrupt_saves):
    pieces = dict(crop_fill="reflect", flip="alternate", whiten_bias_epochs=1.0, bias_lr_scale=8,
                  conv_init="torch-dirac", norm_weight_decay=True, lr_start=0.2, lr_end=0.07, warmup=0.25)  # fmt: skip
    plain = _fast_run(tmp_path, "p")
    ref = _fast_run(tmp_path, "r", **pieces)
    assert np.abs(np.asarray(ref.probs[-1], np.float64) - np.asarray(plain.probs[-1], np.float64)).max() > 1e-3
    assert {k: ref.config[k] for k in pieces} == pieces
    arm, disarm = interrupt_saves
    arm(2)
    with pytest.raises(KeyboardInterrupt):
        _fast_run(tmp_path, "k", **pieces)
    disarm()
    resumed = _fast_run(tmp_path, "k", **pieces)
    np.testing.assert_array_equal(np.asarray(resumed.probs), np.asarray(ref.probs))


def test_bad_augmentation_settings_are_one_line_errors(tmp_path):
    (xtr, ytr), (xte, yte) = digits()
    store = PredictionStore(tmp_path / "s", create=True)
    store.add_eval_set("digits", yte, c=10)
    for field, value in (("crop_fill", "mirror"), ("flip", "never"), ("conv_init", "xavier"), ("lr_end", 2.0)):
        cfg = TrainConfig(arch="small-cnn", epochs=1, device="cpu", **{field: value})
        with pytest.raises(ValueError, match=field):
            train(cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits", "all", progress_bar=False)
    assert not store.select()  # nothing was created


def test_out_of_range_settings_fail_before_the_cli_opens_the_store(tmp_path, capsys):
    from taskgeom.cli import main

    store = tmp_path / "st"
    for flag, value in (("--lr-end", "2"), ("--lr-start", "1.5"), ("--bn-momentum", "2"), ("--warmup", "1.5")):
        with pytest.raises(SystemExit) as exc:  # a usage error (exit status 2), found by the option's own range
            main(["train", "--data", "digits", "--task", "all", "--epochs", "1", "--store", str(store), flag, value])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0], err
        assert not store.exists()  # nothing was created
