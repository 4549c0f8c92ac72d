"""inpca_on_device (issue 13, the GPU case): distances kept as upper block tiles in one device's memory and
Lanczos over them. Run here on the CPU (the same code with device="cpu") against the dense solver and
the out-of-core one; bench/bench_inpca_gpu.py --smoke runs the GPU benchmark's path at tiny sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_outofcore import synth

import taskgeom as tg
from taskgeom import large

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def x300():
    x = synth(300, n=80)
    D = np.asarray(tg.pairwise_distances(x))
    return x, D, tg.inpca(D, k=10)


def test_float64_tiles_equal_the_dense_solver(x300, tmp_path):
    x, D, dense = x300
    info = {}
    emb = large.inpca_on_device(x, k=10, device="cpu", tile=64, dtype="float64", info=info)  # 4 x 64 + 44
    assert info["tiles"] == 15 and info["tile"] == 64 and info["matvecs"] > 0
    np.testing.assert_allclose(emb.eigenvalues, dense.eigenvalues, rtol=1e-8)
    assert (emb.eigenvalues < 0).any() and (emb.eigenvalues > 0).any()  # both ends of the spectrum
    np.testing.assert_allclose(emb.coords, dense.coords, atol=1e-9)  # signs fixed as the dense solver's
    assert emb.total_sq == pytest.approx(dense.total_sq, rel=1e-12)
    assert emb.explained_stress(3) == pytest.approx(dense.explained_stress(3), rel=1e-10)
    np.testing.assert_allclose(emb.transform(D[:5]), dense.coords[:5], atol=1e-9)
    # and the out-of-core solver on the same matrix
    np.save(tmp_path / "D.npy", D)
    ooc = large.inpca_out_of_core(tmp_path / "D.npy", k=10)
    np.testing.assert_allclose(emb.eigenvalues, ooc.eigenvalues, rtol=1e-8)


def test_float32_tiles_are_the_rounded_matrix(x300):
    x, D, dense = x300
    dd = large.device_distances(torch.from_numpy(x), device="cpu", tile=128)  # 128 + 128 + 44
    assert [b for b in dd.bounds] == [(0, 128), (128, 256), (256, 300)] and len(dd.tiles) == 6
    assert dd.nbytes == sum(t.numel() * 4 for t in dd.tiles.values())
    rows = [0, 127, 128, 299]
    np.testing.assert_allclose(dd.rows(rows), D[rows], rtol=1e-7, atol=0)
    X = np.random.default_rng(0).standard_normal((300, 3))
    err = np.abs(dd.matmat(torch.from_numpy(X)).numpy() - D @ X).max()
    assert err < 1e-7 * (np.abs(D) @ np.abs(X)).max()
    emb = large.inpca_on_device(dd, k=10)
    np.testing.assert_allclose(emb.eigenvalues, dense.eigenvalues, rtol=1e-5)
    assert emb.total_sq == pytest.approx(dense.total_sq, rel=1e-6)
    assert large.procrustes_correlation(dense.coords[:, :3], emb.coords[:, :3]) > 1 - 1e-9
    # the residuals of the eigenpairs on the stored (float32) operator are at the solver's tolerance
    V = torch.from_numpy(emb.vectors)
    R = dd.w_matmat(V) - V * torch.from_numpy(emb.eigenvalues)[None, :]
    assert float((R.norm(dim=0) / torch.from_numpy(np.abs(emb.eigenvalues))).max()) < 1e-8


def test_sources_progress_and_a_stopped_run(tmp_path):
    x = synth(70, n=30, c=4)
    np.save(tmp_path / "p.npy", x)
    seen = []
    emb = large.inpca_on_device(str(tmp_path / "p.npy"), k=3, device="cpu", tile=32, progress=lambda *a: seen.append(a))
    ref = tg.inpca(tg.pairwise_distances(x), k=3)
    np.testing.assert_allclose(emb.eigenvalues, ref.eigenvalues, rtol=1e-5)
    assert seen[:6] == [("distances", i, 6) for i in range(1, 7)] and seen[-1][0] == "lanczos"

    def stop(stage, done, total):
        if stage == "lanczos" and done == 2:
            raise KeyboardInterrupt

    info = {}
    with pytest.raises(KeyboardInterrupt):
        large.inpca_on_device(x, k=3, device="cpu", tile=32, progress=stop, info=info)
    assert info["matvecs"] == 2 and info["tiles"] == 6  # what was done is recorded


def test_bad_input_and_memory_errors(monkeypatch):
    x = synth(40, n=20, c=4)
    with pytest.raises(ValueError, match="k must be in"):
        large.inpca_on_device(x, k=40, device="cpu")
    with pytest.raises(ValueError, match="dtype must be one of"):
        large.inpca_on_device(x, device="cpu", dtype="float16")
    with pytest.raises(ValueError, match="tile must be >= 1"):
        large.inpca_on_device(x, device="cpu", tile=0)
    with pytest.raises(ValueError, match="ncv must be in"):
        large.inpca_on_device(x, k=3, ncv=3, device="cpu")
    with pytest.raises(ValueError, match="device must be"):
        large.inpca_on_device(x, device="mps")
    with pytest.raises(ValueError, match="at least 2 models"):
        large.inpca_on_device(x[:1], device="cpu")
    with pytest.raises(ValueError, match="expected"):
        large.inpca_on_device(x[0], device="cpu")
    bad = x.astype(np.float32)
    bad[33, 5, 1] = np.nan
    with pytest.raises(ValueError, match=r"models\[32:40\].*not finite"):
        large.inpca_on_device(bad, k=3, device="cpu", tile=16)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="visible GPU"):
            large.inpca_on_device(x, device="cuda")
    monkeypatch.setattr(large, "_free_bytes", lambda dev: 1000)
    with pytest.raises(MemoryError, match=r"exact InPCA of 40 models on cpu needs .* GB .*inpca_out_of_core"):
        large.inpca_on_device(x, device="cpu")


def test_gpu_benchmark_smoke_mode(tmp_path):
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_inpca_gpu.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(tg.__file__).resolve().parents[1])},  # this taskgeom
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["errors"] == [], res["errors"]
    assert res["check"]["max_relative_eigenvalue_error"] < 1e-5
    assert res["check"]["max_relative_row_error"] < 1e-6
    assert res["full"]["matvecs"] > 0 and res["full"]["max_relative_residual"] < 1e-8
    assert proc.stdout.splitlines()[-1].startswith("script wall")  # the table is printed last
