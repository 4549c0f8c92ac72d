"""taskgeom.InPCA, the scikit-learn estimator on precomputed divergences (issue 12, item 4)."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import check_estimator

import taskgeom as tg


def _models(m=12, n=40, c=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(c), size=(m, n))


#: sklearn's checks that cannot apply to an estimator whose input is a divergence matrix: none at present.
#: (The generic checks pass because ``metric="precomputed"`` makes sklearn feed Euclidean distance matrices,
#: and ``positive_only`` says divergences are >= 0; array-API input is skipped by sklearn itself unless
#: SCIPY_ARRAY_API is set, and the torch-backed core converts to float64 numpy anyway.)
NOT_APPLICABLE: set[str] = set()


def test_sklearn_estimator_checks():
    results = check_estimator(tg.InPCA(n_components=2), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    failed = [f for f in failed if f[0] not in NOT_APPLICABLE]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 40


def test_matches_the_function_and_transforms_new_models():
    P = _models()
    D = tg.pairwise_distances(P)
    est = tg.InPCA(n_components=3).fit(D[:9, :9])
    emb = tg.inpca(D[:9, :9], k=3)
    assert isinstance(emb, tg.Embedding)
    np.testing.assert_allclose(est.embedding_, emb.coords)
    np.testing.assert_allclose(est.eigenvalues_, emb.eigenvalues)
    np.testing.assert_array_equal(est.signature_, emb.signature)
    assert est.explained_stress(3) == pytest.approx(emb.explained_stress(3))
    assert est.explained_stress().shape == (3,)
    # a fitted model placed from its distances lands on its own coordinates
    np.testing.assert_allclose(est.transform(D[:9, :9]), est.embedding_, atol=1e-10)
    new = est.transform(D[9:, :9])
    assert new.shape == (3, 3) and np.isfinite(new).all()
    np.testing.assert_allclose(tg.InPCA(n_components=3).fit_transform(D[:9, :9]), est.embedding_)


def test_sklearn_conventions():
    est = tg.InPCA(n_components=2)
    assert est.get_params() == {"n_components": 2, "eigen_solver": "auto", "metric": "precomputed"}
    assert clone(est).n_components == 2
    D = tg.pairwise_distances(_models())
    assert make_pipeline(tg.InPCA(n_components=2)).fit_transform(D).shape == (12, 2)
    with pytest.raises(ValueError, match="12 features"):
        tg.InPCA(n_components=2).fit(D).transform(D[:, :5])
    with pytest.raises(ValueError, match="precomputed"):
        tg.InPCA(metric="euclidean").fit(D)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        tg.InPCA().transform(D)
