"""The CIFAR-10 family scripts' --smoke rehearsals (issue 16): the same code path as the GPU runs, on the
CPU with generated data, so that a GPU window never finds a crash the CPU could have found."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
RUNS = [
    ("cifar10_family_a.py", []),
    ("cifar10_family_b.py", ["--part", "r4-episodic"]),
    ("cifar10_family_b.py", ["--part", "r4-kway", "--eval-on-train"]),
    ("cifar10_family_b.py", ["--part", "r5"]),
    ("cifar10_family_b.py", ["--part", "r7"]),
]


@pytest.mark.parametrize("script,extra", RUNS, ids=[f"{s}{' ' + e[1] if e else ''}" for s, e in RUNS])
def test_family_script_smoke(tmp_path, script, extra):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, str(EXPERIMENTS / script), "--smoke", "--out", str(out), "--work", str(tmp_path / "w")]
    proc = subprocess.run(cmd + extra, cwd=EXPERIMENTS, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["results.json", "run.log", "store.tar", "summary.png"]
    assert sum(p.stat().st_size for p in out.iterdir()) < 64 * 2**20
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["smoke"] is True and res["grid"] and max(res["grid"]) <= 1.0
    if script.endswith("_a.py"):
        assert set(res) >= {"result1", "result2", "result3", "result6"}
        # the final models are always compared; over the shared progress only where the tasks share some
        assert res["result3"]["spearman_normalized_final_vs_tree_distance"]["test"].startswith("Mantel")
        shared = res["result3"]["spearman_normalized_vs_tree_distance"]["test"]
        assert shared.startswith("Mantel") or shared.startswith("no test: ")
        assert res["result2"]["pets"]["control"] == "random2-s0"
    else:
        assert res["part"] == extra[1] and res["result"]["distances_to_supervised"]
