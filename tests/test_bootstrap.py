"""Bootstrap by reweighting per-sample terms (issue 11, item 9): exact reweighting identities against
recomputation on resampled samples, intervals that bracket the estimate and shrink with more samples,
seeded reproducibility."""

import numpy as np
import pytest
import torch
from test_trajectories import training_run

import taskgeom as tg
from taskgeom import bootstrap as bs
from taskgeom import reference


def _family(n=200, seeds=3, c=5):
    runs = [training_run(n=n, c=c, steps=6, seed=s)[0] for s in range(seeds)]
    y = training_run(n=n, c=c)[1]
    grid = np.linspace(0.05, 0.5, 7)
    return torch.stack([torch.as_tensor(tg.reindex(r, y, grid=grid)) for r in runs]), y


def test_unit_weights_give_the_estimate():
    fam, y = _family()
    ones = np.ones((1, fam.shape[2]))
    final = fam[:, -1]
    np.testing.assert_allclose(bs.progress_replicates(final, y, ones)[:, 0], tg.progress(final, y), atol=1e-10)
    np.testing.assert_allclose(tg.trajectories.tube_radius_replicates(fam, ones)[:, 0], tg.tube_radius(fam), rtol=1e-12)
    pts = fam.reshape(-1, fam.shape[2], fam.shape[3])
    chi = tg.inpca(reference.pairwise_distances(pts)).explained_stress()[:4]
    np.testing.assert_allclose(bs.stress_replicates(pts, ones, k=4)[0], chi, atol=1e-10)


def test_reweighting_equals_recomputation_on_resampled_samples():
    fam, y = _family()
    n = fam.shape[2]
    counts = bs.sample_weights(n, 2, np.random.default_rng(5))
    for b, w in enumerate(counts):
        idx = np.repeat(np.arange(n), w.astype(int))
        sub = fam[:, :, idx]
        prog = bs.progress_replicates(fam[:, -1], y, counts)[:, b]
        np.testing.assert_allclose(prog, tg.progress(sub[:, -1], y[idx]), atol=1e-9)
        rad = tg.trajectories.tube_radius_replicates(fam, counts)[:, b]
        np.testing.assert_allclose(rad, tg.tube_radius(sub), rtol=1e-10)
        pts = sub.reshape(-1, len(idx), fam.shape[3])
        chi = tg.inpca(reference.pairwise_distances(pts)).explained_stress()[:3]
        np.testing.assert_allclose(
            bs.stress_replicates(fam.reshape(-1, n, fam.shape[3]), counts, k=3)[b], chi, atol=1e-9
        )


def test_reweighted_matrices_go_through_the_planner_and_equal_resampled_ones():
    """taskgeom.pairwise.weighted_distances (the bootstrap's B matrices, planned and executed as every
    pairwise matrix): each replicate's matrix equals the float64 reference on the samples it draws (each
    repeated as often as drawn), and a plan of several tiles (mirrored off-diagonal ones) gives the one-tile
    matrices to rounding."""
    from taskgeom.pairwise import weighted_distances

    fam, _ = _family(n=120)
    pts = reference.normalized(fam.reshape(-1, fam.shape[2], fam.shape[3]).to(torch.float64))
    counts = torch.as_tensor(bs.sample_weights(pts.shape[1], 3, np.random.default_rng(2)), dtype=torch.float64)
    one = weighted_distances(pts, counts, budget=5000)
    for b, w in enumerate(counts):
        idx = np.repeat(np.arange(pts.shape[1]), w.numpy().astype(int))
        np.testing.assert_allclose(one[b], reference.pairwise_distances(pts[:, idx]), rtol=1e-12, atol=1e-14)
    tiled = weighted_distances(pts, counts, budget=5000, tile=4)
    assert pts.shape[0] > 8 and one.shape == tiled.shape == (3, pts.shape[0], pts.shape[0])
    np.testing.assert_allclose(tiled, one, rtol=0, atol=1e-14)
    assert torch.equal(tiled, tiled.transpose(1, 2)) and not tiled.diagonal(dim1=1, dim2=2).any()


def test_seed_replicates_equal_recomputation_on_the_seeds_drawn():
    """A replicate that draws seeds (2, 1, 0) and resamples samples is the statistic recomputed on that
    family (seed 0 twice, seed 1 once, seed 2 left out) and those samples: means recomputed, not held."""
    fam, _ = _family()
    other, _ = _family(seeds=4)
    other = other.flip(0)
    n = fam.shape[2]
    counts = bs.sample_weights(n, 2, np.random.default_rng(7))
    seeds_a, seeds_b = np.array([[2, 1, 0], [1, 1, 1]]), np.array([[0, 0, 4, 0], [2, 0, 1, 1]])
    rad = tg.trajectories.tube_radius_replicates(fam, counts, seeds=seeds_a)
    nd, db = tg.trajectories.pair_replicates(fam, other, counts, seeds_a, seeds_b)
    for b in range(2):
        idx = np.repeat(np.arange(n), counts[b].astype(int))
        fa = fam[np.repeat(np.arange(3), seeds_a[b])][:, :, idx]
        fb = other[np.repeat(np.arange(4), seeds_b[b])][:, :, idx]
        np.testing.assert_allclose(rad[:, b], tg.tube_radius(fa), rtol=1e-10, atol=1e-15)
        np.testing.assert_allclose(nd[:, b], tg.normalized_distance(fa, fb), rtol=1e-9)
        np.testing.assert_allclose(db[:, b], tg.bhattacharyya(fa.mean(0), fb.mean(0)), rtol=1e-9)
    assert (bs.seed_weights(1, 4, 0) == 1).all() and bs.seed_weights(2, 4, 0).sum(1).tolist() == [2] * 4


def test_a_replicate_of_one_seed_drawn_k_times_has_no_tube():
    """A replicate that draws one seed only (K times) has that seed for its mean: its tube radius is exactly 0
    (as tube_radius of one trajectory), not rounding's 1e-17, so where both families' replicates have no
    tube the normalised distance is inf (reported as unbounded), as normalized_distance gives for two single
    trajectories, not a finite 1e15."""
    fam, _ = _family()
    other, _ = _family(seeds=4)
    other = other.flip(0)
    counts = bs.sample_weights(fam.shape[2], 2, np.random.default_rng(3))
    # other is the 4-seed family reversed: its seed drawn here (index 2) is training seed 1, fam's drawn is 0
    seeds_a, seeds_b = np.array([[3, 0, 0], [1, 1, 1]]), np.array([[0, 0, 4, 0], [0, 4, 0, 0]])
    rad = tg.trajectories.tube_radius_replicates(fam, counts, seeds=seeds_a)
    assert (rad[:, 0] == 0).all() and (rad[:, 1] > 0).all()
    nd, _ = tg.trajectories.pair_replicates(fam, other, counts, seeds_a, seeds_b)
    assert np.isinf(nd[:, 0]).all() and np.isfinite(nd[:, 1]).all()
    single = tg.normalized_distance(fam[0:1], other[2:3])
    assert np.isinf(single).all()


def test_interval_brackets_the_estimate_and_shrinks_with_more_samples():
    widths = []
    for n in (100, 1600):
        fam, y = _family(n=n)
        est = np.asarray(tg.progress(fam[:, -1], y))
        reps = bs.progress_replicates(fam[:, -1], y, bs.sample_weights(n, 300, 0)).numpy()
        lo, hi = bs.percentile_interval(reps)
        assert np.all(lo <= est) and np.all(est <= hi)
        widths.append(np.mean(hi - lo))
    assert widths[1] < 0.5 * widths[0]  # about 1/sqrt(16) of it


def test_seeded_and_checked():
    a, b = bs.sample_weights(50, 10, 3), bs.sample_weights(50, 10, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, bs.sample_weights(50, 10, 4))
    assert (a.sum(1) == 50).all()
    with pytest.raises(ValueError, match="n_boot"):
        bs.sample_weights(50, 0, 0)
    with pytest.raises(ValueError, match="level"):
        bs.percentile_interval(np.zeros(5), level=1.5)
    with pytest.raises(ValueError, match="weights must be"):
        bs.reweighted_mean(np.zeros((3, 5)), np.ones((2, 4)))


def test_stress_of_many_points_by_lanczos_matches_all_eigenvalues():
    pts = torch.softmax(torch.randn(240, 30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    ones = np.ones((1, 30))
    chi = tg.inpca(reference.pairwise_distances(pts)).explained_stress()[:5]
    np.testing.assert_allclose(bs.stress_replicates(pts, ones, k=5)[0], chi, atol=1e-9)


def test_stress_replicates_with_an_index_equal_the_embedding_of_those_points():
    """A replicate's ``index`` (points repeated as their seed is drawn) is the embedding recomputed on the
    resampled samples of exactly those points."""
    fam, _ = _family()
    n = fam.shape[2]
    pts = fam.reshape(-1, n, fam.shape[3])
    counts = bs.sample_weights(n, 2, np.random.default_rng(3))
    index = [np.r_[0:7, 0:7, 14:21], np.r_[7:21]]
    got = bs.stress_replicates(pts, counts, k=3, index=index)
    for b in range(2):
        idx = np.repeat(np.arange(n), counts[b].astype(int))
        sub = pts[index[b]][:, idx]
        chi = tg.inpca(reference.pairwise_distances(sub)).explained_stress()[:3]
        np.testing.assert_allclose(got[b], chi, atol=1e-9)
    with pytest.raises(ValueError, match="one array of point indices per replicate"):
        bs.stress_replicates(pts, counts, k=3, index=index[:1])


def test_point_index_repeats_each_runs_points_as_its_seed_is_drawn():
    # runs 0, 1 (group a) and 2 (group b) own 2, 3 and 1 stacked points; a replicate holds each run's points
    # as often as it draws the run's seed, groups and seeds in order
    boot = bs.Resampling(10, 3, {"a": 2, "b": 1}, seed=4)
    boot.seeds = {"a": np.array([[2, 0], [1, 1], [0, 2]]), "b": np.array([[1], [1], [1]])}
    index = boot.point_index({"a": [0, 1], "b": [2]}, [2, 3, 1])
    assert [i.tolist() for i in index] == [[0, 1, 0, 1, 5], [0, 1, 2, 3, 4, 5], [2, 3, 4, 2, 3, 4, 5]]
    assert bs.Resampling(10, 0, {"a": 2}).point_index({"a": [0, 1]}, [2, 3]) == []


def test_intervals_without_replicates_are_undefined():
    lo, hi = bs.percentile_interval(np.zeros((3, 0)))
    assert np.isnan(lo).all() and np.isnan(hi).all() and lo.shape == (3,)
    lo, hi = bs.percentile_interval(np.zeros((2, 0)), estimate=np.zeros(2))
    assert np.isnan(lo).all() and np.isnan(hi).all()
    with pytest.raises(ValueError, match="last axis of replicates"):
        bs.percentile_interval(np.float64(1.0))
    # an interpolation that reaches an infinite replicate is that infinity (numpy's gives NaN)
    row = np.concatenate([np.linspace(1, 2, 95), np.full(5, np.inf)])
    assert bs.percentile_interval(row)[1] == np.inf and bs.percentile_interval(row, estimate=1.5)[1] == np.inf
