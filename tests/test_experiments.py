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
        # seed by seed: each seed's fine-tuning runs right after its supervised runs, before the next seed
        log = (out / "run.log").read_text()
        assert log.index("bird-cat from early seed 0") < log.index("all seed 1")
        # issue 29: progress from initialisation, no clamped copies, seeds in every interval, one common range
        pets = res["result2"]["pets"]
        assert pets["progress_gain"]["mean"] == pytest.approx(
            pets["progress"]["mean"] - pets["progress_at_init"]["mean"]
        )
        assert "seeds per group: pets: 2" in pets["over"] and set(res["progress"]) >= {"all", "pets"}
        assert res["result1"]["clamped_points"] == 0 and "seeds" in res["result1"]["explained_stress_interval"]["over"]
        assert "progress_compared" in res["result3"] or "normalized_interval" not in res["result3"]
        r6 = res["result6"]
        assert r6["source"] == "all layer-norm" and r6["norm"] == "layer"
        for start in r6["starts"].values():  # checkpoints chosen by progress, not by index
            assert set(start) == {"early", "middle", "final"} and all(k >= 1 for k, _, _ in start.values())
    else:
        assert res["part"] == extra[1] and res["result"]["distances_to_supervised"]
        body = res["result"]
        assert res["imprint_head"] == "cosine-ml" and set(body["progress"]) == set(res["runs"]["seeds"])
        for v in body["distances_to_supervised"].values():
            assert "seeds per group" in v["over"] and len(v["final_normalized_distance_interval"]) == 2
        if extra[1] == "r4-episodic":
            assert res["norm"] == "layer" and res["checkpoint_every"] == 2
            riemann = body["riemann"]
            # checkpoints in proportion to steps: 4 supervised steps, 16 of 2-way episodes, 8 of 5-way
            assert [riemann[g]["density"]["checkpoints"][0] for g in riemann] == [4, 10, 6]
            for r in riemann.values():
                assert r["density"]["full"]["mean"] >= r["density"]["half"]["mean"] - 1e-9
                assert r["density"]["verdict"].startswith(("converged", "not converged"))
            assert set(riemann["protonet 2-way"]["ratio_to_supervised_by_density"]) == {"full", "half", "third"}
        if extra[1] == "r5":
            assert res["fixmatch_labelled"]["images"] == 10  # 5% of 240, as many of every class


def _family(tmp_path, name, *extra, work="w"):
    out = tmp_path / name
    cmd = [sys.executable, str(EXPERIMENTS / "cifar10_family_b.py"), "--part", "r4-kway", "--smoke"]
    cmd += ["--out", str(out), "--work", str(tmp_path / work), *extra]
    proc = subprocess.run(cmd, cwd=EXPERIMENTS, capture_output=True, text=True, timeout=600)
    return proc, out


def test_family_budget_ends_incomplete_then_resumes(tmp_path):
    """No time at all: nothing is trained, the outputs say why and the script fails; the same --work
    then continues to the complete family, as a run with workers in parallel gives it."""
    proc, out = _family(tmp_path, "cut", "--budget-s", "0.01", "--reserve-s", "0")
    assert proc.returncode == 1 and "incomplete" in proc.stderr.splitlines()[-1], proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "run.log", "store.tar", "summary.png"]
    res = json.loads((out / "results.json").read_text())
    assert res["incomplete"].startswith("no run of supervised") and res["runs"]["trained"] == 0
    assert len(res["runs"]["skipped"]) == res["runs"]["planned"] == 8  # 4 groups x 2 seeds
    assert "result" not in res
    proc, out = _family(tmp_path, "full")
    assert proc.returncode == 0, proc.stderr[-2000:]
    full = json.loads((out / "results.json").read_text())
    assert full["runs"]["trained"] == 8 and not full["runs"]["skipped"] and "incomplete" not in full
    assert full["runs"]["seeds"]["7-way cross-entropy"] == [0, 1]
    proc, again = _family(tmp_path, "again")  # the same --work once more: nothing left to train
    assert proc.returncode == 0 and "already trained" in (again / "run.log").read_text(), proc.stderr[-2000:]
    res = json.loads((again / "results.json").read_text())
    assert set(res["runs"]["seconds"].values()) == {None} and _close(res["result"], full["result"])
    proc, out = _family(tmp_path, "workers", "--workers", "2", work="w2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads((out / "results.json").read_text())
    # the same runs: the same numbers, up to the float order of a different torch thread count per process
    assert _close(two["result"], full["result"]) and _close(two["grid"], full["grid"])


def _close(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-9)
    return a == b


def test_family_one_seed_and_bad_options(tmp_path):
    proc, out = _family(tmp_path, "one", "--seeds", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert res["runs"]["seeds"]["supervised"] == [0] and "undefined" in res["runs"]["note"]
    bad_options = [(["--workers", "0"], "--workers"), (["--budget-s", "-1"], "--budget-s")]
    bad_options.append((["--budget-s", "30"], "--reserve-s (60) must be below --budget-s (30)"))
    bad_options += [
        (["--seeds", "-1"], "--seeds"),
        (["--seeds", "0", "0"], "each value once"),
        (["--budget-s", "inf"], "finite"),
    ]
    crowded = tmp_path / "crowded"
    crowded.mkdir()
    for i in range(5):
        (crowded / f"{i}.txt").write_text("")
    bad_options.append((["--out", str(crowded)], "holds 5 other files"))
    for bad, what in bad_options:
        proc, _ = _family(tmp_path, "bad", *bad)
        assert proc.returncode == 2 and what in proc.stderr.splitlines()[-1], proc.stderr


def _script(tmp_path, script, *args, env=None):
    return subprocess.run(
        [sys.executable, str(EXPERIMENTS / script), *args],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_experiment_scripts_fail_in_one_line(tmp_path):
    """Every experiment script runs under the command line's error policy (taskgeom.cli.run_script): an error
    on its input is one line naming the script and what is wrong, exit status 1, no traceback (shown with
    TASKGEOM_TRACEBACK=1)."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    digits = tmp_path / "digits.json"  # a picture of tasks outside CIFAR-10's tree
    digits.write_text(json.dumps({"task_distances": {"tasks": ["all", "0-4"]}, "explained_stress": [],
                                  "progress_on_union_task": {}}))  # fmt: skip
    cases = [
        ("result2_progress.py", ["--store", str(tmp_path / "nowhere")], "is not a taskgeom store"),
        ("result3_hierarchy.py", ["--results", str(bad)], f"{bad}: not a results.json"),
        ("result3_hierarchy.py", ["--results", str(digits)], "tasks 0-4 are not in CIFAR-10's semantic tree"),
        ("compare_methods.py", ["--data", "cifar10", "--data-path", str(tmp_path / "none")], "no such dataset"),
        ("result6_finetune.py", ["--data", "cifar10", "--data-path", str(tmp_path / "none")], "no such dataset"),
    ]
    for script, args, said in cases:
        proc = _script(tmp_path, script, *args, "--out", str(tmp_path / "out"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, (script, proc.stderr[-2000:])
        assert lines[0].startswith(f"{script}: error: ") and said in lines[0], lines[0]
    proc = _script(tmp_path, "result2_progress.py", "--store", str(tmp_path / "nowhere"),
                   env={"TASKGEOM_TRACEBACK": "1"})  # fmt: skip
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr


def test_result3_reads_distances_that_a_results_json_left_null():
    """A pair whose normalised distance is infinite (groups with no tube) is null in results.json and reads
    back as NaN: result3 never names such a pair the nearest."""
    import importlib
    import math

    sys.path.insert(0, str(EXPERIMENTS))
    try:
        r3 = importlib.import_module("result3_hierarchy")
    finally:
        sys.path.remove(str(EXPERIMENTS))
    names = ["all", "vehicles", "animals"]
    for far in (math.inf, None):  # in memory, and as a results.json writes it
        nd = [[0.0, far, 0.5], [far, 0.0, 0.7], [0.5, 0.7, 0.0]]
        td = {"tasks": names, "normalized": nd, "bhattacharyya": [[0, 0.1, 0.2], [0.1, 0, 0.3], [0.2, 0.3, 0]],
              "normalized_final": nd, "progress_reached": [0.1, 0.9], "points_compared": {}}  # fmt: skip
        near = r3.analyse(td)["nearest_task"]
        assert near["all"]["nearest"] == "animals" and near["vehicles"]["nearest"] == "animals"
