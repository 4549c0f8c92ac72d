"""The analysis protocols of issue 11 on a synthetic store (no training): grids over the progress
reached, comparisons over the shared range, and bootstrap intervals by reweighting per-sample terms."""

import math

import numpy as np
import pytest
import torch
from test_trajectories import training_run

from taskgeom.analysis import analyse, reached_mask
from taskgeom.store import PredictionStore

N, C = 240, 6


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    store = PredictionStore(tmp_path_factory.mktemp("store"), create=True)
    _, y = training_run(n=N, c=C)
    store.add_eval_set("toy", y.numpy(), c=C)
    bias = torch.zeros(N, C, dtype=torch.float64)
    bias[:, 0] = 1.0  # task "b" drifts towards class 0
    for task, speed, b in (("all", 0.6, None), ("b", 0.3, bias)):
        for seed in range(3):
            traj, _ = training_run(n=N, c=C, steps=8, seed=seed, speed=speed, bias=b)
            g = torch.Generator().manual_seed(100 + seed)  # per-sample variation at every checkpoint
            traj = torch.softmax(traj.log() + 0.5 * torch.randn(traj.shape, generator=g, dtype=torch.float64), -1)
            t = store.create_trajectory("toy", task=task, method="supervised", seed=seed, architecture="toy")
            for k, p in enumerate(traj):
                store.append(t, p.numpy(), epoch=k, step=k, accuracy=None)
    return analyse(store, "toy", ["all", "b"], grid=20, n_boot=100), store


def test_grid_spans_only_progress_some_run_reaches(result):
    res, store = result
    from taskgeom import geometry

    ranges = []
    for t in store.select():
        p = np.asarray(geometry.progress(np.asarray(t.probs), store.eval_set("toy").labels))
        ranges.append((p.min(), p.max()))
    lo, hi = np.array(ranges).T
    g = np.asarray(res.grid)
    assert g.min() == pytest.approx(lo.min()) and g.max() == pytest.approx(hi.max()) and hi.max() < 0.9
    assert all(((lo <= v + 1e-12) & (v <= hi + 1e-12)).any() for v in g)
    # a task's tube radius and the curves against the reference exist only where every seed reached
    for task, r in res.tube_radius.items():
        assert [v is not None for v in r] == res.reached[task]
    keep = reached_mask(res, "b")
    assert keep.any() and not keep.all()
    assert [v is not None for v in res.normalized_distance["b"]] == keep.tolist()
    assert "progress 1.000" not in str([p for ln in res.embedding.lines for p in ln.points])


def test_task_distances_use_the_shared_range(result):
    res, _ = result
    td = res.task_distances
    assert td["points_compared"]["all|b"] == 20  # re-indexed afresh on the pair's shared range
    nd = np.asarray(td["normalized"])
    assert np.isfinite(nd).all() and nd[0, 1] == nd[1, 0] > 0 and math.isfinite(td["bhattacharyya"][0][1])


def test_bootstrap_intervals_bracket_the_estimates(result):
    res, _ = result
    u = res.to_json()["uncertainty"]
    assert u["replicates"] == 100 and u["level"] == 0.95 and "seeds" in u["over"]
    for task, v in res.progress_on_union_task.items():
        iv = u["progress_on_union_task"][task]
        assert iv["low"] <= v["mean"] <= iv["high"] and iv["low"] < iv["high"] and iv["over"].endswith(f"{task}: 3)")
    for k, v in res.explained_stress.items():  # seeds drawn twice embed duplicated points: replicates sit high
        iv = u["explained_stress"][k]
        assert iv["low"] <= iv["high"] and 0 <= iv["above_estimate"] <= 1 and iv["over"] == u["over"]
    for task, r in res.tube_radius.items():
        iv = u["tube_radius"][task]
        for est, lo, hi in zip(r, iv["low"], iv["high"]):
            assert (est is None) == (lo is None) and (est is None or lo - 1e-12 <= est <= hi + 1e-12)
    td = res.task_distances
    for name in ("normalized", "bhattacharyya"):
        lo, hi = (np.asarray(td[f"{name}_interval"][x]) for x in ("low", "high"))
        assert lo[0, 1] <= td[name][0][1] <= hi[0, 1]
    nd = res.normalized_distance_interval["b"]
    assert nd["over"] == "evaluation samples and seeds (seeds per task: b: 3, all: 3)"
    assert [v is None for v in nd["low"]] == [v is None for v in res.normalized_distance["b"]]


def test_bootstrap_is_seeded(result):
    _, store = result
    a = analyse(store, "toy", ["all", "b"], grid=6, n_boot=20, seed=1).uncertainty
    b = analyse(store, "toy", ["all", "b"], grid=6, n_boot=20, seed=1).uncertainty
    c = analyse(store, "toy", ["all", "b"], grid=6, n_boot=20, seed=2).uncertainty
    assert a == b and a != c
    assert analyse(store, "toy", ["all"], grid=6, n_boot=0).uncertainty == {}


def test_embedding_holds_no_clamped_copies(result):
    """Only the grid values a run reached are embedded; means only where every seed of the task reached."""
    res, store = result
    emb = res.embedding
    keep = np.asarray(emb.embedded, dtype=bool)
    assert keep.shape == (res.trajectories, len(res.grid)) and not keep.all() and keep.any(1).all()
    assert res.to_json()["embedded_points"] == keep.sum() == len(emb.coords)
    seeds = [ln for ln in emb.lines if not ln.mean]
    for i, ln in enumerate(seeds):
        assert [p["progress"] for p in ln.points] == [g for g, k in zip(res.grid, keep[i]) if k]
        np.testing.assert_array_equal(emb.trajectory_coords(i), [p["xyz"] for p in ln.points])
        prog = np.asarray(emb.keys[i][2])
        assert all(prog.min() - 1e-9 <= p["progress"] <= prog.max() + 1e-9 for p in ln.points)
    for ln in (ln for ln in emb.lines if ln.mean):
        assert [p["progress"] for p in ln.points] == [g for g, k in zip(res.grid, res.reached[ln.task]) if k]


def test_progress_at_initialisation_and_gain(result):
    res, store = result
    from taskgeom import geometry

    labels = store.eval_set("toy").labels
    for task in ("all", "b"):
        first = [float(geometry.progress(np.asarray(t.probs[0]), labels)) for t in store.select(task=task)]
        assert res.progress_at_init[task]["seeds"] == pytest.approx(first)
        gain = np.asarray(res.progress_on_union_task[task]["seeds"]) - np.asarray(first)
        assert res.progress_gain[task]["seeds"] == pytest.approx(gain.tolist())
        u = res.uncertainty
        assert (
            u["progress_at_init"][task]["low"]
            <= res.progress_at_init[task]["mean"]
            <= u["progress_at_init"][task]["high"]
        )
        assert u["progress_gain"][task]["low"] <= res.progress_gain[task]["mean"] <= u["progress_gain"][task]["high"]
    assert len(res.per_class_progress_at_init["b"]) == C


def test_task_pairs_are_compared_over_one_common_range(result):
    res, _ = result
    td = res.task_distances
    lo, hi = td["progress_compared"]
    # the range every seed of every task reaches: from the highest start to the lowest end
    starts = [min(k[2]) for k in res.embedding.keys]
    ends = [max(k[2]) for k in res.embedding.keys]
    assert lo == pytest.approx(max(starts)) and hi == pytest.approx(min(ends))


def test_place_agrees_with_refitting_the_embedding_with_the_placed_models(result):
    """Placing a run out of sample against fitting the embedding with it included: the coordinates agree
    up to the out-of-sample error (measured here: Procrustes-aligned, well under the picture's spread)."""
    from taskgeom import embedding, geometry
    from taskgeom.analysis import place
    from taskgeom.pairwise import pairwise_distances

    res, store = result
    extra = np.asarray(store.select(task="b")[0].probs, dtype=np.float32)
    extra /= extra.sum(-1, keepdims=True)  # stored as float16: renormalised at float32
    labels = store.eval_set("toy").labels
    out = place(res, extra, name="b, seed 0 again")
    pts = out["points"]
    assert len(pts) == len(extra) and out["line"].task == "b, seed 0 again"
    prog = np.asarray(geometry.progress(extra, labels))
    np.testing.assert_allclose([p["progress"] for p in pts], prog, atol=1e-9)
    # a model of the picture itself is placed exactly where it is embedded
    fit = res.fit
    again = place(res, fit["points"][:3])["points"]
    np.testing.assert_allclose([p["xyz"] for p in again], np.asarray(res.embedding.coords)[:3], atol=1e-8)
    # refit with the placed models included: compare the placed coordinates after aligning the two fits
    allp = np.concatenate([fit["points"], extra])
    refit = embedding.inpca(np.asarray(pairwise_distances(allp)), k=3).coords[:, :3]
    base = np.asarray(res.embedding.coords)[:, :3]
    a, b = refit[: len(base)], base
    u, _, vt = np.linalg.svd((a - a.mean(0)).T @ (b - b.mean(0)))
    rot = u @ vt
    placed_refit = (refit[len(base) :] - a.mean(0)) @ rot + b.mean(0)
    err = np.linalg.norm(placed_refit - np.array([p["xyz"] for p in pts]), axis=1)
    spread = np.linalg.norm(base - base.mean(0), axis=1).max()
    assert err.max() < 0.1 * spread
    # every task's tube: a number where the run's progress is inside its reached range, else None
    assert all(set(p["tube_radii"]) == {"all", "b"} for p in pts)
    assert any(v is not None for p in pts for v in p["tube_radii"].values())
    with pytest.raises(ValueError, match="models must be"):
        place(res, extra[:, :10])


def test_any_store_grouped_by_method_or_a_config_field(tmp_path):
    """analyse() groups by any recorded field, not only supervised runs' tasks."""
    store = PredictionStore(tmp_path / "s", create=True)
    _, y = training_run(n=N, c=C)
    store.add_eval_set("toy", y.numpy(), c=C)
    for method, lr, speed in (("sgd", 0.1, 0.6), ("adam", 0.01, 0.3)):
        for seed in range(2):
            traj, _ = training_run(n=N, c=C, steps=6, seed=seed, speed=speed)
            t = store.create_trajectory("toy", task="all", method=method, seed=seed, config={"optim": {"lr": lr}})
            store.extend(t, traj.numpy())
    by_method = analyse(store, grid=8, n_boot=0, group_by="method")
    assert list(by_method.progress_on_union_task) == ["adam", "sgd"] and by_method.reference_task == "adam"
    assert {ln.method for ln in by_method.embedding.lines} == {"adam", "sgd"}
    by_lr = analyse(store, grid=8, n_boot=0, group_by="optim.lr", reference="0.1")
    assert set(by_lr.progress_on_union_task) == {"0.1", "0.01"} and by_lr.reference_task == "0.1"
    assert list(by_lr.normalized_distance) == ["0.01"]
    with pytest.raises(ValueError, match="reference group 'nope'"):
        analyse(store, grid=8, n_boot=0, group_by="method", reference="nope")
    with pytest.raises(RuntimeError, match="no trajectories"):
        analyse(store, grid=8, n_boot=0, group_by="method", tasks=["lbfgs"])


def _runs(alphas_by_run, n=60, c=4, seed=0):
    """Trajectories (objects with ``probs``) moving from ignorance towards the labels by the given amounts."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    truth = torch.nn.functional.one_hot(y, c).double() * 0.9 + 0.1 / c
    out = []
    for alphas in alphas_by_run:
        noise = torch.softmax(0.2 * torch.randn(n, c, generator=g, dtype=torch.float64), -1)
        probs = torch.stack([(1 - a) * noise + a * truth for a in alphas])
        out.append(SimpleNamespace(probs=probs.numpy()))
    return out, y.numpy()


def test_trajectory_groups_grids_masks_and_reindexing():
    import taskgeom as tg
    from taskgeom.analysis import TrajectoryGroups

    early, y = _runs([[0.0, 0.1, 0.2], [0.05, 0.15, 0.25]])
    late, _ = _runs([[0.5, 0.7, 0.9], [0.6, 0.8, 0.85]], seed=0)
    mid, _ = _runs([[0.1, 0.5, 0.8]], seed=0)
    groups = TrajectoryGroups({"early": early, "late": late, "mid": mid}, y, points=7)
    prog = {g: [np.asarray(tg.progress(t.probs, y)) for t in runs] for g, runs in groups.runs.items()}
    for g in groups.runs:
        assert all(np.array_equal(a, b) for a, b in zip(groups.progress(g), prog[g]))
    assert np.array_equal(groups.grid(["early", "late"]), tg.progress_grid(prog["early"] + prog["late"], 7))
    # the early and late runs share no progress: no shared grid, no pairs to compare
    assert groups.shared_grid(["early", "late"]) is None
    shared = groups.pairs_on_shared_grid(["early", "late"])
    assert shared.grid.size == 0 and shared("early", "late") is None
    common = groups.shared_grid(["mid", "late"])
    assert np.array_equal(common, tg.progress_grid(prog["mid"] + prog["late"], 7, shared=True))
    lo = max(p.min() for p in prog["mid"] + prog["late"])
    hi = min(p.max() for p in prog["mid"] + prog["late"])
    grid = groups.grid(["mid", "late"])
    assert np.array_equal(groups.reached(["mid", "late"], grid), (grid >= lo) & (grid <= hi))
    r = groups.reindexed("late", common)
    expected = np.stack([np.asarray(tg.reindex(t.probs, y, grid=common)).astype(np.float32) for t in late])
    assert r.dtype == np.float32 and np.array_equal(r, expected)
    assert groups.reindexed("late", common) is r  # computed once
    pair = groups.pairs_on_shared_grid(["mid", "late"])("mid", "late")
    assert np.array_equal(pair[1], r)


def test_trajectory_groups_embed_each_run_where_it_reaches():
    """TrajectoryGroups.inside and .embedding (the experiments' embedding, through embed_reached as in
    analyse): each run's points are those re-indexing with outside="nan" leaves finite, and the embedding
    is the InPCA of exactly those points, run after run; a point outside a run's range is never embedded."""
    import taskgeom as tg
    from taskgeom.analysis import TrajectoryGroups

    a, y = _runs([[0.1, 0.4, 0.8], [0.15, 0.5, 0.85]])
    b, _ = _runs([[0.3, 0.6, 0.95]], seed=0)
    groups = TrajectoryGroups({"a": a, "b": b}, y, points=9)
    grid = groups.grid(["a", "b"])
    nan_route = np.concatenate(
        [np.stack([np.asarray(tg.reindex(t.probs, y, grid=grid, outside="nan")) for t in runs]) for runs in (a, b)]
    ).astype(np.float32)
    finite = np.isfinite(nan_route).all(axis=(2, 3))
    assert np.array_equal(np.concatenate([groups.inside(g, grid) for g in ("a", "b")]), finite)
    assert not finite.all() and finite.any(axis=1).all()  # some run misses part of the grid; each reaches some
    emb, keep = groups.embedding(["a", "b"], grid, k=3)
    assert np.array_equal(keep, finite)
    expected = tg.inpca(tg.pairwise_distances(nan_route[finite]), k=3)
    assert emb.coords.shape == (finite.sum(), 3)
    np.testing.assert_allclose(np.abs(emb.coords), np.abs(expected.coords), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(emb.eigenvalues, expected.eigenvalues, rtol=1e-12)


def test_compare_families_is_the_one_pair_comparison():
    """compare_families: normalized_distance's curve and, with a Resampling, replicates that equal the
    statistic recomputed on explicitly resampled data (each evaluation sample repeated as often as the
    replicate draws it, each seed as often as it is drawn: an oracle independent of the reweighting code);
    _compare_pair's means come from it."""
    from types import SimpleNamespace

    import taskgeom as tg
    from taskgeom.analysis import TrajectoryGroups, _compare_pair
    from taskgeom.bootstrap import Resampling
    from taskgeom.trajectories import PairCurve, compare_families

    a, y = _runs([[0.1, 0.4, 0.8], [0.15, 0.5, 0.85]])
    b, _ = _runs([[0.05, 0.3, 0.9], [0.2, 0.45, 0.8], [0.1, 0.5, 0.95]])
    groups = TrajectoryGroups({"a": a, "b": b}, y, points=5)
    fa, fb = (f.astype(np.float64) for f in groups.pairs_on_shared_grid(["a", "b"])("a", "b"))
    plain = compare_families(fa, fb)
    assert isinstance(plain, PairCurve) and plain.replicates is None and plain.bhattacharyya_replicates is None
    assert np.array_equal(plain.normalized, np.asarray(tg.normalized_distance(fa, fb)))
    boot = Resampling(len(y), 12, {"a": 2, "b": 3}, seed=5)
    curve = compare_families(fa, fb, boot, "a", "b")
    assert curve.replicates.shape == curve.bhattacharyya_replicates.shape == (fa.shape[1], 12)
    assert np.array_equal(curve.normalized, plain.normalized)

    def resampled(w, ca, cb):
        idx = np.repeat(np.arange(len(y)), w.astype(int))
        return np.repeat(fa, ca.astype(int), 0)[:, :, idx], np.repeat(fb, cb.astype(int), 0)[:, :, idx]

    for r in range(12):
        ra, rb = resampled(boot.w[r], boot.seeds["a"][r], boot.seeds["b"][r])
        np.testing.assert_allclose(curve.replicates[:, r], np.asarray(tg.normalized_distance(ra, rb)), rtol=1e-7)
        db = [float(tg.bhattacharyya(ra[:, g].mean(0), rb[:, g].mean(0))) for g in range(fa.shape[1])]
        np.testing.assert_allclose(curve.bhattacharyya_replicates[:, r], db, rtol=1e-7, atol=1e-12)
    # the seed counts are used: every seed once gives other replicates, equal to the samples-only oracle
    ones = SimpleNamespace(n_boot=12, w=boot.w, seeds={"a": np.ones((12, 2)), "b": np.ones((12, 3))})
    only_samples = compare_families(fa, fb, ones, "a", "b").replicates
    assert not np.allclose(only_samples, curve.replicates)
    ra, rb = resampled(boot.w[0], np.ones(2), np.ones(3))
    np.testing.assert_allclose(only_samples[:, 0], np.asarray(tg.normalized_distance(ra, rb)), rtol=1e-7)
    with pytest.raises(ValueError, match="no seeds for group"):
        compare_families(fa, fb, boot)  # the groups not named: refused, not drawn without seeds
    nd, db, nd_reps, db_reps_mean = _compare_pair((fa, fb), boot, "a", "b")
    assert nd == float(np.mean(plain.normalized))
    assert np.array_equal(nd_reps, curve.replicates.mean(0))
    assert np.array_equal(db_reps_mean, curve.bhattacharyya_replicates.mean(0))
    assert _compare_pair(None, boot, "a", "b")[2:] == (None, None)


def test_results_json_is_strict_json_with_null_for_unbounded(tmp_path):
    """Groups of one seed have no tube, so the normalised distance between two of them is infinite;
    results.json (tg.publish) writes it, and any other non-finite number, as null: strict JSON that every
    reader parses (Python's writer would emit Infinity and NaN)."""
    import json

    import taskgeom as tg

    store = PredictionStore(tmp_path / "store", create=True)
    _, y = training_run(n=N, c=C)
    store.add_eval_set("toy", y.numpy(), c=C)
    for task, seeds in (("all", 1), ("b", 1)):
        for seed in range(seeds):
            traj, _ = training_run(n=N, c=C, steps=6, seed=seed + (10 if task == "b" else 0), speed=0.5)
            t = store.create_trajectory("toy", task=task, method="supervised", seed=seed, architecture="toy")
            for k, p in enumerate(traj):
                store.append(t, p.numpy(), epoch=k, step=k, accuracy=None)
    res = analyse(store, "toy", ["all", "b"], grid=8, n_boot=10)
    assert any(v is not None and math.isinf(v) for v in res.normalized_distance["b"])
    tg.publish(res, tmp_path / "out")

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    text = (tmp_path / "out" / "results.json").read_text()
    written = json.loads(text, parse_constant=refuse)
    curve = written["normalized_distance_to_all"]["b"]
    assert [v is None for v in curve] == [v is None or not math.isfinite(v) for v in res.normalized_distance["b"]]


def test_strict_json_takes_numpy_values():
    from taskgeom._configjson import strict_dumps

    value = {"a": np.float32(np.inf), "b": np.array([1.0, np.nan]), "c": (np.int64(3), np.bool_(True)), "d": -math.inf}
    assert strict_dumps(value) == '{"a": null, "b": [1.0, null], "c": [3, true], "d": null}'
