"""taskgeom analyse / place / compare (issue 28) on a store written outside taskgeom's training: one
line per error, the main job's outputs for any store."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_trajectories import training_run

from taskgeom import cli
from taskgeom.store import PredictionStore

N, C = 150, 5


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmd") / "store"
    store = PredictionStore(path, create=True)
    _, y = training_run(n=N, c=C)
    store.add_eval_set("toy", y.numpy(), c=C)
    bias = torch.zeros(N, C, dtype=torch.float64)
    bias[:, 0] = 1.0
    for method, b in (("sgd", None), ("adam", bias)):
        for seed in range(4):
            traj, _ = training_run(n=N, c=C, steps=7, seed=seed + (10 if b is not None else 0), speed=0.5, bias=b)
            g = torch.Generator().manual_seed(200 + seed)
            traj = torch.softmax(traj.log() + 0.3 * torch.randn(traj.shape, generator=g, dtype=torch.float64), -1)
            t = store.create_trajectory("toy", task="all", method=method, seed=seed, config={"optim": {"name": method}})
            store.extend(t, traj.numpy().astype(np.float32))
    store.close()
    return path


def test_analyse_writes_the_main_jobs_outputs_for_any_store(store_path, tmp_path, capsys):
    out = tmp_path / "pic"
    assert (
        cli.main(
            [
                "analyse",
                str(store_path),
                "--group-by",
                "optim.name",
                "--grid",
                "12",
                "--n-boot",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "taskgeom analyse: 8 trajectories" in text and "seeds per group: adam: 4, sgd: 4" in text
    res = json.loads((out / "results.json").read_text())
    assert set(res["progress_on_union_task"]) == {"adam", "sgd"} and res["settings"]["groups"].startswith(
        "by optim.name"
    )
    assert (out / "report.html").stat().st_size > 10_000 and (out / "analysis.json").is_file()
    # place a run into that picture
    probs = np.asarray(PredictionStore(store_path).select(method="adam")[0].probs)
    np.save(tmp_path / "run.npy", probs)
    assert cli.main(["place", str(out), str(tmp_path / "run.npy"), "--name", "again"]) == 0
    placed = json.loads((out / "placed-again.json").read_text())
    assert "again (placed)" in (out / "placed-again.html").read_text(encoding="utf-8")  # drawn as its own trace
    assert len(placed["points"]) == len(probs) and set(placed["points"][0]["tube_radii"]) == {"adam", "sgd"}


def test_compare_two_groups(store_path, tmp_path, capsys):
    assert (
        cli.main(
            [
                "compare",
                str(store_path),
                "--a",
                "method=sgd",
                "--b",
                "method=adam",
                "--n-boot",
                "20",
                "--out",
                str(tmp_path / "c.json"),
            ]
        )
        == 0
    )
    res = json.loads((tmp_path / "c.json").read_text())
    assert res["seeds"] == [4, 4] and res["permutations"] == 70 and res["p_value"] < 0.05
    assert "permutation test" in capsys.readouterr().out
    assert "tg-compare" in (tmp_path / "c.html").read_text(encoding="utf-8")
    # a recorded config field selects as analyse --group-by reads it (the same groups here)
    assert cli.main(["compare", str(store_path), "--a", "optim.name=sgd", "--b", "optim.name=adam", "--n-boot", "0",
                     "--out", str(tmp_path / "d.json")]) == 0  # fmt: skip
    by_config = json.loads((tmp_path / "d.json").read_text())
    assert by_config["seeds"] == [4, 4] and by_config["mean"] == pytest.approx(res["mean"])


@pytest.mark.parametrize(
    "argv, status, match",
    [
        (["compare", "{s}", "--a", "methd=sgd", "--b", "method=adam"], 2, "did you mean 'method'"),
        (["compare", "{s}", "--a", "optim.name=lbfgs", "--b", "method=adam"], 1, "recorded optim.name: adam, sgd"),
        (["compare", "{s}", "--a", "method", "--b", "method=adam"], 2, "FIELD=VALUE"),
        (["compare", "{s}", "--a", "method=lbfgs", "--b", "method=adam"], 1, "no trajectory"),
        (["compare", "{s}", "--a", "method=sgd,seed=0", "--b", "method=adam"], 1, "at least two trajectories"),
        (
            ["analyse", "{s}", "--group-by", "method", "--reference", "nope", "--n-boot", "0", "--out", "{t}/x"],
            1,
            "reference group",
        ),
        (["analyse", "{t}/nowhere"], 1, "not a taskgeom store"),
        (["place", "{t}", "{t}/m.npy"], 1, "not a folder written by taskgeom"),
    ],
)
def test_bad_input_is_one_line(store_path, tmp_path, capsys, argv, status, match):
    argv = [a.format(s=store_path, t=tmp_path) for a in argv]
    assert cli.main(argv) == status
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1


def test_analyse_imported_h5_trajectories_and_a_merged_store(store_path, tmp_path, capsys):
    """Any store: the paper authors' .h5 trajectories imported, and shards merged as a sweep merges them."""
    h5py = pytest.importorskip("h5py")
    from taskgeom.shards import merge_stores

    src = PredictionStore(store_path)
    labels = src.eval_set("toy").labels
    imported = PredictionStore(tmp_path / "imported", create=True)
    for t in src.select():
        path = tmp_path / f"preds_{t.method}_{t.seed}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=np.asarray(t.probs).astype(np.float16))
        imported.import_h5(path, labels, "toy", task="all", method=t.method, seed=t.seed)
    imported.close()
    assert (
        cli.main(
            [
                "analyse",
                str(tmp_path / "imported"),
                "--group-by",
                "method",
                "--n-boot",
                "0",
                "--grid",
                "10",
                "--out",
                str(tmp_path / "h5pic"),
            ]
        )
        == 0
    )
    assert "8 trajectories" in capsys.readouterr().out
    shards = []
    for method in ("sgd", "adam"):  # one shard per method, as sweep workers write them
        shard = PredictionStore(tmp_path / f"shard-{method}", create=True)
        shard.add_eval_set("toy", labels, c=C)
        for t in src.select(method=method):
            shard.extend(shard.create_trajectory("toy", task="all", method=method, seed=t.seed, name=t.name), t.probs)
        shard.close()
        shards.append(tmp_path / f"shard-{method}")
    merge_stores(shards, tmp_path / "merged")
    assert (
        cli.main(
            [
                "analyse",
                str(tmp_path / "merged"),
                "--group-by",
                "method",
                "--n-boot",
                "0",
                "--grid",
                "10",
                "--out",
                str(tmp_path / "mpic"),
            ]
        )
        == 0
    )
    a = json.loads((tmp_path / "h5pic" / "results.json").read_text())["progress_on_union_task"]
    b = json.loads((tmp_path / "mpic" / "results.json").read_text())["progress_on_union_task"]
    assert set(a) == set(b) == {"adam", "sgd"}
    assert a["sgd"]["mean"] == pytest.approx(b["sgd"]["mean"], abs=2e-3)  # float16 import against float32 shards


def test_python_api_takes_the_command_lines_paths(store_path, tmp_path):
    """tg.analyse takes a store's folder and tg.place a .npy file, as the command line does."""
    import taskgeom as tg

    res = tg.analyse(str(store_path), group_by="method", n_boot=0, grid=8)
    models = np.asarray(PredictionStore(store_path, readonly=True).select(method="adam")[0].probs[-2:])
    np.save(tmp_path / "m.npy", models)
    by_path, by_array = tg.place(res, tmp_path / "m.npy"), tg.place(res, models)
    assert [p["xyz"] for p in by_path["points"]] == [p["xyz"] for p in by_array["points"]]
    before = res.to_json()
    page = tg.publish(res, tmp_path / "pic")  # the report and results.json, as taskgeom analyse writes them
    assert page.name == "report.html" and (tmp_path / "pic" / "results.json").is_file()
    assert res.to_json() == before  # presenting a result never writes into it; it cannot be written into
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.reference_task = "something else"
    groups = [PredictionStore(store_path, readonly=True).select(method=m) for m in ("sgd", "adam")]
    assert "mean normalised distance" in repr(tg.compare(*groups, n_boot=0, n_perm=0))  # a summary, not arrays


def test_place_finds_a_moved_store(store_path, tmp_path, capsys):
    """A picture folder and its store moved together are found again; a store moved elsewhere is named in one
    line, and --store points place at it."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(store_path, home / "store")
    argv = ["analyse", str(home / "store"), "--group-by", "method", "--grid", "8", "--n-boot", "0"]
    assert cli.main([*argv, "--out", str(home / "pic")]) == 0
    models = np.asarray(PredictionStore(home / "store", readonly=True).select(method="sgd")[0].probs[-1:])
    np.save(tmp_path / "m.npy", models)
    moved = tmp_path / "moved"
    shutil.move(home, moved)  # both together: found by the recorded relative path
    assert cli.main(["place", str(moved / "pic"), str(tmp_path / "m.npy")]) == 0
    shutil.move(moved / "store", tmp_path / "elsewhere")
    capsys.readouterr()
    assert cli.main(["place", str(moved / "pic"), str(tmp_path / "m.npy")]) == 1
    assert "give --store PATH" in capsys.readouterr().err
    assert cli.main(["place", str(moved / "pic"), str(tmp_path / "m.npy"), "--store", str(tmp_path / "elsewhere")]) == 0


def test_grouping_that_pools_methods_warns(store_path):
    """One task trained two ways, grouped by task: the two ways would be averaged as seeds of one family."""
    import taskgeom as tg

    with pytest.warns(UserWarning, match=r"pools runs trained differently \(method: adam, sgd.*group by method"):
        tg.analyse(str(store_path), n_boot=0, grid=8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = tg.analyse(str(store_path), group_by="method", n_boot=0, grid=8)
    assert "groups ['adam', 'sgd']" in repr(res) and len(repr(res)) < 400


def test_the_result_reads_as_typed_records(store_path):
    import taskgeom as tg
    from taskgeom.analysis import Curve, Estimate

    res = tg.analyse(str(store_path), group_by="method", n_boot=20, grid=8)
    assert [f.name for f in res.families] == ["adam", "sgd"]
    adam = res.family("adam")
    assert isinstance(adam.final_progress, Estimate) and adam.seeds == 4
    assert adam.final_progress.value == res.progress_on_union_task["adam"]["mean"]
    assert adam.final_progress.low <= adam.final_progress.high and len(adam.final_progress.seeds) == 4
    assert isinstance(adam.tube_radius, Curve) and len(adam.tube_radius.values) == len(res.grid)
    ref, other = res.family(res.reference_task), res.family("sgd" if res.reference_task == "adam" else "adam")
    assert ref.distance_to_reference is None and other.distance_to_reference.low is not None
    assert [e.value for e in res.stress] == [res.explained_stress[k] for k in sorted(res.explained_stress, key=int)]
    with pytest.raises(KeyError, match="families: 'adam', 'sgd'"):
        res.family("lbfgs")
    assert res.family(adam) is not adam and res.family(adam) == adam  # a Family names itself
    with pytest.raises(KeyError) as err:  # short, whatever was passed
        res.family(res.families)
    assert len(str(err.value)) < 120 and "of type tuple" in str(err.value)
    by_seed = tg.analyse(str(store_path), group_by="seed", n_boot=0, grid=8)
    assert by_seed.family(0) == by_seed.family("0")  # group_by="seed" names families "0", "1", ...


def test_grouping_that_pools_settings_warns(tmp_path):
    """Same method, two learning rates recorded in the config, grouped by task: warned, naming the setting."""
    import taskgeom as tg

    store = PredictionStore(tmp_path / "s", create=True)
    _, y = training_run(n=N, c=C)
    store.add_eval_set("toy", y.numpy(), c=C)
    for lr in (0.1, 0.01):
        for seed in range(2):
            traj, _ = training_run(n=N, c=C, steps=5, seed=seed + (10 if lr < 0.05 else 0))
            t = store.create_trajectory(
                "toy", task="all", method="sgd", seed=seed, config={"lr": lr, "seed": seed}, name=f"lr{lr}-s{seed}"
            )
            store.extend(t, traj.numpy().astype(np.float32))
    store.close()
    with pytest.warns(UserWarning, match=r"trained differently \(lr: 0.01, 0.1\).*group by lr"):
        tg.analyse(str(tmp_path / "s"), n_boot=0, grid=6)
