"""Out-of-core distance folders against hostile or unlucky use (issue 26): tampered ledgers and records,
kills inside the growth step and between a tile's bytes and its marker, unfinished folders, two writers on
one fresh folder, and a Ray address that answers nothing. Each test fails on the code before the fix."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import taskgeom as tg
from taskgeom import engines, large, tiled


def synth(m, n=60, c=5, seed=0):
    g = np.random.default_rng(seed)
    logits = g.standard_normal((m, n, c)) * 2
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


@pytest.fixture
def sources(tmp_path):
    a, b = synth(40, seed=1), synth(40, seed=2)
    np.save(tmp_path / "M1.npy", a)
    np.save(tmp_path / "M2.npy", b)
    return tmp_path / "M1.npy", tmp_path / "M2.npy", a, b


def one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def count_tiles(monkeypatch):
    seen = []
    real = tiled.compute_tile

    def counting(dm, models, task, *a, **kw):
        seen.append((task.I, task.J))
        return real(dm, models, task, *a, **kw)

    monkeypatch.setattr(tiled, "compute_tile", counting)
    return seen


def test_deleted_meta_never_honours_the_old_markers_even_for_another_source(sources, tmp_path):
    m1, m2, _, b = sources
    out = tmp_path / "o"
    tg.pairwise_distances(str(m1), out=out, tile=16)
    (out / "meta.json").unlink()
    D = np.asarray(tg.pairwise_distances(str(m2), out=out, tile=16))
    np.testing.assert_allclose(D, tg.pairwise_distances(b), rtol=1e-12, atol=1e-15)
    assert D[0, 1] > 0


def test_another_source_or_tile_size_is_refused_not_reused(sources, tmp_path):
    m1, m2, a, _ = sources
    out = tmp_path / "o"
    tg.pairwise_distances(str(m1), out=out, tile=16)
    with pytest.raises(ValueError) as exc:
        tg.pairwise_distances(str(m2), out=out, tile=16)
    assert "model 0 of the 40 given differs" in one_line(exc)
    with pytest.raises(ValueError) as exc:
        tg.pairwise_distances(str(m1), out=out, tile=32)
    assert "tile=32" in one_line(exc)
    np.testing.assert_allclose(np.asarray(tg.pairwise_distances(str(m1), out=out)), tg.pairwise_distances(a))


@pytest.mark.parametrize("tile", [-5, 0, 2.5, True, "16"])
def test_a_tile_size_that_is_not_a_positive_integer_is_refused(sources, tmp_path, tile):
    m1 = sources[0]
    with pytest.raises((ValueError, TypeError)) as exc:
        tg.pairwise_distances(str(m1), out=tmp_path / "o", tile=tile)
    assert "tile" in one_line(exc)


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: {**d, "ledger": "0" * 24},  # another ledger's marker
        lambda d: {**d, "tile": 32},  # another tile size's marker
        lambda d: {**d, "r1": 10**9, "c1": 10**9},  # claims more than its tile
        lambda d: {**d, "r1": "../x"},  # not a number
        lambda d: ["../x"],  # not an object
    ],
)
def test_tampered_markers_count_as_missing_and_are_recomputed(sources, tmp_path, monkeypatch, edit):
    m1, _, a, _ = sources
    out = tmp_path / "o"
    tg.pairwise_distances(str(m1), out=out, tile=16)
    marker = out / "tiles" / "0-1.json"
    marker.write_text(json.dumps(edit(json.loads(marker.read_text()))))
    with pytest.raises(ValueError) as exc:
        tiled.DistanceMatrix(out).array()
    assert "1 of 6 tiles are missing" in one_line(exc)
    seen = count_tiles(monkeypatch)
    D = np.asarray(tg.pairwise_distances(str(m1), out=out))
    assert seen == [(0, 1)]
    np.testing.assert_allclose(D, tg.pairwise_distances(a), rtol=1e-12, atol=1e-15)


def test_a_marker_symlinked_outside_the_folder_never_writes_there(sources, tmp_path):
    m1, _, a, _ = sources
    out = tmp_path / "o"
    tg.pairwise_distances(str(m1), out=out, tile=16)
    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    marker = out / "tiles" / "1-2.json"
    marker.unlink()
    marker.symlink_to(victim)
    D = np.asarray(tg.pairwise_distances(str(m1), out=out))
    assert victim.read_text() == "precious"
    np.testing.assert_allclose(D, tg.pairwise_distances(a), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: {**d, "format": "taskgeom-distances-1"}, "format"),
        (lambda d: {**d, "m": -1}, "damaged (m)"),
        (lambda d: {**d, "keys": ["../x"]}, "damaged (keys)"),
        (lambda d: {**d, "tile": 2.5}, "damaged (tile)"),
    ],
)
def test_a_damaged_or_foreign_record_is_refused_in_one_line(sources, tmp_path, edit, words):
    m1 = sources[0]
    out = tmp_path / "o"
    tg.pairwise_distances(str(m1), out=out, tile=16)
    meta = out / "meta.json"
    meta.write_text(json.dumps(edit(json.loads(meta.read_text()))))
    for read in (lambda: tg.pairwise_distances(str(m1), out=out), lambda: large.inpca_out_of_core(out, k=2)):
        with pytest.raises(ValueError) as exc:
            read()
        assert words in one_line(exc)


def stop_after(monkeypatch, n):
    calls = {"n": 0}
    real = tiled.compute_tile

    def dying(*a, **kw):
        if calls["n"] == n:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(tiled, "compute_tile", dying)
    return real


def test_an_unfinished_folder_is_refused_by_every_read(sources, tmp_path, monkeypatch):
    m1, _, a, _ = sources
    out = tmp_path / "o"
    real = stop_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        tg.pairwise_distances(str(m1), out=out, tile=16)
    monkeypatch.setattr(tiled, "compute_tile", real)
    for read in (
        lambda: large.inpca_out_of_core(out, k=2),
        lambda: tiled.DistanceMatrix(out).array(),
        lambda: list(tiled.DistanceMatrix(out).row_blocks()),
    ):
        with pytest.raises(ValueError) as exc:
            read()
        assert "unfinished: 4 of 6 tiles are missing" in one_line(exc)
    tg.pairwise_distances(str(m1), out=out)
    dense = tg.inpca(tg.pairwise_distances(a), k=2)
    np.testing.assert_allclose(large.inpca_out_of_core(out, k=2).eigenvalues, dense.eigenvalues, rtol=1e-8)


def _matrices():
    D = np.asarray(tg.pairwise_distances(synth(20, seed=3)))
    asym = D.copy()
    asym[2, 7] += 0.01
    neg = D.copy()
    neg[3, 4] = neg[4, 3] = -0.2
    diag = D.copy()
    diag[5, 5] = 0.3
    nan = D.copy()
    nan[1, 2] = nan[2, 1] = np.nan
    return [(asym, "symmetric"), (neg, "Negative"), (diag, "zero diagonal"), (nan, "non-finite")]


@pytest.mark.parametrize("case", range(4))
def test_inpca_out_of_core_refuses_what_inpca_refuses(tmp_path, case):
    bad, words = _matrices()[case]
    np.save(tmp_path / "bad.npy", bad)
    for run in (
        lambda: tg.inpca(bad, k=2),
        lambda: large.inpca_out_of_core(bad, k=2),
        lambda: large.inpca_out_of_core(tmp_path / "bad.npy", k=2, budget=5 * 20 * 8),
    ):
        with pytest.raises(ValueError) as exc:
            run()
        assert words in one_line(exc)


def _grow_setup(tmp_path):
    x = synth(70, seed=4)
    np.save(tmp_path / "a.npy", x[:50])
    np.save(tmp_path / "b.npy", x)
    np.save(tmp_path / "c.npy", x[:60])
    tg.pairwise_distances(str(tmp_path / "a.npy"), out=tmp_path / "D", tile=16)
    return x


@pytest.mark.parametrize("resume_with", [70, 60, 50])
def test_a_kill_inside_the_growth_step_leaves_a_folder_that_resumes(tmp_path, monkeypatch, resume_with):
    x = _grow_setup(tmp_path)
    real = tiled._write_meta

    def killed(path, meta):
        raise KeyboardInterrupt  # after D.npy was replaced by the grown file, before the record

    monkeypatch.setattr(tiled, "_write_meta", killed)
    with pytest.raises(KeyboardInterrupt):
        tg.pairwise_distances(str(tmp_path / "b.npy"), out=tmp_path / "D")
    monkeypatch.setattr(tiled, "_write_meta", real)
    assert np.load(tmp_path / "D" / "D.npy", mmap_mode="r").shape == (70, 70)  # the half-done state
    with pytest.raises(ValueError) as exc:
        large.inpca_out_of_core(tmp_path / "D", k=2)
    assert "growth step was interrupted" in one_line(exc)
    src = {70: "b.npy", 60: "c.npy", 50: "a.npy"}[resume_with]
    D = np.asarray(tg.pairwise_distances(str(tmp_path / src), out=tmp_path / "D"))
    np.testing.assert_allclose(D, tg.pairwise_distances(x[:resume_with]), rtol=1e-12, atol=1e-15)


def test_sigkill_inside_the_growth_step_leaves_a_folder_that_resumes(tmp_path):
    x = _grow_setup(tmp_path)
    code = textwrap.dedent(f"""
        import os, signal
        import taskgeom as tg
        from taskgeom import tiled
        real = tiled._new_matrix
        def then_die(*a, **kw):
            real(*a, **kw)
            os.kill(os.getpid(), signal.SIGKILL)  # D.npy replaced, record not written
        tiled._new_matrix = then_die
        tg.pairwise_distances({str(tmp_path / "b.npy")!r}, out={str(tmp_path / "D")!r})
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL
    D = np.asarray(tg.pairwise_distances(str(tmp_path / "b.npy"), out=tmp_path / "D"))
    np.testing.assert_allclose(D, tg.pairwise_distances(x), rtol=1e-12, atol=1e-15)


def test_a_kill_between_a_tiles_bytes_and_its_marker_recomputes_it_and_leaves_no_temporaries(
    sources, tmp_path, monkeypatch
):
    m1, _, a, _ = sources
    out = tmp_path / "o"
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        if os.path.basename(os.path.dirname(dst)) == "tiles":
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(tiled.os, "replace", replace)
    with pytest.raises(OSError):
        tg.pairwise_distances(str(m1), out=out, tile=16)
    monkeypatch.setattr(tiled.os, "replace", real_replace)
    assert len(tiled.DistanceMatrix(out).tasks()) == 4
    D = np.asarray(tg.pairwise_distances(str(m1), out=out))
    np.testing.assert_allclose(D, tg.pairwise_distances(a), rtol=1e-12, atol=1e-15)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_two_processes_on_one_fresh_folder_share_one_ledger(tmp_path):
    x = synth(160, n=40, seed=5)
    np.save(tmp_path / "p.npy", x)
    code = textwrap.dedent(f"""
        import taskgeom as tg
        tg.pairwise_distances({str(tmp_path / "p.npy")!r}, out={str(tmp_path / "D")!r}, tile=8)
        print("done")
    """)
    env = {**os.environ, "TASKGEOM_NUM_THREADS": "1"}
    # run outside the checkout, so that the child imports the installed taskgeom (a clone is not built in place)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e.decode()[-2000:]
    dm = tiled.DistanceMatrix(tmp_path / "D")
    np.testing.assert_allclose(np.asarray(dm.array()), tg.pairwise_distances(x), rtol=1e-12, atol=1e-15)
    assert not [p for p in (tmp_path / "D").rglob("*") if p.name.endswith(".tmp")]


def test_a_writer_whose_matrix_was_grown_by_another_process_stops_instead_of_writing(tmp_path):
    x = synth(40, seed=6)
    np.save(tmp_path / "a.npy", x[:30])
    np.save(tmp_path / "b.npy", x)
    from taskgeom.modelsets import open_models

    ms = open_models(str(tmp_path / "a.npy"))
    dm = tiled.open_for(tmp_path / "D", ms, "bhattacharyya", 16, tiled.DEFAULT_BUDGET)
    stale_task = dm.tasks()[0]
    tiled.open_for(tmp_path / "D", open_models(str(tmp_path / "b.npy")), "bhattacharyya", None, tiled.DEFAULT_BUDGET)
    with pytest.raises(RuntimeError) as exc:
        tiled.compute_tile(dm, ms, stale_task, "bhattacharyya")
    assert "grown by another process" in one_line(exc)
    D = np.asarray(tg.pairwise_distances(str(tmp_path / "b.npy"), out=tmp_path / "D"))
    np.testing.assert_allclose(D, tg.pairwise_distances(x), rtol=1e-12, atol=1e-15)


def test_an_unreachable_ray_address_fails_at_once_in_one_line(tmp_path):
    np.save(tmp_path / "m.npy", synth(4))
    code = textwrap.dedent(f"""
        import taskgeom as tg
        try:
            tg.pairwise_distances({str(tmp_path / "m.npy")!r}, out={str(tmp_path / "D")!r}, engine="ray",
                                  address="127.0.0.1:1", connect_timeout=3)
        except RuntimeError as exc:
            print(type(exc).__name__, exc)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = proc.stdout.strip().splitlines()
    assert lines == ["EngineError cannot reach a Ray cluster at 127.0.0.1:1: Connection refused"], proc.stdout
    assert "rpc_client" not in proc.stderr and "GCS" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("address", ["nonsense", "host:port", "127.0.0.1:99999"])
def test_a_malformed_ray_address_is_refused_in_one_line(address):
    with pytest.raises(engines.EngineError) as exc:
        engines._probe(address, 1.0)
    assert address in one_line(exc)


def test_a_port_that_is_not_ray_is_refused_in_one_line():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def answer():
        conn, _ = server.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        with pytest.raises(engines.EngineError) as exc:
            engines.init_ray(f"127.0.0.1:{port}", connect_timeout=5)
        assert "not as a Ray cluster" in one_line(exc)
    finally:
        server.close()


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_connect_timeout_must_be_a_positive_finite_number(timeout):
    with pytest.raises((ValueError, TypeError)) as exc:
        engines.init_ray("127.0.0.1:1", connect_timeout=timeout)
    assert "connect_timeout" in one_line(exc)
