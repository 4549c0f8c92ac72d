"""Re-indexing, trajectory distances, means, tubes and normalised distances."""

import math

import numpy as np
import pytest
import torch

import taskgeom as tg
from taskgeom import reference as R

from testing import labels


def training_run(n=300, c=6, steps=12, seed=0, speed=1.0, bias=None):
    """A synthetic training run: logits move from noise towards the labels (optionally towards a
    task-specific bias), so progress rises roughly monotonically."""
    g = torch.Generator().manual_seed(seed)
    y = labels(n, c, seed=99)
    onehot = torch.nn.functional.one_hot(y, c).to(torch.float64)
    noise = 0.3 * torch.randn(n, c, generator=g, dtype=torch.float64)
    direction = onehot if bias is None else onehot + bias
    ts = torch.linspace(0, 1, steps, dtype=torch.float64) ** 0.5
    traj = torch.stack([torch.softmax(noise * (1 - t) + 5 * speed * t * direction, -1) for t in ts])
    return traj, y


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_reindexed_points_have_requested_progress(backend):
    traj, y = training_run()
    grid = np.linspace(0, 1, 25)
    out, info = tg.reindex(traj, y, grid=grid, backend=backend, return_info=True)
    assert out.shape == (25, 300, 6)
    t = tg.progress(out, y)
    tk = info["checkpoint_progress"]
    inside = (grid >= tk.min()) & (grid <= tk.max())
    assert inside.sum() > 10
    np.testing.assert_allclose(t[inside], grid[inside], atol=1e-6)
    # outside the reached range: clamped to the extreme checkpoints
    lo = grid < tk.min()
    if lo.any():
        torch.testing.assert_close(out[lo][0].double(), traj[int(np.argmin(tk))], atol=1e-7, rtol=0)
    hi = grid > tk.max()
    assert hi.any()
    torch.testing.assert_close(out[hi][-1].double(), traj[int(np.argmax(tk))], atol=1e-7, rtol=0)
    nan = tg.reindex(traj, y, grid=grid, outside="nan")
    assert torch.isnan(nan[~torch.as_tensor(inside)]).all() and not torch.isnan(nan[torch.as_tensor(inside)]).any()


def test_reached_is_what_reindex_reports_inside():
    # one notion of "reached": between a run's lowest and highest progress, also where progress is not
    # monotone (re-indexing then takes the first crossing); and re-indexing with the progress already
    # computed gives the same bits as computing it again
    traj, y = training_run(steps=9, seed=4)
    back = torch.cat([traj[:6], traj[2:3], traj[6:]])  # progress falls back once, then rises again
    grid = np.linspace(0.0, 1.0, 40)
    for run in (traj, back):
        tk = np.asarray(tg.progress(run, y))
        out, info = tg.reindex(run, y, grid=grid, return_info=True)
        assert np.array_equal(info["inside"], tg.trajectories.reached([tk], grid))
        assert 0 < info["inside"].sum() < grid.size
        assert torch.equal(tg.reindex(run, y, grid=grid, progress=tk), out)
    both = [np.asarray(tg.progress(r, y)) for r in (traj, traj[:5])]
    expected = (grid >= max(p.min() for p in both)) & (grid <= min(p.max() for p in both))
    assert np.array_equal(tg.trajectories.reached(both, grid), expected)
    assert not tg.trajectories.reached([both[0][:1]], grid).any()  # one checkpoint reaches nothing
    with pytest.raises(ValueError, match=r"progress must hold one value per checkpoint \(9,\)"):
        tg.reindex(traj, y, grid=grid, progress=np.zeros(4))


def test_points_outside_the_reached_range_are_named_as_such():
    # reindex(outside="nan") marks grid values a run does not reach; a function given them says what they are
    traj, y = training_run(steps=6, seed=2)
    a = tg.reindex(traj, y, grid=np.linspace(0, 1, 9), outside="nan")
    first = int(np.flatnonzero(torch.isnan(a).flatten(1).all(1))[0])  # the first value the run does not reach
    assert 0 < first < 8
    with pytest.raises(ValueError, match=rf"a: point {first} is NaN throughout: a grid value the run does not reach"):
        tg.trajectory_distance(a, a)
    with pytest.raises(ValueError, match=rf"run 0, point {first} is NaN throughout"):
        tg.trajectories.tube_radius(torch.stack([a, a]))
    b = a.clone()
    b[2, 5, 1] = float("nan")  # one entry only: a bad probability, reported as before
    with pytest.raises(ValueError, match="sample 5.*not finite"):
        tg.trajectory_distance(b[:first], b[:first])


def test_reindex_points_lie_on_checkpoint_geodesics():
    traj, y = training_run(steps=5)
    out, info = tg.reindex(traj, y, grid=11, return_info=True)
    for j in np.nonzero(info["inside"])[0]:
        k, lam = int(info["segment"][j]), float(info["lam"][j])
        expected = R.geodesic(traj[k], traj[k + 1], lam)
        torch.testing.assert_close(out[j].double(), expected, atol=1e-6, rtol=0)


def test_reindex_is_invariant_to_training_speed():
    """The paper's motivating example: a run that trains twice as fast to the same end point gives
    the same re-indexed trajectory (d_traj = 0)."""
    traj, y = training_run(steps=21)
    a = tg.reindex(traj, y, grid=30)
    # the same path recorded at another speed: each checkpoint twice, or reaching the end and staying
    slow = traj.repeat_interleave(2, 0)
    early = torch.cat([traj, traj[-1:].expand(10, -1, -1)])
    for other in (slow, early):
        assert tg.trajectory_distance(a, tg.reindex(other, y, grid=30)) < 1e-12
    # recorded half as often, the geodesic interpolation stays close to the finer path
    fast = torch.cat([traj[::2], traj[-1:].expand(10, -1, -1)])
    d_fast = tg.trajectory_distance(a, tg.reindex(fast, y, grid=30))
    assert float(R.bhattacharyya(traj[:21], fast[:21]).mean()) > 1e3 * d_fast


def test_non_monotone_progress_uses_first_crossing():
    traj, y = training_run(steps=6)
    wobble = torch.cat([traj[:4], traj[1:2], traj[4:]])  # progress goes up, back down, up again
    out, info = tg.reindex(
        wobble, y, grid=np.array([0.5 * float(tg.progress(traj[1], y) + tg.progress(traj[2], y))]), return_info=True
    )
    assert info["segment"][0] == 1


def test_trajectory_distance_properties():
    a, y = training_run(seed=1)
    b, _ = training_run(seed=2, bias=0.5 * torch.randn(300, 6, generator=torch.Generator().manual_seed(3)))
    ra, rb = tg.reindex(a, y, grid=20), tg.reindex(b, y, grid=20)
    dab, dba = tg.trajectory_distance(ra, rb), tg.trajectory_distance(rb, ra)
    assert dab == pytest.approx(dba, rel=1e-12) and dab > 0
    assert tg.trajectory_distance(ra, ra) == 0.0
    per = R.bhattacharyya(torch.as_tensor(ra), torch.as_tensor(rb)).numpy()
    assert dab == pytest.approx(
        np.trapezoid(per, np.linspace(0, 1, 20)) if hasattr(np, "trapezoid") else np.trapz(per, np.linspace(0, 1, 20)),
        rel=1e-10,
    )


def test_means_tubes_and_normalised_distance():
    y = labels(200, 5, seed=99)
    fam_a = torch.stack([tg.reindex(training_run(200, 5, seed=s)[0], y, grid=10) for s in range(3)])
    bias = 2.0 * torch.randn(200, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    fam_b = torch.stack([tg.reindex(training_run(200, 5, seed=10 + s, bias=bias)[0], y, grid=10) for s in range(3)])
    mean_a = tg.mean_trajectory(fam_a)
    torch.testing.assert_close(mean_a, fam_a.double().mean(0))
    r = tg.tube_radius(fam_a)
    assert r.shape == (10,) and torch.all(r >= 0)
    for k in range(3):
        assert torch.all(R.bhattacharyya(fam_a[k].double(), mean_a) <= r + 1e-15)
    assert torch.all(tg.tube_radius(fam_a[[0, 0, 0]]) < 1e-12)
    nd = tg.normalized_distance(fam_a, fam_b)
    assert nd.shape == (10,)
    assert float(nd[5:].mean()) > 1.0  # differently biased tasks leave each other's tubes
    assert float(tg.normalized_distance(fam_a, fam_a).max()) == 0.0


def test_bhattacharyya_centroid_beats_arithmetic_mean():
    fam = torch.stack([torch.as_tensor(training_run(100, 4, steps=3, seed=s)[0]) for s in range(4)])[:, None, -1]
    objective = lambda mu: float(R.bhattacharyya(fam.double(), torch.as_tensor(mu)[None]).sum())  # noqa: E731
    arith = tg.mean_trajectory(fam)
    centroid = tg.mean_trajectory(fam, method="bhattacharyya")
    assert torch.allclose(centroid.sum(-1), torch.ones(1, dtype=torch.float64))
    assert objective(centroid) <= objective(arith) + 1e-15
    # stationarity: a small move along any geodesic does not decrease the objective
    other = fam[0].double()
    for lam in (1e-3, -1e-3):
        moved = R.geodesic(centroid[0], other[0], abs(lam)) if lam > 0 else centroid[0]
        assert objective(centroid) <= objective(moved[None]) + 1e-12


def test_random_projection():
    p = torch.softmax(torch.randn(3, 50, 100, dtype=torch.float64), -1)
    q, Rm = tg.random_projection(p, 7, seed=3, return_matrix=True)
    assert q.shape == (3, 50, 7)
    np.testing.assert_allclose(Rm.sum(0), 1.0)
    torch.testing.assert_close(q.sum(-1), torch.ones(3, 50, dtype=torch.float64))
    assert torch.all(q >= 0)
    torch.testing.assert_close(tg.random_projection(p, 7, seed=3), q)
    assert not torch.allclose(tg.random_projection(p, 7, seed=4), q)
    # a projection is a Markov map: it never increases the Bhattacharyya distance
    d = tg.pairwise_distances(p)
    dq = tg.pairwise_distances(q)
    assert torch.all(dq <= d + 1e-9)


def test_per_class_progress_of_geodesic_points():
    n, c = 400, 8
    y = labels(n, c, seed=4)
    pt = torch.as_tensor(tg.geodesic(tg.ignorance(n, c), tg.truth(y, c), 0.4))
    pc = tg.per_class_progress(pt, y)
    np.testing.assert_allclose(pc.numpy(), 0.4, atol=1e-8)
    assert math.isnan(float(tg.per_class_progress(pt, y.clamp(max=c - 2), classes=[c - 1])[0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_reindex_on_the_gpu_matches_the_host():
    traj, y = training_run(steps=8)
    host, info_h = tg.reindex(traj, y, grid=15, return_info=True)
    dev, info_d = tg.reindex(traj.cuda(), y.cuda(), grid=15, return_info=True)
    assert dev.is_cuda
    torch.testing.assert_close(dev.cpu(), host, atol=1e-9, rtol=0)
    np.testing.assert_allclose(info_d["lam"], info_h["lam"], atol=1e-9)
    t = tg.progress(dev.float(), y.cuda()).cpu().numpy()
    inside = info_d["inside"]
    np.testing.assert_allclose(t[inside], info_d["grid"][inside], atol=1e-6)


def test_normalized_distance_interval_reweights_exactly_and_brackets_the_estimate():
    """A bootstrap replicate by reweighting equals the statistic recomputed on the resampled samples; with
    unit weights it is the estimate itself; the interval brackets the estimate and narrows with N."""
    g = torch.Generator().manual_seed(3)

    def family(n, shift):
        base = torch.randn(1, 4, n, 5, generator=g, dtype=torch.float64)
        return torch.softmax(base + shift + 0.3 * torch.randn(3, 4, n, 5, generator=g, dtype=torch.float64), -1)

    fa, fb = family(60, 0.0), family(60, 0.5)
    est = np.asarray(tg.normalized_distance(fa, fb))
    ones = tg.trajectories.normalized_distance_interval(fa, fb, weights=np.ones((1, 60)))
    np.testing.assert_allclose(ones["low"], est, rtol=1e-12)
    counts = np.random.default_rng(0).multinomial(60, np.full(60, 1 / 60))
    idx = np.repeat(np.arange(60), counts)
    direct = np.asarray(tg.normalized_distance(fa[:, :, idx], fb[:, :, idx]))
    rew = tg.trajectories.normalized_distance_interval(fa, fb, weights=counts[None])
    np.testing.assert_allclose(rew["low"], direct, rtol=1e-10)
    ci = tg.trajectories.normalized_distance_interval(fa, fb, n_boot=300)
    assert np.all(ci["low"] <= est + 1e-12) and np.all(est <= ci["high"] + 1e-12)
    big_a, big_b = family(2000, 0.0), family(2000, 0.5)
    wide = np.mean(ci["high"] - ci["low"])
    ci_big = tg.trajectories.normalized_distance_interval(big_a, big_b, n_boot=300)
    assert np.mean(ci_big["high"] - ci_big["low"]) < wide


def test_progress_grid_spans_only_reached_progress():
    """Issue 11: the re-indexing grid covers the progress some trajectory reaches (or, shared, every one),
    never beyond, and a gap between disjoint ranges is left out."""
    runs = [np.array([0.02, 0.10, 0.30, 0.25]), np.array([0.05, 0.20, 0.40])]
    g = tg.trajectories.progress_grid(runs, 20)
    assert g.min() == 0.02 and g.max() == 0.40 and len(g) == 20 and np.all(np.diff(g) > 0)
    s = tg.trajectories.progress_grid(runs, 20, shared=True)
    assert s.min() == 0.05 and s.max() == 0.30 and len(s) == 20
    gap = tg.trajectories.progress_grid([np.array([0.0, 0.1]), np.array([0.5, 0.6])], 61)
    assert not np.any((gap > 0.1) & (gap < 0.5)) and gap.min() == 0.0 and gap.max() == 0.6
    with pytest.raises(ValueError, match="share no progress range"):
        tg.trajectories.progress_grid([np.array([0.0, 0.1]), np.array([0.5, 0.6])], 5, shared=True)
    with pytest.raises(ValueError, match="points"):
        tg.trajectories.progress_grid(runs, 0)
    with pytest.raises(ValueError, match=r"checkpoint_progress\[1\]"):
        tg.trajectories.progress_grid([runs[0], np.array([np.nan])], 5)
    # re-indexed on the shared grid, every point of every run lies inside its reached range
    traj_a, y = training_run(seed=1)
    traj_b, _ = training_run(seed=2, speed=0.5)
    tks = [np.asarray(tg.progress(t, y)) for t in (traj_a, traj_b)]
    shared = tg.trajectories.progress_grid(tks, 15, shared=True)
    for t in (traj_a, traj_b):
        _, info = tg.reindex(t, y, grid=shared, return_info=True)
        assert info["inside"].all()


def test_riemann_length_density_thins_checkpoints_and_never_lengthens():
    run, _ = training_run(n=60, c=4, steps=9, seed=2)
    d = tg.trajectories.riemann_length_density(run, strides=(1, 2, 3, 8))
    assert d[1] == pytest.approx(tg.riemann_length(run))
    assert d[2] == pytest.approx(tg.riemann_length(run[[0, 2, 4, 6, 8]]))
    assert d[3] == pytest.approx(tg.riemann_length(run[[0, 3, 6, 8]]))
    assert d[8] == pytest.approx(tg.riemann_length(run[[0, 8]]))
    assert d[1] >= d[2] - 1e-12 and d[1] >= d[3] - 1e-12 and d[8] <= min(d[2], d[3]) + 1e-12
    with pytest.raises(ValueError, match="stride"):
        tg.trajectories.riemann_length_density(run, strides=(0,))
