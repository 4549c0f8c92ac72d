"""Sweeps of training runs (local and Ray engines) and merging store shards."""

import json

import numpy as np
import pytest

from taskgeom.shards import merge_stores
from taskgeom.store import PredictionStore, StoreError
from taskgeom.train.sweep import expand, load_sweep, run_sweep

SPEC = {
    "data": {"data": "digits"},
    "tasks": ["all", "0-4"],
    "methods": ["supervised"],
    "seeds": [0, 1],
    "archs": ["small-cnn"],
    "grid": {"lr": [0.1]},
    "fixed": {"epochs": 1, "checkpoints": 3, "batch_size": 128, "device": "cpu", "imprint_samples": 300},
    "resources": {"num_cpus": 1},
}


def snapshot(store_path):
    store = PredictionStore(store_path)
    out = {t.name: (np.asarray(t.probs).copy(), t.checksums, t.config) for t in store.select()}
    store.close()
    return out


def test_expand_and_sweep_file_checks(tmp_path):
    runs = expand(SPEC)
    assert len(runs) == 4 and len({r["id"] for r in runs}) == 4
    assert {r["config"].lr for r in runs} == {0.1} and {r["config"].epochs for r in runs} == {1}
    f = tmp_path / "s.yaml"
    f.write_text("tasks: [all]\nfixed: {epochs: 1, colour: red}\n")
    with pytest.raises(ValueError, match="colour"):
        load_sweep(f)
    f.write_text(json.dumps(SPEC))
    assert load_sweep(f) == SPEC
    # run ids are those of the code before runs had a thread count (so a sweep recorded then resumes), and the
    # default count (1) given explicitly does not change them; another count makes other runs
    ids = ["all-supervised-small-cnn-s0-1cf8fcd9", "all-supervised-small-cnn-s1-8a1b6580"]
    ids += ["0-4-supervised-small-cnn-s0-873d768c", "0-4-supervised-small-cnn-s1-6628b5f2"]
    assert [r["id"] for r in runs] == ids
    assert [r["id"] for r in expand({**SPEC, "fixed": {**SPEC["fixed"], "threads": 1}})] == ids
    assert not set(ids) & {r["id"] for r in expand({**SPEC, "fixed": {**SPEC["fixed"], "threads": 2}})}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    out = tmp_path_factory.mktemp("seq")
    res = run_sweep(SPEC, out)
    assert res["runs"] == 4 and res["trajectories"] == 4 and res["checkpoints_added"] >= 12
    return out


def test_local_sweep_merges_shards_and_merging_is_idempotent(sequential, tmp_path):
    merged = snapshot(sequential / "store")
    assert len(merged) == 4 and all(len(v[1]) >= 3 for v in merged.values())
    shards = sorted(str(p) for p in (sequential / "shards").iterdir())
    again = merge_stores(shards, sequential / "store")  # nothing new
    assert again["checkpoints_added"] == 0
    # a second target built from half the shards, then completed: equal to the whole
    merge_stores(shards[:2], tmp_path / "m")
    merge_stores(shards, tmp_path / "m")
    got = snapshot(tmp_path / "m")
    assert got.keys() == merged.keys()
    for k in got:
        np.testing.assert_array_equal(got[k][0], merged[k][0])
        assert got[k][1] == merged[k][1]


def test_merge_refuses_damaged_or_conflicting_shards(sequential, tmp_path):
    shards = sorted((sequential / "shards").iterdir())
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(shards[0], bad)
    data = next((bad / "data").glob("*.bin"))
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="problem"):
        merge_stores([bad], tmp_path / "m1")
    assert not (tmp_path / "m1").exists()  # a new store appears whole or not at all


def test_ray_sweep_equals_the_local_one_and_retries_a_killed_worker(sequential, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from taskgeom.engines import init_ray

    init_ray(num_cpus=2)
    try:
        marker = tmp_path / "killed"
        monkeypatch.setenv("TASKGEOM_FAULT_KILL_WORKER_ONCE", str(marker))
        res = run_sweep(SPEC, tmp_path / "ray", engine="ray")
        assert marker.exists() and res["trajectories"] == 4
    finally:
        ray.shutdown()
    got, want = snapshot(tmp_path / "ray" / "store"), snapshot(sequential / "store")
    assert got.keys() == want.keys()
    for k in got:
        np.testing.assert_array_equal(got[k][0], want[k][0])
        assert got[k][2] == want[k][2]


def test_local_sweep_in_worker_processes_equals_the_sequential_one(sequential, tmp_path):
    """``workers=2``: runs train in two spawned processes at once (several models sharing a device), with
    the same results as one after the other."""
    res = run_sweep(SPEC, tmp_path / "par", workers=2)
    assert res["runs"] == 4 and res["trajectories"] == 4
    got, want = snapshot(tmp_path / "par" / "store"), snapshot(sequential / "store")
    assert got.keys() == want.keys()
    for k in got:
        np.testing.assert_array_equal(got[k][0], want[k][0])
    with pytest.raises(ValueError, match="workers"):
        run_sweep(SPEC, tmp_path / "bad", workers=0)
