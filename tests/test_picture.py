"""The main job, at a tiny size: trains, records into a store, analyses, writes the report; a second
run re-analyses the store without retraining."""

import json

import numpy as np

from taskgeom import cli
from taskgeom.store import PredictionStore
from taskgeom.train import checkpoint_steps


def test_checkpoint_schedule_is_dense_early():
    s = checkpoint_steps(1000, 20)
    assert s[0] == 0 and s[-1] == 1000 and len(s) >= 15
    gaps = np.diff(s)
    assert gaps[0] < gaps[-1]


def test_picture_end_to_end_and_reanalysis(tmp_path, capsys):
    out = tmp_path / "report"
    args = [
        "picture",
        "--out",
        str(out),
        "--tasks",
        "all",
        "0-4",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "3",
        "--checkpoints",
        "6",
        "--grid",
        "12",
    ]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert "explained stress" in text and "Riemann length" in text
    res = json.loads((out / "results.json").read_text())
    assert res["trajectories"] == 4
    assert 0 < res["explained_stress"]["3"] <= 1
    assert res["progress_on_union_task"]["all"]["mean"] > res["progress_on_union_task"]["0-4"]["mean"]
    assert len(res["normalized_distance_to_all"]["0-4"]) == len(res["grid"]) <= 12
    # the grid spans the progress the runs reach, and curves are only drawn where both tasks reach it
    finals = [p for v in res["progress_on_union_task"].values() for p in v["seeds"]]
    assert max(res["grid"]) <= max(finals) + 0.2 and max(res["grid"]) < 1.0
    assert all(len(r) == len(res["grid"]) for r in res["reached"].values()) and any(res["reached"]["all"])
    both = np.array(res["reached"]["all"]) & np.array(res["reached"]["0-4"])
    assert [v is not None for v in res["normalized_distance_to_all"]["0-4"]] == both.tolist()
    for fig in res["figures"]:
        assert (out / fig).stat().st_size > 10_000
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seeds"] == [0, 1] and "build" in cfg
    store = PredictionStore(out / "store")
    counts = [len(t) for t in store.select()]
    assert len(counts) == 4 and min(counts) >= 5
    # second run: every run is finished in the store, nothing is retrained or duplicated (and it says so)
    from taskgeom import picture
    from taskgeom.config import from_args

    cfg = from_args(picture.PictureConfig, cli.build_parser().parse_args(args))
    ev = store.select()[0].eval_set
    assert all(picture._finished(store, ev, t, s, cfg) for t in ("all", "0-4") for s in (0, 1))
    assert not picture._finished(store, ev, "all", 2, cfg)
    longer = from_args(picture.PictureConfig, cli.build_parser().parse_args(args + ["--epochs", "4"]))
    assert not picture._finished(store, ev, "all", 0, longer)
    # each run trained in its own shard (its training state there), merged into the store
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["0-4-s0", "0-4-s1", "all-s0", "all-s1"]
    states = sorted((out / "shards").glob("*/state/*.pt"))
    assert len(states) == 4
    stamps = [p.stat().st_mtime_ns for p in states]
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "4 runs already recorded" in capsys.readouterr().err
    assert [len(t) for t in PredictionStore(out / "store").select()] == counts
    assert [p.stat().st_mtime_ns for p in states] == stamps
    # other settings are not re-analysed as if they were these: a one-line error names them (as a run of
    # taskgeom train would), and nothing is trained or changed
    capsys.readouterr()
    assert cli.main(args + ["--lr", "0.2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "with other settings (lr: 0.1 recorded, 0.2 now)" in err[0]
    assert cli.main(args + ["--epochs", "4"]) == 1
    assert "epochs: 3 recorded, 4 now" in capsys.readouterr().err
    assert [len(t) for t in PredictionStore(out / "store").select()] == counts


def _tiny(out, *extra):
    return ["picture", "--out", str(out), "--tasks", "all", "0-4", "--seeds", "0", "--epochs", "1"] + [
        "--checkpoints",
        "3",
        "--grid",
        "6",
        "--n-boot",
        "0",
        *extra,
    ]


def test_runs_compute_the_same_however_many_train_at_once(tmp_path, monkeypatch):
    """Each run trains on one torch thread in its own shard: the store holds the same bytes whether the runs
    trained one after the other in this process or side by side in worker processes. (Heartbeat lines at
    every run: the progress line shows as each run ends.)"""
    monkeypatch.setenv("TASKGEOM_HEARTBEAT_S", "0.001")
    probs = {}
    for w in ("1", "2"):
        out = tmp_path / f"w{w}"
        assert cli.main(_tiny(out, "--workers", w)) == 0
        store = PredictionStore(out / "store")
        probs[w] = {t.name: np.asarray(t.probs) for t in store.select()}
        assert {t.extra["run_config"]["threads"] for t in store.select()} == {1}
        assert sorted(p.name for p in (out / "shards").iterdir()) == ["0-4-s0", "all-s0"]
    assert probs["1"].keys() == probs["2"].keys() and len(probs["1"]) == 2
    assert all(np.array_equal(probs["1"][k], probs["2"][k]) for k in probs["1"])


def test_an_unfinished_run_recorded_into_the_store_is_named_not_mixed(tmp_path, capsys):
    """Earlier versions trained the main job's runs into the store itself: one left unfinished there cannot
    continue in a shard (its training state is elsewhere), so the job stops with a one-line error naming it
    instead of training it again and failing at the merge."""
    from taskgeom import picture
    from taskgeom.config import from_args
    from taskgeom.data import datasets
    from taskgeom.train.loop import identity, resolved

    data = datasets.load(datasets.DataConfig())
    store = PredictionStore(tmp_path / "r" / "store", create=True)
    store.add_eval_set(data.eval_set, data.test_labels, class_names=data.classes)
    cfg = from_args(picture.PictureConfig, cli.build_parser().parse_args(_tiny(tmp_path / "r")))
    recorded = identity(resolved(picture._run_config(cfg, data, 0), len(data.train_labels)))  # these settings
    t = store.create_trajectory(
        data.eval_set,
        task="0-4",
        method="supervised",
        seed=0,
        architecture="small-cnn",
        name=f"0-4/supervised/small-cnn/seed0@{data.eval_set}",
        config=recorded,
    )
    store.extend(t, np.full((1, len(data.test_labels), 10), 0.1, np.float32), epochs=[0.0], steps=[0])
    store.close()
    assert cli.main(_tiny(tmp_path / "r")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'0-4' seed 0 unfinished" in err[0] and "--store" in err[0]
    assert not (tmp_path / "r" / "shards").exists()  # nothing was trained


def test_a_script_without_a_main_guard_is_told_so_in_one_line(tmp_path):
    """Runs train in spawned workers, which import the calling script again: a script that calls the main job
    at its top level gets taskgeom's one line from each worker (nothing trained twice) and a WorkerDied naming
    the guard, not Python's bootstrapping traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "noguard.py"
    out = tmp_path / "out"
    script.write_text(
        "from taskgeom.picture import PictureConfig, run\n"
        f"run(PictureConfig(out={str(out)!r}, epochs=1, seeds=[0], n_boot=0, tasks=('all', '0-4'), workers=2))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert "put the script's calls under if __name__ == '__main__':" in done.stderr
    assert "WorkerDied" in done.stderr and "bootstrapping phase" not in done.stderr
    assert not any((out / "shards").iterdir())  # no run trained
