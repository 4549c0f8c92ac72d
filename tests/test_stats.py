"""The Mantel permutation test of Result 3."""

import numpy as np
import pytest

from taskgeom.stats import mantel


def distances(points):
    p = np.asarray(points, dtype=np.float64)
    return np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))


def test_exact_mantel_test_enumerates_every_permutation():
    rng = np.random.default_rng(0)
    a = distances(rng.normal(size=(5, 2)))
    res = mantel(a, a)
    assert res.exact and res.permutations == 120 and res.statistic == pytest.approx(1.0)
    assert res.p == pytest.approx(1 / 120)  # only the identity arrangement reaches r = 1 (distinct distances)
    # a matrix unrelated to a: a p-value far from significance, and never below 1 / m!
    b = distances(rng.normal(size=(5, 2)))
    res = mantel(a, b)
    assert 1 / 120 <= res.p <= 1 and -1 <= res.statistic <= 1


def test_sampled_permutations_approach_the_exact_p_value():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(6, 2))
    a, b = distances(pts), distances(pts + 0.6 * rng.normal(size=(6, 2)))
    exact = mantel(a, b, permutations=720)
    sampled = mantel(a, b, permutations=719, seed=3)
    assert exact.exact and not sampled.exact
    assert sampled.statistic == exact.statistic
    assert abs(sampled.p - exact.p) < 0.05
    two = mantel(a, b, permutations=720, alternative="two-sided")
    assert two.p >= exact.p
    pearson = mantel(a, b, method="pearson", permutations=720)
    np.testing.assert_allclose(pearson.statistic, np.corrcoef(a[np.triu_indices(6, 1)], b[np.triu_indices(6, 1)])[0, 1])


def test_mantel_rejects_bad_input():
    a = distances(np.random.default_rng(2).normal(size=(4, 2)))
    with pytest.raises(ValueError, match="same items"):
        mantel(a, distances(np.zeros((5, 2)) + np.arange(5)[:, None]))
    with pytest.raises(ValueError, match="symmetric"):
        mantel(a + np.triu(np.ones((4, 4)), 1), a)
    with pytest.raises(ValueError, match="non-finite"):
        mantel(np.where(np.eye(4) > 0, np.nan, a), a)
    with pytest.raises(ValueError, match="square"):
        mantel(a[:2, :2], a[:2, :2])
    with pytest.raises(ValueError, match="method"):
        mantel(a, a, method="kendall")
