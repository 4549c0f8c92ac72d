"""Fault injection on the PredictionStore (issue 10): SIGKILLed writers, short writes and a full disk,
truncated and flipped data, concurrent creators and writers, empty or foreign manifests, read-only
stores, changed configurations, bad labels and all-or-nothing HDF5 imports.

Writers run in subprocesses that load the ``taskgeom.store`` package on its own (the package facade,
which imports torch, is not run), so that the many processes start in a fraction of a second."""

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from taskgeom import cli
from taskgeom.store import ConfigMismatchError, PredictionStore, StoreError

N, C = 50, 4
PKG_DIR = str(Path(__file__).resolve().parents[1] / "taskgeom")

LOADER = textwrap.dedent(f"""
    import sys, time, types
    import numpy as np
    facade = types.ModuleType("taskgeom")  # the store without the facade's torch import
    facade.__path__ = [{PKG_DIR!r}]
    sys.modules["taskgeom"] = facade
    import taskgeom.store as st
    assert "torch" not in sys.modules

    def checkpoint(i, n={N}, c={C}):
        rng = np.random.default_rng(i)
        x = rng.random((n, c)) + 0.01
        return (x / x.sum(1, keepdims=True)).astype(np.float32)
""")


def checkpoint(i, n=N, c=C):
    rng = np.random.default_rng(i)
    x = rng.random((n, c)) + 0.01
    return (x / x.sum(1, keepdims=True)).astype(np.float32)


def small_store(path, steps=3, dtype="float32"):
    store = PredictionStore(path, create=True)
    store.add_eval_set("toy", np.arange(N) % C)
    t = store.create_trajectory("toy", name="t", dtype=dtype)
    for i in range(steps):
        store.append(t, checkpoint(i))
    return store, t


# ---- 1. SIGKILL at random moments --------------------------------------------------------------------
KILLED_WRITER = LOADER + textwrap.dedent("""
    store = st.PredictionStore(sys.argv[1], create=True)
    store.add_eval_set("toy", np.arange({n}) % {c})
    name = sys.argv[2]
    t = store.create_trajectory("toy", name=name, dtype="float32", config={{"lr": 0.1}})
    i = len(t)
    print("ready", flush=True)
    while True:
        store.append(t, checkpoint(i), step=i, validate=False)
        print(i, flush=True)
        i += 1
""").format(n=N, c=C)


def test_random_sigkills_never_corrupt_or_lose_committed_checkpoints(tmp_path):
    path = tmp_path / "s"
    rng = np.random.default_rng(2026)
    committed = {}  # trajectory name -> checkpoints the writer reported committed
    kills = uninitialised = 0
    for round_ in range(50):
        name = f"t{round_ // 10}"  # a new trajectory every 10 rounds: kills land in creation too
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(path), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if round_ % 3 == 0:  # sometimes kill during start-up (opening, schema, creation)
            time.sleep(float(rng.uniform(0, 0.15)))
        else:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
            time.sleep(float(rng.uniform(0, 0.03)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        lines = [ln.strip() for ln in proc.stdout.read().splitlines() + [""]]
        proc.stdout.close()
        proc.stderr.close()
        done = [int(x) for x in lines if x.isdigit()]
        if done:
            committed[name] = max(committed.get(name, 0), done[-1] + 1)
        if not (path / "manifest.sqlite").exists() or (path / "manifest.sqlite").stat().st_size == 0:
            assert not done  # killed before the store existed: nothing was committed
            uninitialised += 1
            continue
        try:
            store = PredictionStore(path)
        except StoreError as exc:  # killed while creating the store: empty, and said so; create=True finishes it
            assert "empty" in str(exc) and not committed, exc
            uninitialised += 1
            store = PredictionStore(path, create=True)
        assert store.verify() == [], f"round {round_}"
        for tname, count in committed.items():
            t = store.trajectory(tname)
            assert len(t) >= count, f"round {round_}: {tname} lost committed checkpoints"
            assert [c["idx"] for c in t.checkpoints] == list(range(len(t)))
        store.close()
    assert kills == 50
    print(
        f"\n50 SIGKILLs: {uninitialised} before the store was initialised, "
        f"{sum(committed.values())} checkpoints committed, all intact"
    )
    store = PredictionStore(path)
    assert store.verify() == [] and store.checked == sum(len(t) for t in store.select())
    for t in store.select():
        probs = t.probs
        for i in range(len(t)):  # bit for bit what the writer computed
            np.testing.assert_array_equal(probs[i], checkpoint(i))
        n0 = len(t)
        assert store.append(t, checkpoint(n0)) == n0  # and it accepts further appends
    assert sum(committed.values()) > 0


# ---- 2. short writes, ENOSPC, a full tmpfs ------------------------------------------------------------
@pytest.mark.parametrize("fault", ["short", "zero", "enospc", "fsync"])
def test_failed_writes_commit_nothing_and_the_store_recovers(tmp_path, monkeypatch, fault):
    store, t = small_store(tmp_path / "s")
    size0 = t.file.stat().st_size
    real_pwrite, real_fsync = os.pwrite, os.fsync
    calls = []

    def pwrite(fd, data, offset):
        calls.append(len(data))
        if fault == "short":  # the first call writes part of it, the next finds the disk full
            if len(calls) == 1:
                return real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        if fault == "zero":
            return 0
        if fault == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    def fsync(fd):
        if fault == "fsync":
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StoreError, match="could not write checkpoint 3.*nothing was committed") as info:
        store.append(t, checkpoint(3))
    assert "\n" not in str(info.value)
    assert len(t) == 3 and t.file.stat().st_size == size0  # nothing listed, no partial bytes left behind
    monkeypatch.setattr(os, "pwrite", real_pwrite)  # space returns
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert store.append(t, checkpoint(3)) == 3
    assert store.verify() == []
    np.testing.assert_array_equal(t.probs[3], checkpoint(3))


def test_full_tmpfs_lists_no_partial_checkpoint(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        n, c = 10_000, 4  # 160,000 bytes per float32 checkpoint, as in the report
        store = PredictionStore(mnt / "s", create=True)
        store.add_eval_set("big", np.arange(n) % c)
        t = store.create_trajectory("big", name="t", dtype="float32")
        failures = 0
        for i in range(30):  # 4.8 MB into 2 MiB: the disk fills up
            try:
                store.append(t, checkpoint(i, n, c))
            except StoreError as exc:
                failures += 1
                assert "\n" not in str(exc)
                break
        assert failures == 1
        k = len(t)
        assert 0 < k < 30
        assert t.file.stat().st_size == k * n * c * 4  # the partial checkpoint's bytes were cut off
        assert store.verify() == []
        for i in range(k):
            np.testing.assert_array_equal(t.probs[i], checkpoint(i, n, c))
        subprocess.run(["mount", "-o", "remount,size=8m", str(mnt)], check=True)  # space returns
        assert store.append(t, checkpoint(k, n, c)) == k
        assert store.verify() == []
        store.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---- 3. checksums, truncation -------------------------------------------------------------------------
def test_flipped_and_zeroed_bytes_are_found_by_verify_and_the_cli(tmp_path, capsys):
    store, t = small_store(tmp_path / "s", steps=4)
    assert cli.main(["store", "verify", str(tmp_path / "s")]) == 0
    assert "ok (1 trajectories, 4 checkpoints" in capsys.readouterr().out
    nbytes = N * C * 4
    with open(t.file, "r+b") as f:
        f.seek(nbytes + 17)  # one flipped bit in checkpoint 1
        b = f.read(1)
        f.seek(nbytes + 17)
        f.write(bytes([b[0] ^ 1]))
        f.seek(3 * nbytes + 100)  # zeroed bytes in checkpoint 3
        f.write(b"\0" * 64)
    np.testing.assert_array_equal(t.read(0), checkpoint(0))  # verified reads of intact checkpoints
    for i in (1, 3):
        with pytest.raises(StoreError, match=f"checkpoint {i}: checksum mismatch"):
            t.read(i)
    problems = store.verify()
    assert len(problems) == 2
    assert "checkpoint 1: checksum mismatch" in problems[0] and "checkpoint 3: checksum mismatch" in problems[1]
    assert cli.main(["store", "verify", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("checksum mismatch" in line for line in err)


def test_append_refuses_a_truncated_data_file(tmp_path):
    store, t = small_store(tmp_path / "s", steps=3)
    os.truncate(t.file, N * C * 4 * 2 + 10)  # checkpoint 2 lost its tail
    with pytest.raises(StoreError, match="refusing to append"):
        store.append(t, checkpoint(3))
    assert len(t) == 3 and t.file.stat().st_size == N * C * 4 * 2 + 10  # no zero-filled gap written
    assert any("truncated" in p for p in store.verify())
    with pytest.raises(StoreError, match="truncated or corrupt"):
        _ = t.probs


# ---- 4. manifests: empty, foreign, old schema; read-only ---------------------------------------------
def test_empty_or_foreign_manifest_is_an_error_and_is_left_alone(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="empty .0-byte. manifest"):
        PredictionStore(empty)
    assert (empty / "manifest.sqlite").stat().st_size == 0
    PredictionStore(empty, create=True).close()  # with create=True it becomes a store
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    db = sqlite3.connect(foreign / "manifest.sqlite")
    db.execute("CREATE TABLE people (name TEXT)")
    db.execute("INSERT INTO people VALUES ('ada')")
    db.commit()
    db.close()
    before = (foreign / "manifest.sqlite").read_bytes()
    for create in (False, True):
        with pytest.raises(StoreError, match="not a taskgeom manifest"):
            PredictionStore(foreign, create=create)
    assert (foreign / "manifest.sqlite").read_bytes() == before
    bare = tmp_path / "bare"
    bare.mkdir()
    sqlite3.connect(bare / "manifest.sqlite").execute("PRAGMA user_version=1").close()
    with pytest.raises(StoreError, match="empty database"):
        PredictionStore(bare)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        PredictionStore(tmp_path / "afile", create=True)
    with pytest.raises(StoreError, match="cannot create store .*afile/s"):  # an unwritable --store
        PredictionStore(tmp_path / "afile" / "s", create=True)


def test_old_store_is_migrated_with_null_config_and_checksum(tmp_path):
    path = tmp_path / "old"
    (path / "data").mkdir(parents=True)
    db = sqlite3.connect(path / "manifest.sqlite")
    db.executescript("""
        CREATE TABLE eval_sets (name TEXT PRIMARY KEY, n INTEGER NOT NULL, c INTEGER NOT NULL, labels BLOB NOT NULL,
            class_names TEXT, extra TEXT);
        CREATE TABLE trajectories (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL, eval_set TEXT
            NOT NULL, task TEXT, method TEXT, seed INTEGER, architecture TEXT, dtype TEXT NOT NULL, file TEXT NOT NULL,
            extra TEXT, created REAL);
        CREATE TABLE checkpoints (trajectory INTEGER NOT NULL, idx INTEGER NOT NULL, epoch REAL, step INTEGER,
            accuracy REAL, extra TEXT, created REAL, PRIMARY KEY (trajectory, idx));
    """)
    import io

    buf = io.BytesIO()
    np.save(buf, (np.arange(N) % C).astype(np.int64))
    db.execute("INSERT INTO eval_sets VALUES ('toy', ?, ?, ?, NULL, '{}')", (N, C, buf.getvalue()))
    db.execute(
        "INSERT INTO trajectories VALUES (1, 'old', 'toy', NULL, NULL, 0, NULL, 'float32', "
        "'data/000001_old.bin', '{}', 0)"
    )
    db.execute("INSERT INTO checkpoints VALUES (1, 0, 0, 0, NULL, '{}', 0)")
    db.commit()
    db.close()
    (path / "data" / "000001_old.bin").write_bytes(checkpoint(0).tobytes())
    ro = PredictionStore(path, readonly=True)  # read-only: readable without migrating
    assert ro.trajectory("old").config is None and len(ro.trajectory("old")) == 1
    assert ro.verify() == [] and ro.unchecked == 1
    ro.close()
    store = PredictionStore(path)
    t = store.trajectory("old")
    assert t.config is None and t.code is None
    assert store.verify() == [] and store.unchecked == 1
    store.append(t, checkpoint(1))
    assert store.verify() == [] and store.checked == 1 and store.unchecked == 1
    again = store.create_trajectory("toy", name="old", config={"lr": 0.1})  # old rows: no config to compare
    assert again.id == t.id


def test_read_only_store_opens_for_reading_only(tmp_path, monkeypatch):
    store, t = small_store(tmp_path / "s", steps=2)
    store.close()
    for f in (tmp_path / "s").glob("manifest.sqlite-*"):
        f.unlink()  # a cleanly closed store: no -wal or -shm file to lean on
    before = {p.name: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    ro = PredictionStore(tmp_path / "s", readonly=True)
    t = ro.trajectory("t")
    np.testing.assert_array_equal(t.probs[1], checkpoint(1))
    assert ro.verify() == []
    with pytest.raises(StoreError, match="read-only"):
        ro.append(t, checkpoint(2))
    with pytest.raises(StoreError, match="read-only"):
        ro.add_eval_set("other", np.arange(3))
    assert ro.add_eval_set("toy", np.arange(N) % C).n == N  # identical: a no-op, allowed
    with pytest.raises(StoreError, match="read-only"):
        ro.create_trajectory("toy", name="new")
    ro.close()
    after = {p.name: p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    assert {k: v for k, v in after.items() if "sqlite-" not in k} == before
    # an unwritable directory (root ignores permissions, so pretend) opens read-only by itself
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if mode == os.W_OK else real_access(p, mode))
    auto = PredictionStore(tmp_path / "s")
    assert auto.readonly and len(auto.trajectory("t")) == 2
    with pytest.raises(StoreError, match="read-only"):
        auto.append("t", checkpoint(2))


# ---- 5. concurrent creators and writers ---------------------------------------------------------------
CONCURRENT = LOADER + textwrap.dedent("""
    path, k, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    import os
    while not os.path.exists(go):
        time.sleep(0.001)
    store = st.PredictionStore(path, create=True)
    store.add_eval_set("toy", np.arange({n}) % {c})
    ids = [store.create_trajectory("toy", name=f"shared{{j}}", dtype="float32",
                                   config={{"lr": 0.1, "epochs": 3}}).id for j in range(30)]
    own = store.create_trajectory("toy", name=f"w{{k}}", dtype="float32")
    for i in range(15):
        store.append(own, checkpoint(1000 * k + i), validate=False)
    print(ids, flush=True)
""").format(n=N, c=C)


def test_concurrent_creators_and_writers_all_succeed(tmp_path):
    path, go = tmp_path / "fresh", tmp_path / "go"
    writers = 6
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT, str(path), str(k), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(writers)
    ]
    time.sleep(0.8)
    go.write_text("go")
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * writers, [o[1][-500:] for o in outs]
    assert len({o[0].strip() for o in outs}) == 1  # every creator got the same trajectory
    store = PredictionStore(path)
    assert sorted(t.name for t in store.select()) == sorted(
        [f"shared{j}" for j in range(30)] + [f"w{k}" for k in range(writers)]
    )
    for k in range(writers):
        t = store.trajectory(f"w{k}")
        assert len(t) == 15
        np.testing.assert_array_equal(t.probs[14], checkpoint(1000 * k + 14))
    assert store.verify() == []


# ---- 6. configurations --------------------------------------------------------------------------------
def test_changed_config_is_a_clear_error_naming_the_fields(tmp_path):
    store = PredictionStore(tmp_path / "s", create=True)
    store.add_eval_set("toy", np.arange(N) % C)
    cfg = {"lr": 0.1, "epochs": 3, "opt": {"momentum": 0.9}}
    t = store.create_trajectory("toy", name="run", config=cfg, code={"commit": "abc"})
    assert t.config == cfg and t.code == {"commit": "abc"}
    same = store.create_trajectory("toy", name="run", config=dict(reversed(list(cfg.items()))))
    assert same.id == t.id  # key order does not matter
    assert store.create_trajectory("toy", name="run").id == t.id  # no config given: no comparison
    with pytest.raises(ConfigMismatchError) as info:
        store.create_trajectory("toy", name="run", config={"lr": 0.2, "epochs": 5, "opt": {"momentum": 0.9}})
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in msg
    assert "epochs: 3 -> 5" in msg and "lr: 0.1 -> 0.2" in msg and "momentum" not in msg
    assert "another name" in msg and "new=True" in msg and "--new-trajectory" in msg
    with pytest.raises(ConfigMismatchError, match=r"opt.momentum: 0.9 -> 0.5; seed: \"<absent>\" -> 1"):
        store.create_trajectory("toy", name="run", config={**cfg, "opt": {"momentum": 0.5}, "seed": 1})
    with pytest.raises(ValueError, match="JSON"):
        store.create_trajectory("toy", name="x", config={"lr": float("nan")})
    assert len(store.select()) == 1


# ---- 7. labels and HDF5 imports -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "labels, c, match",
    [
        (np.array([0, 1, -1, 2]), None, "sample 2: label -1 is negative"),
        (np.array([0, 1, 5, 2]), 4, r"sample 2: label 5 is outside \[0, 4\)"),
        (np.array([], dtype=np.int64), None, "empty"),
        (np.array([0.0, 1.0]), None, "integer"),
        (np.array([[0, 1]]), None, "1-d"),
    ],
)
def test_bad_labels_are_rejected(tmp_path, labels, c, match):
    store = PredictionStore(tmp_path / "s", create=True)
    with pytest.raises(ValueError, match=match):
        store.add_eval_set("e", labels, c=c)
    assert store.eval_sets() == []


def test_hdf5_import_is_validated_first_and_all_or_nothing(tmp_path):
    h5py = pytest.importorskip("h5py")
    traj = np.stack([checkpoint(s) for s in range(5)]).astype(np.float16)
    traj[3, 7, 1] = np.nan
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("data", data=traj)
    store = PredictionStore(tmp_path / "s", create=True)
    lab = np.arange(N) % C
    with pytest.raises(
        ValueError, match="bad.h5: checkpoint 3: probs: sample 7: probability is not finite.*nothing was imported"
    ):
        store.import_h5(tmp_path / "bad.h5", lab, eval_set="e")
    assert store.select() == [] and store.eval_sets() == []
    with pytest.raises(ValueError, match="label 4 is outside"):
        store.import_h5(tmp_path / "bad.h5", np.full(N, 4), eval_set="e")
    traj[3, 7, 1] = traj[3, 7, 0]
    traj[3, 7] /= traj[3, 7].sum()
    with h5py.File(tmp_path / "good.h5", "w") as f:
        f.create_dataset("data", data=traj)
    t = store.import_h5(tmp_path / "good.h5", lab, eval_set="e")
    assert len(t) == 5 and store.verify() == []
    np.testing.assert_array_equal(np.asarray(t.probs), traj)
    assert len(store.import_h5(tmp_path / "good.h5", lab, eval_set="e")) == 5  # idempotent
