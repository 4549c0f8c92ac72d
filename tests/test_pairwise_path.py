"""The one pairwise path (taskgeom.pairwise): plans cover every pair once, every route gives the same
matrix bit for bit, arrays keep their type, and no module computes a matrix beside the path."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import taskgeom as tg
from taskgeom.pairwise import Blocks, FunctionSink, execute, plan, sized, uniform
from taskgeom.store import PredictionStore

PKG = Path(__file__).resolve().parents[1] / "taskgeom"


def synth(m, n=64, c=5, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(c), size=(m, n))


def two_trajectories(path):
    """A store of two trajectories (4 and 5 checkpoints) of 9 models; (the models, the open store)."""
    x = synth(9).astype(np.float32)
    x /= x.sum(-1, keepdims=True)
    store = PredictionStore(path, create=True)
    store.add_eval_set("e", np.zeros(64, dtype=np.int64), c=5)
    for seed, part in ((0, x[:4]), (1, x[4:])):
        t = store.create_trajectory("e", task="t", method="m", seed=seed, dtype="float32")
        for k, p in enumerate(part):
            store.append(t, p, step=k)
    return x, store


@pytest.mark.parametrize("m,t", [(1, 4), (7, 3), (12, 4), (5, 10)])
def test_a_symmetric_plan_covers_each_pair_once(m, t):
    seen = np.zeros((m, m), int)
    for tile in plan(uniform(m, t)):
        assert tile.r0 <= tile.c0 and tile.diagonal == (tile.i == tile.j)
        seen[tile.r0 : tile.r1, tile.c0 : tile.c1] += 1
        if tile.mirrored:
            seen[tile.c0 : tile.c1, tile.r0 : tile.r1] += 1
    assert (seen == 1).all()


def test_a_cross_plan_covers_every_pair_and_skips_empty_blocks():
    rows, cols = sized([3, 0, 2]), uniform(4, 3)
    tiles = plan(rows, cols)
    assert all(not t.symmetric and t.r1 > t.r0 for t in tiles) and len(tiles) == 4
    seen = np.zeros((5, 4), int)
    for t in tiles:
        seen[t.r0 : t.r1, t.c0 : t.c1] += 1
    assert (seen == 1).all()


def test_every_route_gives_the_same_matrix(tmp_path):
    x, y = synth(23), synth(6, seed=1)
    whole = tg.pairwise_distances(x)
    np.save(tmp_path / "x.npy", x)
    routes = {
        "tiles": tg.pairwise_distances(x, tile=5),
        "trajectory blocks": tg.pairwise_distances([x[:4], x[4:17], x[17:]]),
        "blocks and tiles": tg.pairwise_distances([x[:4], x[4:]], tile=7),
        ".npy path": tg.pairwise_distances(str(tmp_path / "x.npy")),
        ".npy path, small tiles": tg.pairwise_distances(str(tmp_path / "x.npy"), tile=6),
        "folder": np.asarray(tg.pairwise_distances(str(tmp_path / "x.npy"), out=tmp_path / "D", tile=8)),
        "list of models": tg.pairwise_distances(list(x), tile=9),
    }
    for name, d in routes.items():
        assert type(d) is np.ndarray and np.array_equal(d, whole), name
    cross = tg.pairwise_distances(x, y)
    assert np.array_equal(tg.pairwise_distances(x, y, tile=4), cross)
    assert np.array_equal(tg.pairwise_distances([x[:10], x[10:]], [y[:2], y[2:]]), cross)


def test_tensors_stay_tensors_on_every_in_memory_route():
    x = torch.from_numpy(synth(11))
    one = tg.pairwise_distances(x)
    tiled = tg.pairwise_distances(x, tile=4)
    assert isinstance(one, torch.Tensor) and isinstance(tiled, torch.Tensor)
    assert tiled.dtype == torch.float64 and torch.equal(one, tiled)


def test_a_store_selection_is_a_source(tmp_path):
    x, store = two_trajectories(tmp_path / "s")
    store.close()
    np.testing.assert_array_equal(tg.pairwise_distances(tmp_path / "s"), tg.pairwise_distances(x))


def test_a_function_sink_sees_each_tile_once():
    x, lm = synth(10), synth(3, seed=2)
    got = np.full((10, 3), np.nan)

    def put(t, d):
        assert np.isnan(got[t.r0 : t.r1, t.c0 : t.c1]).all()
        got[t.r0 : t.r1, t.c0 : t.c1] = d

    n = execute(plan(uniform(10, 4), uniform(3, 3)), Blocks(x), Blocks(lm), FunctionSink(put), tg.pairwise_distances)
    assert n == 3 and np.array_equal(got, tg.pairwise_distances(x, lm))


def test_bad_requests_are_one_line_errors():
    x = synth(4)
    with pytest.raises(ValueError, match="tile"):
        tg.pairwise_distances(x, tile=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        tg.pairwise_distances(x, chunks=3)
    with pytest.raises(ValueError, match="out=PATH"):
        tg.pairwise_distances(x, engine="ray")


def _calls(path: Path, names: set) -> set:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            if (owner, name) in names or (None, name) in names:
                out.add((owner, name))
    return out


def test_no_module_computes_a_matrix_beside_the_path():
    """Only pairwise/compute.py calls the kernels' pairwise dispatch, and tiles (of divergence matrices, and
    the bootstrap's reweighted ones) are computed only by the path's executors (pairwise/, the on-disk sink's
    tile writer, the GPU sink's builder)."""
    kernel_calls = {("kernels", "pairwise")}
    tile_calls = {(None, "block_distances"), (None, "weighted_block")}
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if _calls(path, kernel_calls):
            assert rel == "pairwise/compute.py", f"{rel} calls kernels.pairwise beside the pairwise path"
        if _calls(path, tile_calls):
            assert rel.startswith("pairwise/") or rel in {"tiled.py", "large.py"}, rel


def test_trajectories_keep_their_order_on_every_route(tmp_path):
    x, store = two_trajectories(tmp_path / "s")
    backwards = store.select()[::-1]  # the second trajectory first
    y = np.concatenate([x[4:], x[:4]])
    expected = tg.pairwise_distances(y)
    assert np.array_equal(tg.pairwise_distances(backwards), expected)
    assert np.array_equal(np.asarray(tg.pairwise_distances(backwards, out=tmp_path / "D", tile=3)), expected)
    # the same values from an array are other models for that folder: identified by their source
    with pytest.raises(ValueError, match="identified by their source"):
        tg.pairwise_distances(y, out=tmp_path / "D")
