"""The paper's architectures: shapes, sizes, bias-free heads, normalisation variants."""

import numpy as np
import pytest
import torch

from taskgeom.models import build_model


def test_wrn_16_4():
    m = build_model("wrn-16-4", 10)
    n = sum(p.numel() for p in m.parameters())
    assert 2.6e6 < n < 2.9e6
    assert m.head.bias is None and m.feature_dim == 256
    x = torch.randn(2, 3, 32, 32)
    assert m(x).shape == (2, 10) and m.features(x).shape == (2, 256)
    assert m(torch.randn(2, 3, 28, 28)).shape == (2, 10)  # adaptive pooling: other input sizes
    ln = build_model("wrn-16-4", 5, norm="layer")
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in ln.modules())
    assert ln(x).shape == (2, 5)


def test_resnet18_and_small_cnn():
    r = build_model("resnet18", 3)
    assert r(torch.randn(2, 3, 32, 32)).shape == (2, 3) and r.head.bias is None
    s = build_model("small-cnn", 10)
    assert s(torch.randn(4, 1, 8, 8)).shape == (4, 10) and s.features(torch.randn(1, 1, 8, 8)).shape == (1, 64)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg", 10)


def test_resnet50_blurpool():
    from taskgeom.models import BlurPool

    m = build_model("resnet50", 1000)
    n = sum(p.numel() for p in m.parameters())
    assert 23e6 < n < 26e6  # ResNet-50 without BatchNorm affine parameters
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) and mod.affine for mod in m.modules())
    assert not any(isinstance(mod, torch.nn.Conv2d) and mod.stride != (1, 1) for mod in m.modules())
    m.eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64)).shape == (1, 1000) and m.features(torch.randn(1, 3, 64, 64)).shape == (
            1,
            2048,
        )
    # BlurPool: a constant image stays constant, a one-pixel checkerboard is smoothed away
    bp = BlurPool(2)
    const = torch.ones(1, 2, 8, 8)
    torch.testing.assert_close(bp(const), torch.ones(1, 2, 4, 4))
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    out = bp(checker.float().expand(1, 2, 8, 8))
    assert float(out.std()) < 0.1 * float(checker.float().std())


def test_fast_resnet_whitening_stem_and_shapes():
    m = build_model("fast-resnet", 10)
    x = torch.randn(64, 3, 32, 32)
    assert m(x).shape == (64, 10) and m.features(x).shape == (64, 256)
    assert not m.whiten.weight.requires_grad and m.whiten.bias.requires_grad
    # fitted to correlated images, the stem's 2 x 2 patch responses are white (identity covariance)
    base = torch.randn(512, 1, 32, 32)
    imgs = torch.cat([base, 0.9 * base + 0.1 * torch.randn_like(base), torch.randn(512, 1, 32, 32)], 1)
    m.fit_whitening(imgs, eps=0.0)
    with torch.no_grad():
        r = m.whiten(imgs)[:, :12]  # the positive copies
    r = r.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(r.T)
    torch.testing.assert_close(cov, torch.eye(12, dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(m.whiten.weight[12:], -m.whiten.weight[:12])


@pytest.mark.parametrize("name", ["small-cnn", "fast-resnet", "resnet18", "wrn-10-1"])
def test_every_family_architecture_has_layer_norm(name):
    """norm="layer" (GroupNorm(1, C)) for every architecture the family scripts may use (issue 29); the
    BatchNorm default builds the same weights as before."""
    kw = {"in_channels": 3} if name in ("small-cnn", "fast-resnet") else {}
    torch.manual_seed(0)
    m = build_model(name, 10, norm="layer", **kw)
    assert any(isinstance(x, torch.nn.GroupNorm) for x in m.modules())
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    loss = m(torch.randn(2, 3, 32, 32)).sum()
    loss.backward()
    torch.manual_seed(0)
    a = build_model(name, 10, **kw)
    torch.manual_seed(0)
    b = build_model(name, 10, norm="batch", **kw)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="resnet50"):
        build_model("resnet50", 10, norm="layer")


def test_any_timm_architecture_trains_and_records(tmp_path):
    """--arch timm:<name> (issue 28): a randomly initialised timm network, features for imprinting, nothing
    downloaded; unknown names and LayerNorm are one-line errors."""
    pytest.importorskip("timm")
    from taskgeom.models import build_model
    from taskgeom.store import PredictionStore
    from taskgeom.train import TrainConfig, train

    model = build_model("timm:resnet10t", 5, in_channels=3)
    x = torch.randn(2, 3, 16, 16)
    assert model(x).shape == (2, 5) and model.features(x).shape == (2, model.feature_dim)
    with pytest.raises(ValueError, match="unknown timm architecture"):
        build_model("timm:no-such-net", 5)
    with pytest.raises(ValueError, match="own normalisation"):
        build_model("timm:resnet10t", 5, norm="layer")
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.repeat((d.images / 16 * 255).astype(np.uint8)[..., None], 3, axis=-1)
    xtr, ytr, xte, yte = imgs[:300], d.target[:300], imgs[300:400], d.target[300:400]
    store = PredictionStore(tmp_path / "s", create=True)
    store.add_eval_set("digits", yte, c=10)
    cfg = TrainConfig(arch="timm:resnet10t", epochs=1, batch_size=64, checkpoints=2, device="cpu", seed=0)
    train(cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits", "all", progress_bar=False)
    (t,) = store.select()
    assert t.architecture == "timm:resnet10t" and len(t) >= 2
