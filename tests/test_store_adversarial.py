"""The store against hostile or unlucky states (issue 26): read-only opens of a log that was never
checkpointed, manifests edited to point outside the store, gaps in checkpoint indices, changed HDF5 files
imported again, and schema versions."""

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from taskgeom import cli
from taskgeom.store import PredictionStore, StoreError
from taskgeom.store.manifest import SCHEMA_VERSION

N, C = 40, 5
PKG_DIR = str(Path(__file__).resolve().parents[1] / "taskgeom")


def checkpoint(i):
    x = np.random.default_rng(i).random((N, C)) + 0.01
    return (x / x.sum(1, keepdims=True)).astype(np.float32)


def small_store(path, steps=3):
    store = PredictionStore(path, create=True)
    store.add_eval_set("toy", np.arange(N) % C)
    t = store.create_trajectory("toy", name="t", dtype="float32")
    for i in range(steps):
        store.append(t, checkpoint(i))
    return store, t


# ---- read-only opens show the last committed state -------------------------------------------------------
KILLED = textwrap.dedent(f"""
    import os, sys, types
    import numpy as np
    facade = types.ModuleType("taskgeom")
    facade.__path__ = [{PKG_DIR!r}]
    sys.modules["taskgeom"] = facade
    import taskgeom.store as st
    store = st.PredictionStore(sys.argv[1], create=True)
    store.add_eval_set("toy", np.arange({N}) % {C})
    t = store.create_trajectory("toy", name="t", dtype="float32")
    for i in range(8):
        x = np.random.default_rng(i).random(({N}, {C})) + 0.01
        store.append(t, (x / x.sum(1, keepdims=True)).astype(np.float32), validate=False)
    os._exit(0)  # as if killed: no checkpoint of the log, -wal and -shm left behind
""")


@pytest.fixture
def ro_mount(tmp_path):
    """A tmpfs that the test fills, then remounts read-only (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def remount_ro():
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)

    yield mnt, remount_ro
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("shm", [False, True], ids=["copied-without-shm", "stale-shm"])
def test_read_only_mount_of_a_killed_writers_store_shows_every_committed_checkpoint(tmp_path, ro_mount, shm, capsys):
    src = tmp_path / "src"
    subprocess.run([sys.executable, "-c", KILLED, str(src)], check=True)
    assert (src / "manifest.sqlite-wal").stat().st_size > 0  # the log was never checkpointed
    mnt, remount_ro = ro_mount
    shutil.copytree(src, mnt / "s", ignore=None if shm else shutil.ignore_patterns("*-shm"))
    remount_ro()
    store = PredictionStore(mnt / "s")
    assert store.readonly
    t = store.trajectory("t")
    assert len(t) == 8
    np.testing.assert_array_equal(t.read(7), checkpoint(7))
    assert store.verify() == [] and store.checked == 8
    store.close()
    assert cli.main(["store", "verify", str(mnt / "s")]) == 0
    assert "8 checkpoints match" in capsys.readouterr().out


def test_snapshot_copies_are_removed(tmp_path, ro_mount):
    import gc
    import tempfile

    src = tmp_path / "src"
    subprocess.run([sys.executable, "-c", KILLED, str(src)], check=True)
    mnt, remount_ro = ro_mount
    shutil.copytree(src, mnt / "s", ignore=shutil.ignore_patterns("*-shm"))
    remount_ro()
    before = set(Path(tempfile.gettempdir()).glob("taskgeom-manifest-*"))
    store = PredictionStore(mnt / "s")
    assert len(set(Path(tempfile.gettempdir()).glob("taskgeom-manifest-*")) - before) == 1
    store.close()
    del store
    gc.collect()
    assert set(Path(tempfile.gettempdir()).glob("taskgeom-manifest-*")) - before == set()


# ---- file names from the manifest are confined to data/ --------------------------------------------------
@pytest.mark.parametrize("bad", ["../victim.bin", "data/../../victim.bin", "{abs}", "data/sub/000001_t.bin", ""])
def test_a_manifest_pointing_outside_the_store_is_refused(tmp_path, bad):
    store, t = small_store(tmp_path / "s")
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"precious" * 1000)
    with sqlite3.connect(tmp_path / "s" / "manifest.sqlite") as db:
        db.execute("UPDATE trajectories SET file=?", (bad.format(abs=victim),))
    store.close()
    store = PredictionStore(tmp_path / "s")
    t = store.trajectory("t")
    for action in (lambda: store.append(t, checkpoint(9)), lambda: t.probs, lambda: t.read(0)):
        with pytest.raises(StoreError, match="not a file in the store's data/ folder"):
            action()
    assert victim.read_bytes() == b"precious" * 1000
    assert len(store.trajectory("t")) == 3  # nothing committed
    problems = store.verify()
    assert len(problems) == 1 and "outside taskgeom" in problems[0]


def test_a_data_file_linked_out_of_the_store_is_refused(tmp_path):
    store, t = small_store(tmp_path / "s")
    victim = tmp_path / "victim.bin"
    shutil.copyfile(t.file, victim)
    before = victim.read_bytes()
    t.file.unlink()
    os.symlink(victim, t.file)
    with pytest.raises(StoreError, match="link leading out"):
        store.append(t, checkpoint(9))
    with pytest.raises(StoreError, match="link leading out"):
        t.probs
    assert victim.read_bytes() == before and len(t) == 3


# ---- checkpoint indices ----------------------------------------------------------------------------------
@pytest.mark.parametrize("edit", ["DELETE FROM checkpoints WHERE idx=1", "UPDATE checkpoints SET idx=idx+10"])
def test_an_index_gap_is_a_one_line_store_error_not_a_raw_sqlite_one(tmp_path, edit):
    store, t = small_store(tmp_path / "s")
    with sqlite3.connect(tmp_path / "s" / "manifest.sqlite") as db:
        db.execute(edit)
    for action in (lambda: store.append(t, checkpoint(9)), lambda: len(t), lambda: t.probs, lambda: t.read(0)):
        with pytest.raises(StoreError, match=r"indices \d+\.\.\d+, not 0\.\.\d+ .*changed outside taskgeom") as info:
            action()
        assert "\n" not in str(info.value)
    assert any("indices" in p for p in store.verify())


# ---- schema version ----------------------------------------------------------------------------------
def test_schema_version_is_recorded_and_a_newer_one_refused(tmp_path):
    store, _ = small_store(tmp_path / "s")
    store.close()
    db = sqlite3.connect(tmp_path / "s" / "manifest.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer taskgeom"):
            PredictionStore(tmp_path / "s", readonly=readonly)


def test_hot_paths_do_not_read_the_schema(tmp_path):
    """Columns are looked up once, at open; reading checkpoints asks SQLite for no table_info."""
    store, t = small_store(tmp_path / "s")
    seen = []
    store._manifest._db.set_trace_callback(seen.append)
    for i in range(3):
        t.read(i)
    t.checksums
    store.append(t, checkpoint(5))
    store._manifest._db.set_trace_callback(None)
    assert seen and not [s for s in seen if "table_info" in s]


# ---- HDF5 imports ----------------------------------------------------------------------------------------
def _h5(path, probs, group=False):
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        if group:
            f.create_group("data")
        else:
            f.create_dataset("data", data=probs)


def test_reimporting_a_changed_h5_is_refused_and_leaves_the_store_alone(tmp_path):
    probs = np.stack([checkpoint(i) for i in range(4)]).astype(np.float16)
    labels = np.arange(N) % C
    _h5(tmp_path / "a.h5", probs[:2])
    store = PredictionStore(tmp_path / "s", create=True)
    t = store.import_h5(tmp_path / "a.h5", labels, "ev")
    assert len(t) == 2
    _h5(tmp_path / "a.h5", probs)  # grown, same head: completed
    assert len(store.import_h5(tmp_path / "a.h5", labels, "ev")) == 4
    changed = probs.copy()
    changed[1] = np.stack([checkpoint(20)]).astype(np.float16)
    changed = np.concatenate([changed, probs[:1]])
    _h5(tmp_path / "a.h5", changed)  # head changed, one more at the end
    with pytest.raises(StoreError, match="checkpoint 1 differs"):
        store.import_h5(tmp_path / "a.h5", labels, "ev")
    _h5(tmp_path / "a.h5", probs[:3])
    with pytest.raises(StoreError, match="now holds fewer"):
        store.import_h5(tmp_path / "a.h5", labels, "ev")
    t = store.trajectory(t.id)
    assert len(t) == 4 and np.array_equal(np.asarray(t.probs), probs) and store.verify() == []


def test_h5_entry_that_is_a_group_or_not_hdf5_is_a_one_line_error(tmp_path):
    _h5(tmp_path / "g.h5", None, group=True)
    store = PredictionStore(tmp_path / "s", create=True)
    with pytest.raises(StoreError, match="'data' is a group, not a dataset"):
        store.import_h5(tmp_path / "g.h5", np.arange(N) % C, "ev")
    (tmp_path / "x.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(StoreError, match="not a readable HDF5 file"):
        store.import_h5(tmp_path / "x.h5", np.arange(N) % C, "ev")
    assert store.select() == []


def test_a_tampered_dtype_or_a_deleted_row_is_named_as_the_manifest_s(tmp_path, capsys):
    store, t = small_store(tmp_path / "s", steps=3)
    with sqlite3.connect(tmp_path / "s" / "manifest.sqlite") as db:
        db.execute("DELETE FROM checkpoints WHERE idx=1")
    problems = store.verify()
    assert any("indices" in p for p in problems) and not any("checksum mismatch" in p for p in problems)
    with sqlite3.connect(tmp_path / "s" / "manifest.sqlite") as db:
        db.execute("UPDATE trajectories SET dtype='int8'")
    with pytest.raises(StoreError, match="dtype 'int8'.*changed outside taskgeom"):
        store.trajectory("t")
    assert cli.main(["store", "verify", str(tmp_path / "s")]) == 1
    assert "dtype 'int8'" in capsys.readouterr().err
