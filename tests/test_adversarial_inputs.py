"""Public functions against hostile or careless arguments (issue 26): numbers are never coerced silently
(floats for counts, bools for ints, NaN and infinities, non-positive sizes), complex probabilities are
refused, and unusual files (.npz, big-endian .npy) get one line or the right answer. Each error must be one
line naming the argument. Each case fails on the code before the fix."""

import numpy as np
import pytest
import torch

import taskgeom as tg
from taskgeom import bootstrap, large
from taskgeom import trajectories as tj


def probs(shape, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(shape[-1]), size=shape[:-1])


X = probs((12, 30, 4))
LAB = np.random.default_rng(1).integers(0, 4, 30)
D = np.asarray(tg.pairwise_distances(X))
FAM = np.stack([probs((5, 30, 4), s) for s in range(3)])

CASES = [
    ("k", lambda: tg.inpca(D, k=2.5)),
    ("k", lambda: tg.inpca(D, k=True)),
    ("k", lambda: tg.inpca(D, k="3")),
    ("k", lambda: tg.inpca(D, k=12, method="lanczos")),
    ("method", lambda: tg.inpca(D, method="eig")),
    ("k", lambda: tg.explained_stress([3.0, 2.0, 1.0], k=1.5)),
    ("k", lambda: large.inpca_out_of_core(D, k=2.5)),
    ("budget", lambda: large.inpca_out_of_core(D, k=2, budget=1.5)),
    ("tol", lambda: large.inpca_out_of_core(D, k=2, tol=float("nan"))),
    ("n_landmarks", lambda: large.landmark_inpca(X, n_landmarks=5.5, k=2)),
    ("c_out", lambda: tg.random_projection(X, c_out=2.5)),
    ("refine", lambda: tg.riemann_length(X[:4], refine=1.7)),
    ("refine", lambda: tg.riemann_length(X[:4], refine=True)),
    ("refine", lambda: tg.riemann_length(X[:4], refine=0)),
    ("refine", lambda: tg.riemann_length(X[:4], refine="fine")),
    ("xtol", lambda: tg.progress(X[0], LAB, xtol=float("inf"))),
    ("xtol", lambda: tg.progress(X[0], LAB, xtol=float("nan"))),
    ("xtol", lambda: tg.progress(X[0], LAB, xtol=0.0)),
    ("xtol", lambda: tg.progress(X[0], LAB, xtol=-1e-3)),
    ("xtol", lambda: tg.per_class_progress(X[0], LAB, xtol=float("inf"))),
    ("xtol", lambda: tg.geodesic_progress(X[0], tg.ignorance(30, 4), tg.truth(LAB, 4), xtol=float("inf"))),
    ("classes", lambda: tg.per_class_progress(X[0], LAB, classes=[1.5])),
    ("threads", lambda: tg.progress(X[0], LAB, threads=1.5)),
    ("chunk", lambda: tg.pairwise_distances(X, chunk=2.5)),
    ("chunk", lambda: tg.pairwise_distances(X, chunk=0)),
    ("threads", lambda: tg.pairwise_distances(X, threads=True)),
    ("cuda_method", lambda: tg.pairwise_distances(X, cuda_method="fast")),
    ("n", lambda: tg.ignorance(30.0, 4)),
    ("c", lambda: tg.truth(LAB, c=4.5)),
    ("lam", lambda: tg.geodesic(X[0], X[1], True)),
    ("points", lambda: tj.progress_grid([np.array([0.1, 0.5])], points=2.5)),
    ("grid", lambda: tj.reindex(X[:4], LAB, grid=2.5)),
    ("grid", lambda: tj.reindex(X[:4], LAB, grid=True)),
    ("iters", lambda: tj.mean_trajectory(FAM, method="bhattacharyya", iters=2.5)),
    ("tol", lambda: tj.mean_trajectory(FAM, method="bhattacharyya", tol=float("nan"))),
    ("n_boot", lambda: tj.normalized_distance_interval(FAM, FAM[::-1], n_boot=10.5)),
    ("level", lambda: tj.normalized_distance_interval(FAM, FAM[::-1], level=float("nan"))),
    ("seed", lambda: tj.normalized_distance_interval(FAM, FAM[::-1], seed=1.5)),
    ("n_boot", lambda: bootstrap.sample_weights(30, 2.5, 0)),
    ("n", lambda: bootstrap.sample_weights(True, 3, 0)),
    ("seed", lambda: bootstrap.sample_weights(30, 3, 0.5)),
    ("k", lambda: bootstrap.seed_weights(3.0, 4, 0)),
    ("level", lambda: bootstrap.percentile_interval(np.ones((2, 5)), level="0.9")),
    ("k", lambda: bootstrap.stress_replicates(X[:6], np.ones((2, 30)), k=2.5)),
    ("tile", lambda: large.DeviceDistances(10, 2.5, "cpu")),
]


@pytest.mark.parametrize("name, call", CASES, ids=[f"{i}-{n}" for i, (n, _) in enumerate(CASES)])
def test_a_number_is_never_coerced_silently(name, call):
    with pytest.raises((ValueError, TypeError)) as exc:
        call()
    msg = str(exc.value)
    assert "\n" not in msg and name in msg, msg


def test_integer_types_and_exact_values_still_work():
    emb = tg.inpca(D, k=np.int64(2))
    assert emb.coords.shape == (12, 2)
    assert tg.inpca(D, k=11, method="lanczos").coords.shape == (12, 11)
    assert tg.riemann_length(X[:4], refine=np.int32(3)) > 0
    fine = tg.progress(X[0], LAB, xtol=1e-3)
    assert abs(fine - tg.progress(X[0], LAB)) < 1e-3


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.tensor(X).to(torch.complex128),
        lambda: X.astype(np.complex128),
        lambda: [[[0.5 + 1j, 0.5]]],
    ],
)
def test_complex_probabilities_are_refused_not_truncated(make):
    for call in (
        lambda: tg.pairwise_distances(make()),
        lambda: tg.bhattacharyya(make(), make()),
        lambda: tg.progress(make(), LAB[: np.shape(make())[-2]]),
    ):
        with pytest.raises((TypeError, ValueError)) as exc:
            call()
        assert "must be real" in str(exc.value) and "\n" not in str(exc.value)


def test_a_boolean_tensor_is_not_taken_for_probabilities():
    with pytest.raises((TypeError, ValueError), match="dtype torch.bool"):
        tg.pairwise_distances(torch.ones(2, 3, 2, dtype=torch.bool))


def test_an_npz_source_is_refused_in_one_line_naming_its_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", preds=X)
    with pytest.raises(ValueError) as exc:
        tg.pairwise_distances(str(tmp_path / "a.npz"), out=tmp_path / "D")
    msg = str(exc.value)
    assert "\n" not in msg and "a.npz" in msg and ".npz archive" in msg and "preds" in msg


def test_a_big_endian_npy_gives_the_native_answer(tmp_path):
    np.save(tmp_path / "be.npy", X.astype(">f8"))
    be = np.load(tmp_path / "be.npy", mmap_mode="r")
    for backend in ("cpu", "torch"):
        np.testing.assert_array_equal(
            np.asarray(tg.pairwise_distances(be, backend=backend)),
            np.asarray(tg.pairwise_distances(X, backend=backend)),
        )
    np.testing.assert_array_equal(tg.progress(be[0], LAB), tg.progress(X[0], LAB))
    out = np.asarray(tg.pairwise_distances(str(tmp_path / "be.npy"), out=tmp_path / "D", tile=16))
    np.testing.assert_array_equal(out, D)
    Dbe = D.astype(">f8")
    np.testing.assert_allclose(tg.inpca(Dbe, k=2).eigenvalues, tg.inpca(D, k=2).eigenvalues)
