"""One run on two processes (torchrun, gloo, CPU): equal to the single-process run with the same global
batch (synchronised BatchNorm included), rank 0 alone writes, and a killed run resumes to the same result."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from taskgeom.store import PredictionStore

ARGS = [
    "train",
    "--data",
    "digits",
    "--task",
    "0-4",
    "--arch",
    "small-cnn",
    "--epochs",
    "2",
    "--checkpoints",
    "4",
    "--batch-size",
    "64",
    "--lr",
    "0.1",
    "--seeds",
    "0",
    "--device",
    "cpu",
    "--imprint-samples",
    "400",
]


def launch(store, nproc: int, wait: bool = True, args=None):
    args = ARGS if args is None else args
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "taskgeom.cli", *args, "--store", str(store)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "taskgeom.cli",
            *args,
            "--store",
            str(store),
        ]
    # run outside the checkout, so that `-m taskgeom.cli` imports the installed (built) taskgeom
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=Path(store).parent,
    )
    if wait:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        return out
    return proc


def trajectory(store_path):
    store = PredictionStore(store_path)
    (t,) = store.select()
    out = np.asarray(t.probs, dtype=np.float64), t.checkpoints
    store.close()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    single_out = launch(base / "single", 1)
    ddp_out = launch(base / "ddp", 2)
    return base, single_out, ddp_out


def test_two_processes_follow_the_single_process_run(runs):
    base, single_out, ddp_out = runs
    p1, c1 = trajectory(base / "single")
    p2, c2 = trajectory(base / "ddp")
    assert p1.shape == p2.shape and p1.shape[0] >= 4
    assert [c["step"] for c in c1] == [c["step"] for c in c2]
    # The all-reduce sums the gradient in another order than one process does, and training amplifies the
    # difference: measured here (e664946) max 0 / 1.5e-5 / 1.2e-4 / 2.0e-3 at the four checkpoints, mean
    # 1.3e-5 over all (identical at the initialisations of before; 5.9e-3 apart without synchronised
    # BatchNorm). Early checkpoints agree closely, and the whole run does on average.
    d = np.abs(p2 - p1)
    assert d[:2].max() < 1e-4, d.reshape(d.shape[0], -1).max(1)
    assert d.max() < 5e-3 and d.mean() < 1e-4, (d.max(), d.mean())
    assert abs(c1[-1]["accuracy"] - c2[-1]["accuracy"]) < 0.01
    assert ddp_out.count("checkpoints, imprinted accuracy") == 1  # rank 0 reports; one trajectory
    state = torch.load(next((base / "ddp" / "state").glob("*.pt")), weights_only=True)
    assert not any("module." in k for k in state["model"])  # a plain state: loads into a single-process model


def test_killed_two_process_run_resumes_to_the_same_trajectory(runs, tmp_path):
    base, _, _ = runs
    proc = launch(tmp_path / "k", 2, wait=False)
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            store = PredictionStore(tmp_path / "k")
            n = sum(len(t) for t in store.select())
            store.close()
        except Exception:  # noqa: BLE001 - not created yet
            n = 0
        if n >= 2:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = trajectory(tmp_path / "k")[0].shape[0]
    launch(tmp_path / "k", 2)
    p, _ = trajectory(tmp_path / "k")
    want, _ = trajectory(base / "ddp")
    assert interrupted < want.shape[0]
    np.testing.assert_allclose(p, want, atol=1e-6)


def test_streamed_imagefolder_run_on_two_processes_decodes_shares_and_follows_one_process(tmp_path):
    """Streamed data (--data imagefolder): each process decodes its share of the global batch only (the
    crops drawn for the whole batch first), and the run follows the single-process one."""
    from testing import make_image_folder

    folder = make_image_folder(tmp_path / "imagenet")
    args = ["--data", "imagefolder", "--data-path", str(folder), "--resolution", "32", "--min-res", "16"]
    args += ["--res-ramp", "0", "1", "--batch-size", "8", "--imprint-samples", "25", "--checkpoints", "3"]
    args = ["train", "--arch", "small-cnn", "--epochs", "2", "--lr", "0.1", "--device", "cpu", *args]
    launch(tmp_path / "one", 1, args=args)
    launch(tmp_path / "two", 2, args=args)
    (p1, _), (p2, _) = trajectory(tmp_path / "one"), trajectory(tmp_path / "two")
    assert p1.shape == p2.shape == (3, 20, 5)
    np.testing.assert_allclose(p2, p1, atol=1e-3)


def test_finish_closes_the_process_group(tmp_path):
    """Every rank closes its group before exit (a gloo group left to interpreter teardown can abort a rank)."""
    import torch.distributed as dist

    from taskgeom.train import distributed

    distributed.finish()  # nothing to close: no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    assert dist.is_initialized()
    distributed.finish()
    assert not dist.is_initialized()
