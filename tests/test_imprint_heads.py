"""Imprinting heads (issue 11, item 1): eq. 7 as printed, eq. 7 with a maximum-likelihood temperature,
and the authors' Euclidean prototypes; the head and temperature are recorded with every checkpoint."""

import numpy as np
import pytest
import torch

import taskgeom as tg
from taskgeom.imprinting import HEADS, fit_temperature


def _nll(z, y, s):
    zz = s * np.asarray(z, dtype=np.float64)
    m = zz.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(zz - m).sum(1)) + m[:, 0] - zz[np.arange(len(y)), y]))


def _features(seed=0, n=400, c=5, f=16, shift=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    feats = rng.normal(size=(n, f)) + 3.0  # features pointing in similar directions: eq. 7 is soft
    feats[np.arange(n), y] += shift
    return feats, y


def test_fitted_temperature_maximises_the_likelihood():
    feats, y = _features()
    z = np.asarray(tg.imprint(feats, y, 5, head="cosine").logits(feats))
    s = fit_temperature(z, y, smoothing=0.0)
    grid = np.geomspace(s / 20, s * 20, 4001)
    values = [_nll(z, y, g) for g in grid]
    assert _nll(z, y, s) <= min(values) + 1e-12
    assert abs(np.log(grid[int(np.argmin(values))] / s)) < 2 * np.log(grid[1] / grid[0])
    head = tg.imprint(feats, y, 5, head="cosine-ml")  # one pseudo-count of smoothing: close to the ML fit
    assert head.scale == pytest.approx(fit_temperature(z, y), rel=1e-9) and head.scale == pytest.approx(s, rel=0.05)
    assert _nll(z, y, s) < _nll(z, y, 1.0)  # eq. 7 at scale 1 is a worse likelihood here


def test_smoothed_fit_minimises_the_smoothed_cross_entropy_and_stays_finite():
    feats, y = _features(4, shift=30.0)  # separable: the plain likelihood rises without end
    z = np.asarray(tg.imprint(feats, y, 5, head="cosine").logits(feats))
    assert fit_temperature(z, y, smoothing=0.0) == 1e6
    s = fit_temperature(z, y)
    eps, zc = 1 / len(y), z - z.mean(1, keepdims=True)

    def smoothed(t):
        return _nll(z, y, t) + eps * t * zc[np.arange(len(y)), y].mean()

    grid = np.geomspace(s / 20, s * 20, 4001)
    assert s < 1e3 and smoothed(s) <= min(smoothed(g) for g in grid) + 1e-12


def test_fit_temperature_bounds_and_errors():
    z = np.array([[2.0, 0.0], [0.0, 2.0]])  # separable: the likelihood rises without end
    assert fit_temperature(z, [0, 1], bounds=(1e-3, 50.0), smoothing=0.0) == 50.0
    assert fit_temperature(z, [1, 0], bounds=(1e-3, 50.0)) == 1e-3  # every sample on the wrong side
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros(3), [0, 1, 0])
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(z, [0, 1], bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="smoothing"):
        fit_temperature(z, [0, 1], smoothing=1.0)


@pytest.mark.parametrize("head", HEADS)
def test_each_head_selectable(head):
    feats, y = _features(1)
    h = tg.imprint(feats, y, 5, head=head)
    assert h.head == head
    p = np.asarray(h(feats))
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert (p.argmax(1) == y).mean() > 0.5
    if head != "cosine-ml":
        assert h.scale == 1.0
    with pytest.raises(ValueError, match="head must be one of"):
        tg.imprint(feats, y, 5, head="cosine-ML")


def test_cosine_ml_rotation_invariant():
    feats, y = _features(2)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(16, 16)))
    p1 = tg.imprint(feats, y, 5, head="cosine-ml")(feats)
    p2 = tg.imprint(feats @ q.T, y, 5, head="cosine-ml")(feats @ q.T)
    assert float(tg.bhattacharyya(p1, p2)) == pytest.approx(0.0, abs=1e-12)


def test_head_and_temperature_recorded_per_checkpoint(tmp_path):
    from test_train import run

    for head in ("cosine-ml", "cosine"):
        _, traj = run(tmp_path, "supervised", epochs=1, checkpoints=3, name=head, imprint_head=head)
        cps = traj.checkpoints
        assert len(cps) >= 3 and traj.config["imprint_head"] == head
        temps = [c["imprint_temperature"] for c in cps]
        assert all(c["imprint_head"] == head for c in cps)
        if head == "cosine":
            assert temps == [1.0] * len(cps)
        else:
            assert all(t > 0 for t in temps) and len(set(temps)) > 1  # one fit per checkpoint


def test_train_default_head_is_cosine_ml():
    from taskgeom.picture import PictureConfig
    from taskgeom.train import TrainConfig

    assert TrainConfig.imprint_head == "cosine-ml" and PictureConfig.imprint_head == "cosine-ml"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64, np.int32, np.int64])
def test_labels_of_any_integer_dtype_imply_the_classes(dtype):
    """imprint and truth take labels of any integer dtype without ``c`` (torch cannot reduce uint16-64), and
    empty labels are named as such."""
    from taskgeom.geometry import truth
    from taskgeom.imprinting import imprint

    rng = np.random.default_rng(0)
    feats, y = rng.random((9, 4)), np.array([0, 1, 2] * 3, dtype=dtype)
    ref = imprint(feats, y.astype(np.int64))
    got = imprint(feats, y)
    assert torch.equal(got.weights, ref.weights) and got.scale == ref.scale
    assert torch.equal(torch.as_tensor(got(feats)), torch.as_tensor(ref(feats)))
    assert truth(y).c == 3
    with pytest.raises(ValueError, match="labels: empty"):
        imprint(feats[:0], y[:0])
