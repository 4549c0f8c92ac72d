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
