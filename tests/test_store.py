"""PredictionStore: layout, queries, lazy handles, corrupt files, crash safety, HDF5 import."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import taskgeom as tg
from taskgeom.store import PredictionStore, StoreError

from testing import labels, models

N, C = 50, 4


def checkpoint(seed: int, n=N, c=C) -> np.ndarray:
    """Deterministic probabilities for checkpoint ``seed`` (the kill test recomputes them)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c))
    p = np.exp(x - x.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def make_store(path, trajectories=3, steps=4):
    store = PredictionStore(path, create=True)
    store.add_eval_set("toy", labels(N, C).numpy(), class_names=list("abcd"))
    for k in range(trajectories):
        t = store.create_trajectory("toy", task=f"task{k % 2}", method="supervised", seed=k, architecture="mlp")
        for s in range(steps):
            store.append(t, checkpoint(100 * k + s), epoch=s, step=10 * s, accuracy=0.5 + 0.1 * s, lr=0.1)
    return store


def test_append_select_and_lazy_reads(tmp_path):
    store = make_store(tmp_path / "s")
    got = store.select(task="task0")
    assert [t.seed for t in got] == [0, 2]
    assert len(store.select(method="supervised", seed=[1, 2])) == 2
    t = got[1]
    assert isinstance(t.probs, np.memmap) and t.probs.shape == (4, N, C) and t.probs.dtype == np.float16
    np.testing.assert_allclose(t.probs[3], checkpoint(203), atol=1e-3)
    assert t.checkpoints[2] == {"idx": 2, "epoch": 2.0, "step": 20, "accuracy": pytest.approx(0.7), "lr": 0.1}
    # indexing: a checkpoint's probabilities (a checked copy), a slice of them (the map's view)
    assert np.array_equal(t[-1], t.probs[3]) and not isinstance(t[-1], np.memmap)
    assert np.array_equal(t[1:3], t.probs[1:3]) and len(t) == 4
    with pytest.raises(IndexError, match="has 4 checkpoints"):
        t[4]
    assert store.eval_set("toy").class_names == list("abcd")
    np.testing.assert_array_equal(t.labels, labels(N, C).numpy())
    with pytest.raises(ValueError, match="cannot select on"):
        store.select(colour="red")
    store.close()
    again = PredictionStore(tmp_path / "s")  # reopens from disk
    assert len(again.select()) == 3 and len(again.trajectory(1)) == 4
    (tmp_path / "out").mkdir()
    (tmp_path / "s").rename(tmp_path / "out" / "store")  # an output folder holding its store
    for readonly in (True, False):
        with pytest.raises(StoreError, match=f"not a taskgeom store .*; the store is {tmp_path / 'out' / 'store'}"):
            PredictionStore(tmp_path / "out", readonly=readonly)


def test_kernels_stream_from_store_handles(tmp_path):
    store = make_store(tmp_path / "s")
    trajs = store.select()
    D = tg.pairwise_distances(trajs)
    stacked = np.concatenate([np.asarray(t.probs) for t in trajs])
    np.testing.assert_allclose(D, tg.pairwise_distances(stacked), rtol=1e-12, atol=1e-15)
    cross = tg.pairwise_distances(trajs[:1], trajs[1:])
    np.testing.assert_allclose(cross, D[:4, 4:], rtol=1e-12, atol=1e-15)
    t = tg.progress(trajs[0].probs, trajs[0].labels)
    assert t.shape == (4,)


def test_bad_appends_are_rejected_without_damage(tmp_path):
    store = make_store(tmp_path / "s", trajectories=1, steps=2)
    t = store.select()[0]
    with pytest.raises(ValueError, match="shape"):
        store.append(t, np.ones((N + 1, C)) / C)
    bad = checkpoint(7)
    bad[5, 1] = np.nan
    with pytest.raises(ValueError, match="sample 5"):
        store.append(t, bad)
    assert len(t) == 2
    np.testing.assert_allclose(t.probs[1], checkpoint(1), atol=1e-3)
    with pytest.raises(ValueError, match="different labels"):
        store.add_eval_set("toy", np.zeros(N, dtype=int))


def test_corrupt_and_truncated_files_give_clear_errors(tmp_path):
    store = make_store(tmp_path / "s", trajectories=1, steps=3)
    t = store.select()[0]
    with open(t.file, "r+b") as f:
        f.truncate(os.path.getsize(t.file) // 2)
    with pytest.raises(StoreError, match="truncated or corrupt"):
        _ = t.probs
    with pytest.raises(StoreError, match="not a taskgeom store"):
        PredictionStore(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a readable manifest"):
        PredictionStore(tmp_path / "junk")


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_store import checkpoint
    from taskgeom.store import PredictionStore
    store = PredictionStore(sys.argv[1], create=True)
    store.add_eval_set("toy", np.arange({n}) % {c})
    t = store.create_trajectory("toy", task="t", method="m", seed=0, dtype="float32")
    i = len(t)
    while True:
        store.append(t, checkpoint(i), step=i)
        print(i, flush=True)
        i += 1
""")


def test_writer_killed_mid_append_leaves_a_consistent_store(tmp_path):
    path = tmp_path / "s"
    here = os.path.dirname(os.path.abspath(__file__))
    script = WRITER.format(n=N, c=C)
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path), here], stdout=subprocess.PIPE, text=True)
        # let it append a few checkpoints, then kill it at a random moment of a later append
        for _ in range(3 + round_):
            assert proc.stdout.readline()
        time.sleep(0.001 * np.random.default_rng(round_).integers(0, 20))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = PredictionStore(path)
        t = store.select()[0]
        count = len(t)
        assert count >= 3 + round_
        assert [c["idx"] for c in t.checkpoints] == list(range(count))
        probs = t.probs
        for i in range(count):  # every listed checkpoint is complete and intact
            np.testing.assert_allclose(probs[i], checkpoint(i).astype(np.float32), rtol=0, atol=0)
        store.close()
    store = PredictionStore(path)
    t = store.select()[0]
    n0 = len(t)
    assert store.append(t, checkpoint(n0)) == n0  # and it accepts further appends
    np.testing.assert_array_equal(t.probs[n0], checkpoint(n0).astype(np.float32))


def test_readers_see_only_committed_checkpoints_while_writing(tmp_path):
    writer = make_store(tmp_path / "s", trajectories=1, steps=1)
    reader = PredictionStore(tmp_path / "s")
    t_w = writer.select()[0]
    t_r = reader.select()[0]
    for s in range(1, 5):
        writer.append(t_w, checkpoint(s))
        assert len(t_r) == s + 1
        assert t_r.probs.shape[0] == s + 1


def test_import_authors_hdf5(tmp_path):
    h5py = pytest.importorskip("h5py")
    hdf5plugin = pytest.importorskip("hdf5plugin")
    traj = np.stack([checkpoint(s) for s in range(5)]).astype(np.float16)
    lab = labels(N, C).numpy()
    with h5py.File(tmp_path / "preds_0.h5", "w") as f:
        f.create_dataset("data", data=traj, **hdf5plugin.LZ4())
    np.save(tmp_path / "labels.npy", lab)
    store = PredictionStore(tmp_path / "s", create=True)
    t = store.import_h5(
        tmp_path / "preds_0.h5",
        tmp_path / "labels.npy",
        eval_set="imagenet-val",
        task="dogs",
        method="supervised",
        seed=0,
    )
    assert t.probs.shape == (5, N, C)
    np.testing.assert_array_equal(np.asarray(t.probs), traj)
    again = store.import_h5(tmp_path / "preds_0.h5", lab, eval_set="imagenet-val")  # idempotent
    assert len(again) == 5 and len(store.select()) == 1


def test_parallel_file_reads_match_memory_map(tmp_path):
    from taskgeom.streaming import read_chunk_into

    a = models(37, 101, 7, seed=5, dtype=torch.float16).numpy()
    path = tmp_path / "m.npy"
    np.save(path, a)
    mm = np.load(path, mmap_mode="r")
    dst = np.zeros((37, 40, 7), dtype=np.float16)
    read_chunk_into(mm, 55, 95, dst)
    np.testing.assert_array_equal(dst, a[:, 55:95])
    read_chunk_into(a, 3, 10, dst)  # plain arrays are copied
    np.testing.assert_array_equal(dst[:, :7], a[:, 3:10])
    rows = np.zeros((5, 40, 7), dtype=np.float16)
    read_chunk_into(mm[2:7], 55, 95, rows)  # a view keeps its parent's file offset: must not be read by offset
    np.testing.assert_array_equal(rows, a[2:7, 55:95])
    with open(path, "r+b") as f:  # a truncated file is reported, not read as garbage
        f.truncate(os.path.getsize(path) - 500)
    with pytest.raises(OSError, match="short read"):
        read_chunk_into(mm, 55, 101, np.zeros((37, 46, 7), dtype=np.float16))
