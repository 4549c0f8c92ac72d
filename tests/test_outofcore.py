"""Out-of-core distances (tiles, ledger, resume, growth), the Ray engine, InPCA without W in memory and
landmark InPCA, against the in-memory computations."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import taskgeom as tg
from taskgeom import engines, large, tiled
from taskgeom.modelsets import open_models


def synth(m, n=120, c=6, seed=0, dims=3):
    """Models on a low-dimensional family (as trajectories are), float16."""
    g = np.random.default_rng(seed)
    base = g.standard_normal((dims, n, c)) * 2
    t = g.uniform(0, 1, (m, dims))
    logits = np.einsum("mk,knc->mnc", t, base) + 0.05 * g.standard_normal((m, n, c))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float16)


@pytest.fixture
def preds(tmp_path):
    x = synth(90)
    np.save(tmp_path / "p.npy", x)
    return tmp_path / "p.npy", x


def count_pairs(monkeypatch):
    """Count the model pairs the tiles compute (rows x cols of each kernel call)."""
    seen = []
    real = tiled.block_distances

    def counting(a, b=None, **kw):
        seen.append(len(a) * (len(a) if b is None else len(b)))
        return real(a, b, **kw)

    monkeypatch.setattr(tiled, "block_distances", counting)
    return seen


def test_tiles_equal_the_in_memory_matrix_and_finished_tiles_are_not_recomputed(preds, tmp_path, monkeypatch):
    path, x = preds
    D = tg.pairwise_distances(str(path), out=tmp_path / "D", tile=16)
    np.testing.assert_array_equal(np.asarray(D), tg.pairwise_distances(x))
    assert len(list((tmp_path / "D" / "tiles").glob("*.json"))) == 6 * 7 // 2
    seen = count_pairs(monkeypatch)
    tg.pairwise_distances(str(path), out=tmp_path / "D")  # nothing left to do
    assert seen == []


def test_a_run_killed_halfway_resumes_without_recomputing(preds, tmp_path, monkeypatch):
    path, x = preds
    calls = {"n": 0}
    real = tiled.compute_tile

    def dying(*a, **kw):
        if calls["n"] == 9:
            raise KeyboardInterrupt  # the run is stopped after 9 tiles
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(tiled, "compute_tile", dying)
    with pytest.raises(KeyboardInterrupt):
        tg.pairwise_distances(str(path), out=tmp_path / "D", tile=16)
    monkeypatch.setattr(tiled, "compute_tile", real)
    dm = tiled.DistanceMatrix(tmp_path / "D")
    assert len(dm.tasks()) == 21 - 9
    seen = count_pairs(monkeypatch)
    D = tg.pairwise_distances(str(path), out=tmp_path / "D")
    assert len(seen) == 12
    np.testing.assert_array_equal(np.asarray(D), tg.pairwise_distances(x))


def test_sigkill_of_a_writer_leaves_a_resumable_folder(tmp_path):
    x = synth(200, n=400)
    np.save(tmp_path / "p.npy", x)
    code = textwrap.dedent(f"""
        import taskgeom as tg
        tg.pairwise_distances({str(tmp_path / "p.npy")!r}, out={str(tmp_path / "D")!r}, tile=16)
    """)
    for delay in (0.5, 1.0, 1.5):
        proc = subprocess.Popen([sys.executable, "-c", code])
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    D = tg.pairwise_distances(str(tmp_path / "p.npy"), out=tmp_path / "D")
    np.testing.assert_array_equal(np.asarray(D), tg.pairwise_distances(x))


def test_added_models_compute_only_their_rows_and_columns(tmp_path, monkeypatch):
    x = synth(70)
    np.save(tmp_path / "a.npy", x[:50])
    tg.pairwise_distances(str(tmp_path / "a.npy"), out=tmp_path / "D", tile=16)
    np.save(tmp_path / "b.npy", x)
    expected = tg.pairwise_distances(x)
    seen = count_pairs(monkeypatch)
    D = tg.pairwise_distances(str(tmp_path / "b.npy"), out=tmp_path / "D")
    np.testing.assert_array_equal(np.asarray(D), expected)
    # exactly the new columns of the old tile rows, the new tiles, and the diagonal tile at the old edge:
    # 3 x (16 x 14 + 16 x 6) + 16 x 16 + 16 x 6 + 6 x 6 pairs, against 70 x 70 for the whole matrix
    assert sum(seen) == 1348
    changed = x.copy()
    changed[3] = changed[4]
    np.save(tmp_path / "c.npy", changed)
    with pytest.raises(ValueError, match="model 3 of the 70 given differs"):
        tg.pairwise_distances(str(tmp_path / "c.npy"), out=tmp_path / "D")


def test_tile_size_follows_the_budget_not_the_number_of_models():
    t = tiled.tile_size(1000, 10, 2, budget=64 << 20)
    assert 16 <= t <= 4096 and 2 * t * 1000 * 10 * 10 + 8 * t * t <= 64 << 20
    assert tiled.tile_size(1000, 10, 2, budget=1 << 30) > t


def test_store_source_and_cli(tmp_path, capsys):
    from taskgeom import cli
    from taskgeom.store import PredictionStore

    x = synth(24)
    labels = np.arange(120) % 6
    store = PredictionStore(tmp_path / "s", create=True)
    store.add_eval_set("e", labels, c=6)
    for k, task in enumerate(("a", "b", "a")):
        t = store.create_trajectory("e", task=task, method="supervised", seed=k)
        store.extend(t, x[8 * k : 8 * k + 8])
    assert cli.main(["distances", str(tmp_path / "s"), "-o", str(tmp_path / "D"), "--select", "task=a"]) == 0
    D = np.load(tmp_path / "D" / "D.npy")
    sel = np.concatenate([x[0:8], x[16:24]])
    np.testing.assert_allclose(D, tg.pairwise_distances(sel), rtol=1e-12, atol=1e-15)
    assert "16 models" in capsys.readouterr().out
    assert cli.main(["distances", str(tmp_path / "s"), "-o", str(tmp_path / "D2"), "--select", "task"]) == 2
    assert open_models(tmp_path / "s", seed=[1]).m == 8


def test_out_of_core_inpca_equals_the_dense_solver(preds, tmp_path):
    x = synth(300, n=80)
    np.save(tmp_path / "p.npy", x)
    tg.pairwise_distances(str(tmp_path / "p.npy"), out=tmp_path / "D", tile=64)
    dense = tg.inpca(np.load(tmp_path / "D" / "D.npy"), k=10)
    ooc = large.inpca_out_of_core(tmp_path / "D", k=10, budget=64 * 300 * 8)  # 64 rows at a time
    np.testing.assert_allclose(ooc.eigenvalues, dense.eigenvalues, rtol=1e-8)
    assert ooc.total_sq == pytest.approx(dense.total_sq, rel=1e-12)
    assert ooc.explained_stress(3) == pytest.approx(dense.explained_stress(3), rel=1e-10)
    assert large.procrustes_correlation(dense.coords[:, :3], ooc.coords[:, :3]) > 1 - 1e-9
    assert (ooc.eigenvalues < 0).any() or (dense.eigenvalues > 0).all()  # both ends of the spectrum kept


def test_landmark_inpca_approximates_the_exact_embedding(tmp_path):
    x = synth(400, n=80)
    exact = tg.inpca(tg.pairwise_distances(x), k=3)
    for method in ("random", "farthest"):
        lm = large.landmark_inpca(x, n_landmarks=60, k=3, method=method, check=100)
        assert large.procrustes_correlation(exact.coords, lm.coords) > 0.99
        assert lm.error["relative_distance_error"] < 0.1 and lm.error["models_checked"] == 100
        assert abs(lm.explained_stress(3) - exact.explained_stress(3)) < 0.01
    # with every model a landmark, placement reproduces the exact embedding
    full = large.landmark_inpca(x[:50], n_landmarks=50, k=3, check=0)
    ex = tg.inpca(tg.pairwise_distances(x[:50]), k=3)
    np.testing.assert_allclose(np.abs(full.coords), np.abs(ex.coords), atol=1e-8)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    engines.init_ray(num_cpus=2)  # (an empty working dir: workers import the installed taskgeom)
    yield ray
    ray.shutdown()


def test_ray_engine_equals_local_and_retries_a_killed_worker(local_ray, preds, tmp_path, monkeypatch):
    path, x = preds
    local = np.asarray(tg.pairwise_distances(str(path), out=tmp_path / "L", tile=16))
    remote = np.asarray(tg.pairwise_distances(str(path), out=tmp_path / "R", tile=16, engine="ray"))
    np.testing.assert_array_equal(remote, local)
    marker = tmp_path / "killed"
    monkeypatch.setenv("TASKGEOM_FAULT_KILL_WORKER_ONCE", str(marker))
    again = np.asarray(tg.pairwise_distances(str(path), out=tmp_path / "K", tile=16, engine="ray"))
    assert marker.exists()  # a worker died, and its tile was retried
    np.testing.assert_array_equal(again, local)
    meta = json.loads((tmp_path / "K" / "meta.json").read_text())
    assert meta["m"] == 90
