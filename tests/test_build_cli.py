"""The build report and the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import torch

import taskgeom as tg
from taskgeom import cli

from testing import labels, models


def test_build_info_reports_backends():
    info = tg.build_info()
    assert info["cpu"] is True
    assert info["openmp_threads"] >= 1
    assert isinstance(info["gpu_visible"], bool)
    if info["cuda"]:
        assert info["cuda_architectures"]
        # where the build's setting is at hand, the architectures it asked for (setup.py's default: 80;90)
        wanted = os.environ.get("TASKGEOM_CUDA_ARCHS")
        if wanted:
            assert sorted(info["cuda_architectures"]) == sorted(a for a in wanted.split(";") if a)
        assert info["cuda_runtime_version"] >= 11000


def test_public_api_is_exported():
    for name in tg.__all__:
        assert hasattr(tg, name), name


def test_cli_distances_progress_inpca(tmp_path, capsys):
    a = models(12, 40, 5, seed=1).numpy()
    y = labels(40, 5).numpy()
    np.save(tmp_path / "m.npy", a)
    np.save(tmp_path / "y.npy", y)
    assert cli.main(["distances", str(tmp_path / "m.npy"), "-o", str(tmp_path / "D.npy")]) == 0
    D = np.load(tmp_path / "D.npy")
    np.testing.assert_allclose(D, tg.pairwise_distances(a), rtol=1e-12)
    assert cli.main(["progress", str(tmp_path / "m.npy"), str(tmp_path / "y.npy")]) == 0
    assert "model 11: progress" in capsys.readouterr().out
    assert cli.main(["inpca", str(tmp_path / "D.npy"), "-k", "3"]) == 0
    assert "explained stress" in capsys.readouterr().out


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    a = models(3, 10, 4, dtype=torch.float64).numpy()
    a[1, 2, 0] = np.nan
    np.save(tmp_path / "bad.npy", a)
    assert cli.main(["distances", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "D.npy")]) == 1
    err = capsys.readouterr().err
    assert "model 1, sample 2" in err and "Traceback" not in err
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    assert cli.main(["distances", str(tmp_path / "junk.npy")]) == 1  # file errors too: one line, exit 1
    err = capsys.readouterr().err
    assert "not a readable .npy" in err and len(err.strip().splitlines()) == 1


def test_console_script_info(tmp_path):
    # run outside the checkout so that the installed (compiled) package is imported
    out = subprocess.run(
        [sys.executable, "-m", "taskgeom.cli", "info"], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert json.loads(out.stdout)["cpu"] is True
