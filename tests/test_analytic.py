"""The paper's analytic identities, on the reference and through every backend."""

import math

import numpy as np
import pytest
import torch

import taskgeom as tg
from taskgeom import reference as R

from testing import BACKENDS, DEVICE_BACKENDS, geodesic_length_p0_truth, labels, models, to_device


@pytest.mark.parametrize("c", [2, 10, 100])
def test_distance_to_truth_is_half_cross_entropy(c):
    p = models(1, 300, c, seed=c, dtype=torch.float64)[0]
    y = labels(300, c, seed=c)
    ce = torch.nn.functional.nll_loss(p.log(), y).item()
    assert tg.bhattacharyya(p, tg.truth(y, c)).item() == pytest.approx(ce / 2, rel=1e-12)
    dense = tg.truth(y, c).dense()
    assert tg.bhattacharyya(p, dense).item() == pytest.approx(ce / 2, rel=1e-12)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_kernel_distance_to_truth_is_half_cross_entropy(backend):
    c = 10
    p = models(5, 400, c, seed=1, dtype=torch.float64)
    y = labels(400, c, seed=1)
    star = tg.truth(y, c).dense()[None]
    d = tg.pairwise_distances(to_device(p, backend), to_device(star, backend), backend=backend).cpu()
    ce = -0.5 * torch.log(torch.gather(p, 2, y.expand(5, -1)[..., None])).mean((1, 2))
    np.testing.assert_allclose(d[:, 0].numpy(), ce.numpy(), rtol=1e-6)


@pytest.mark.parametrize("c", [2, 10, 1000])
def test_ignorance_to_truth_is_half_log_c(c):
    n = 50
    y = labels(n, c)
    p0, ps = tg.ignorance(n, c), tg.truth(y, c)
    assert float(tg.bhattacharyya(p0, ps)) == pytest.approx(0.5 * math.log(c), rel=1e-14)
    assert float(tg.bhattacharyya(p0.dense(), ps.dense())) == pytest.approx(0.5 * math.log(c), rel=1e-12)
    assert float(tg.bhattacharyya(p0.dense(), ps)) == pytest.approx(0.5 * math.log(c), rel=1e-12)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_kernel_ignorance_to_truth(backend):
    c, n = 10, 333
    y = labels(n, c)
    both = torch.stack([tg.ignorance(n, c).dense(), tg.truth(y, c).dense()]).float()
    d = tg.pairwise_distances(to_device(both, backend), backend=backend).cpu()
    assert float(d[0, 1]) == pytest.approx(0.5 * math.log(c), rel=1e-6)
    assert float(d[1, 0]) == float(d[0, 1])


@pytest.mark.parametrize("backend", ["torch"] + [p for p in DEVICE_BACKENDS])
def test_progress_of_ignorance_truth_and_geodesic_points(backend):
    c, n = 10, 500
    y = labels(n, c, seed=3)
    lams = torch.tensor([0.0, 0.013, 0.25, 0.5, 0.77, 0.999, 1.0], dtype=torch.float64)
    pts = torch.as_tensor(tg.geodesic(tg.ignorance(n, c), tg.truth(y, c), lams))  # (L, N, C)
    be = "cuda" if backend == "cuda" else backend
    t = tg.progress(to_device(pts.float(), be), to_device(y, be), backend=be).cpu()
    np.testing.assert_allclose(t.numpy(), lams.numpy(), atol=1e-6)
    assert float(tg.progress(tg.ignorance(n, c).dense(), y)) == 0.0
    assert float(tg.progress(tg.truth(y, c).dense(), y)) == 1.0


def test_progress_on_any_geodesic_recovers_lambda():
    u, v = models(2, 200, 7, seed=4, dtype=torch.float64)
    lams = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    pts = tg.geodesic(u, v, lams)
    np.testing.assert_allclose(tg.geodesic_progress(pts, u, v).numpy(), lams.numpy(), atol=1e-8)


def test_geodesic_endpoints_and_constant_speed():
    p, q = models(2, 100, 5, seed=5, dtype=torch.float64)
    g = tg.geodesic(p, q, [0.0, 0.3, 1.0])
    torch.testing.assert_close(g[0], p, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g[2], q, rtol=1e-12, atol=1e-14)
    theta = R.half_angle(p, q)
    torch.testing.assert_close(R.half_angle(p, g[1]), 0.3 * theta, rtol=1e-9, atol=1e-12)
    same = tg.geodesic(p, p, torch.tensor([0.0, 0.5, 1.0]))
    for k in range(3):
        torch.testing.assert_close(same[k], p, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("c", [2, 10, 100])
def test_riemann_length_of_p0_truth_geodesic(c):
    n = 64
    y = labels(n, c)
    ends = torch.stack([tg.ignorance(n, c).dense(), tg.truth(y, c).dense()])
    expected = geodesic_length_p0_truth(c)
    assert tg.riemann_length(ends) == pytest.approx(expected, rel=1e-12)
    if c == 10:
        assert expected == pytest.approx(1.7664, abs=1e-4)
    # refining along the geodesic converges to the same length; raw checkpoints overshoot
    assert tg.riemann_length(ends, refine=2000) == pytest.approx(expected, rel=1e-5)
    assert tg.riemann_length(ends, refine=None) > expected * (1 + 1e-3)
    # a densely sampled geodesic has the same length whichever way it is measured
    pts = torch.as_tensor(tg.geodesic(tg.ignorance(n, c), tg.truth(y, c), torch.linspace(0, 1, 50)))
    assert tg.riemann_length(pts) == pytest.approx(expected, rel=1e-9)


def test_riemann_length_is_additive_and_never_below_geodesic():
    traj = models(6, 80, 4, seed=6, dtype=torch.float64)
    whole = tg.riemann_length(traj)
    parts = tg.riemann_length(traj[:3]) + tg.riemann_length(traj[2:])
    assert whole == pytest.approx(parts, rel=1e-12)
    direct = tg.riemann_length(traj[[0, -1]])
    assert whole >= direct


def test_inpca_full_rank_is_an_isometry():
    p = models(30, 200, 6, seed=7, dtype=torch.float64)
    D = tg.pairwise_distances(p, backend="torch").numpy()
    emb = tg.inpca(D)
    X, s = emb.coords, emb.signature
    diff = X[:, None, :] - X[None, :, :]
    mink = (s[None, None, :] * diff**2).sum(-1)
    np.testing.assert_allclose(mink, D, atol=1e-10)
    assert emb.explained_stress(30) == pytest.approx(1.0)


def test_inpca_isometry_with_time_like_axes():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.1, 2.0, size=(25, 25))
    D = np.triu(a, 1) + np.triu(a, 1).T  # not a squared-Euclidean matrix: W has negative eigenvalues
    emb = tg.inpca(D)
    assert (emb.signature < 0).any() and (emb.signature > 0).any()
    diff = emb.coords[:, None, :] - emb.coords[None, :, :]
    np.testing.assert_allclose((emb.signature * diff**2).sum(-1), D, atol=1e-10)
    # Lanczos top-k agrees with the dense decomposition
    top = tg.inpca(D, k=3, method="lanczos")
    np.testing.assert_allclose(top.eigenvalues, emb.eigenvalues[:3], rtol=1e-8)
    np.testing.assert_allclose(np.abs(top.coords), np.abs(emb.coords[:, :3]), atol=1e-8)
    assert top.explained_stress(3) == pytest.approx(emb.explained_stress(3), rel=1e-10)


def test_inpca_out_of_sample_reproduces_embedded_models():
    p = models(20, 100, 5, seed=9, dtype=torch.float64)
    D = tg.pairwise_distances(p, backend="torch").numpy()
    emb = tg.inpca(D, k=4)
    np.testing.assert_allclose(emb.transform(D), emb.coords, atol=1e-10)
    with pytest.raises(ValueError, match="columns"):
        emb.transform(D[:, :5])


def test_explained_stress_formula():
    ev = np.array([3.0, -2.0, 1.0, 0.5])
    tot = (ev**2).sum()
    assert tg.explained_stress(ev, 1) == pytest.approx(1 - math.sqrt((4 + 1 + 0.25) / tot))
    assert tg.explained_stress(ev, 2) == pytest.approx(1 - math.sqrt(1.25 / tot))
    np.testing.assert_allclose(tg.explained_stress(ev), [tg.explained_stress(ev, k) for k in range(1, 5)])


def test_imprint_invariant_to_feature_rotation():
    g = torch.Generator().manual_seed(8)
    feats = torch.randn(300, 16, generator=g, dtype=torch.float64) + 0.5
    y = torch.randint(0, 5, (300,), generator=g)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    for head in ("cosine", "euclidean"):
        p1 = tg.imprint(feats, y, 5, head=head)(feats)
        p2 = tg.imprint(feats @ q.T, y, 5, head=head)(feats @ q.T)
        assert float(tg.bhattacharyya(p1, p2)) == pytest.approx(0.0, abs=1e-13)
    # and a non-orthogonal map does change the model
    a = torch.randn(16, 16, generator=g, dtype=torch.float64)
    p3 = tg.imprint(feats @ a.T, y, 5)(feats @ a.T)
    assert float(tg.bhattacharyya(p1, p3)) > 1e-4


def test_imprint_rows_are_unit_class_directions():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    head = tg.imprint(feats, [0, 0, 1], 2)
    torch.testing.assert_close(head.weights, torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    logits = head.logits(torch.tensor([[2.0, 1.0]]))
    torch.testing.assert_close(logits, torch.tensor([[2.0, 1.0]], dtype=torch.float64))


def test_backends_listed():
    assert "cpu" in BACKENDS
