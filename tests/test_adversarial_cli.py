"""The command line against a hostile or unlucky user (issue 26): every bad option is argparse's usage error
(exit status 2), every bad file or environment one line naming it (exit status 1), a bug one line (70), never a
traceback without --debug; the same settings rules on every route (API, command line, sweep file, preset); a
pickle is never unpickled; an export that cannot complete leaves nothing that looks complete."""

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskgeom import cli

TINY = ["--data", "digits", "--arch", "small-cnn", "--epochs", "1", "--checkpoints", "2", "--device", "cpu"]
TINY += ["--imprint-samples", "100", "--batch-size", "256"]


def call(argv, capsys):
    """``taskgeom ARGV`` in this process: (exit status, stderr lines)."""
    capsys.readouterr()
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def one_line_error(argv, capsys, rc, *needles):
    got, err = call(argv, capsys)
    assert got == rc, (got, err)
    assert len(err) == 1 and err[0].startswith("taskgeom") and "Traceback" not in err[0], err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def subprocess_cli(argv, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "taskgeom.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})},
        timeout=300,
    )


class Boom:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A small trained store (digits, one tiny run), its saved state, model and label files, hostile files."""
    d = tmp_path_factory.mktemp("adv")
    assert cli.main(["train", *TINY, "--task", "0-4", "--store", str(d / "store")]) == 0
    (state,) = sorted((d / "store" / "state").glob("*.pt"))
    rng = np.random.default_rng(0)
    np.save(d / "m.npy", rng.dirichlet(np.ones(5), (4, 30)))
    np.save(d / "y.npy", np.arange(30) % 5)
    with open(d / "evil.pt", "wb") as f:
        pickle.dump({"model": Boom(str(d / "PWNED"))}, f)
    with open(d / "plain.pkl", "wb") as f:
        pickle.dump({"a": 1}, f)
    (d / "text.pt").write_text("not a state\n")
    (d / "empty.pt").write_bytes(b"")
    import torch

    torch.save(torch.zeros(3), d / "tensor.pt")
    torch.save({"model": {"w": "not a tensor"}}, d / "strings.pt")
    return {"dir": d, "store": d / "store", "state": state}


# --- usage errors: every numeric option of every subcommand, audited (exit status 2, nothing written) ---

USAGE = [
    (["distances", "{m}", "--budget-mb", "inf"], "--budget-mb"),
    (["distances", "{m}", "--budget-mb", "nan"], "--budget-mb"),
    (["distances", "{m}", "--budget-mb", "0"], "--budget-mb"),
    (["distances", "{m}", "--budget-mb", "-5"], "--budget-mb"),
    (["distances", "{m}", "--chunk", "0"], "--chunk"),
    (["distances", "{m}", "--chunk", "1.5"], "--chunk"),
    (["distances", "{m}", "--chunk", "99999999999999999999"], "2**63"),
    (["distances", "{m}", "--num-cpus", "-1"], "--num-cpus"),
    (["distances", "{m}", "--num-gpus", "nan"], "--num-gpus"),
    (["distances", "{store}", "-o", "{d}/Dsel", "--select", "task"], "--select"),
    (["inpca", "{d}/D.npy", "-k", "0"], "-k"),
    (["inpca", "{d}/D.npy", "-k", "nan"], "-k"),
    (["inpca", "{d}/D.npy", "-o", "{d}/E.txt"], ".npz"),
    (["export", "{store}", "--seed", "-1", "-o", "{d}/p.npy", "{d}/l.npy"], "--seed"),
    (["export", "{store}", "-o", "{d}/same.npy", "{d}/same.npy"], "two different files"),
    (["beton", "{d}", "{d}/x.beton", "--jpeg-quality", "0"], "--jpeg-quality"),
    (["beton", "{d}", "{d}/x.beton", "--jpeg-quality", "101"], "--jpeg-quality"),
    (["beton", "{d}", "{d}/x.beton", "--max-resolution", "0"], "--max-resolution"),
    (["beton", "{d}", "{d}/x.beton", "--workers", "0"], "--workers"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "-3"], "--epochs"),
    (["train", "--epochs", "2.5"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--warmup", "1"], "--warmup"),
    (["train", "--momentum", "1"], "--momentum"),
    (["train", "--temperature", "0"], "--temperature"),
    (["train", "--label-smoothing", "1"], "--label-smoothing"),
    (["train", "--threshold", "1.5"], "--threshold"),
    (["train", "--crop-scale", "0", "1"], "--crop-scale"),
    (["train", "--crop-scale", "0.9", "0.2"], "crop_scale"),
    (["train", "--res-ramp", "5", "2"], "res_ramp"),
    (["train", "--min-res", "300", "--resolution", "32"], "min_res (300) must not exceed resolution (32)"),
    (["train", "--checkpoints", "1"], "--checkpoints"),
    (["train", "--seeds", "-1"], "--seeds"),
    (["train", "--seeds", "99999999999999999999999"], "2**63"),
    (["train", "--test-fraction", "1.5"], "--test-fraction"),
    (["train", "--test-fraction", "0"], "--test-fraction"),
    (["train", "--test-fraction", "nan"], "--test-fraction"),
    (["train", "--weight-decay", "inf"], "--weight-decay"),
    (["picture", "--epochs", "0"], "--epochs"),
    (["picture", "--lr", "nan"], "--lr"),
    (["picture", "--grid", "1"], "--grid"),
    (["picture", "--n-boot", "-1"], "--n-boot"),
    (["picture", "--test-fraction", "1"], "--test-fraction"),
    (["sweep", "{d}/any.yaml", "--workers", "0"], "--workers"),
]


@pytest.mark.parametrize("argv, needle", USAGE, ids=[f"{a[0]}{'-'.join(a[2:4])}-{i}" for i, (a, _) in enumerate(USAGE)])
def test_bad_options_are_usage_errors(work, capsys, argv, needle):
    d = work["dir"]
    np.save(d / "D.npy", np.zeros((3, 3)) + 1 - np.eye(3))
    out = d / f"never-{abs(hash(tuple(argv)))}"
    extra = ["--store", out] if argv[0] == "train" else (["--out", out] if argv[0] in ("picture", "sweep") else [])
    argv = [str(a).format(d=d, m=d / "m.npy", store=work["store"]) for a in argv] + extra
    one_line_error(argv, capsys, 2, needle, "see taskgeom")
    assert not out.exists() and not (d / "Dsel").exists() and not (d / "same.npy").exists()


# --- input errors: the file named, exit status 1, nothing created ---


def sweep_file(d, name, text):
    p = d / name
    p.write_bytes(text.encode("utf-8", "surrogateescape"))
    return p


SWEEPS = [
    ("syntax.yaml", "tasks: [all\nfixed: {epochs: 1}\n", "not valid YAML (line 2"),
    ("syntax.json", '{"tasks": ["all"],}', "not valid JSON"),
    ("key.yaml", "tasks: [all]\nfixd: {epochs: 1}\n", "unknown key 'fixd' (did you mean 'fixed'?"),
    ("field.yaml", "tasks: [all]\nfixed: {epoch: 1}\n", "fixed: unknown key 'epoch' (did you mean 'epochs'?"),
    ("neg.yaml", "tasks: [all]\nfixed: {epochs: -3}\n", "epochs (--epochs) must be at least 1, got -3"),
    ("nan.yaml", "tasks: [all]\nfixed: {epochs: 1, lr: .nan}\n", "lr (--lr) must be a finite number"),
    ("float.yaml", "tasks: [all]\nfixed: {epochs: 1.5}\n", "epochs (--epochs) must be an integer, got 1.5"),
    ("bool.yaml", "tasks: [all]\nfixed: {epochs: true}\n", "must be an integer, got True"),
    ("str.yaml", "tasks: [all]\nfixed: {lr: '0.1'}\n", "lr (--lr) must be a number"),
    ("grid.yaml", "tasks: [all]\ngrid: {lr: [0.1, -1]}\n", "lr (--lr) must be at least 0"),
    ("gridscalar.yaml", "tasks: [all]\ngrid: {lr: 0.1}\n", "grid: lr must be a non-empty list"),
    ("tasks.yaml", "tasks: all\n", "tasks must be a non-empty list"),
    ("seeds.yaml", "seeds: [0, x]\n", "seeds: 'x' is not a whole number"),
    ("seedfixed.yaml", "fixed: {seed: 3}\n", "fixed: seed is set by the sweep's seeds list"),
    ("data.yaml", "data: {dta: digits}\n", "data: unknown key 'dta' (did you mean 'data'?"),
    ("frac.yaml", "data: {test_fraction: 1.5}\n", "test_fraction (--test-fraction) must be in (0, 1)"),
    ("res.yaml", "resources: {num_cpus: -1}\n", "num_cpus must be a finite number >= 0"),
    ("resname.yaml", "resources: {num_cpu: 1}\n", "did you mean 'num_cpus'?"),
    ("method.yaml", "methods: [hebbian]\nfixed: {epochs: 1}\n", "unknown method 'hebbian'"),
    ("arch.yaml", "archs: [vgg]\n", "arch (--arch) must be one of"),
    ("list.yaml", "- a\n- b\n", "expected a mapping"),
    ("bigseed.yaml", "seeds: [99999999999999999999]\n", "seed (--seed) must be an integer of at most 2**63 - 1"),
    ("binary.yaml", "\udc93NUMPY", "not a text file"),
    ("preset.yaml", "fixed: {preset: fast}\n", "unknown preset 'fast'"),
]


@pytest.mark.parametrize("name, text, needle", SWEEPS, ids=[s[0] for s in SWEEPS])
def test_bad_sweep_files_are_one_line_errors_naming_the_file(work, capsys, name, text, needle):
    d = work["dir"]
    f = sweep_file(d, name, text)
    out = d / f"sweep-{name}"
    msg = one_line_error(["sweep", f, "--out", out], capsys, 1, str(f), needle)
    assert "internal error" not in msg
    assert not out.exists()  # checked whole before anything is written


def test_missing_sweep_file(work, capsys):
    one_line_error(["sweep", work["dir"] / "nowhere.yaml"], capsys, 1, "nowhere.yaml", "No such file")


STATES = [
    ("evil.pt", "not a taskgeom/torch state dict"),
    ("plain.pkl", "not a taskgeom/torch state dict"),
    ("text.pt", "not a taskgeom/torch state dict"),
    ("empty.pt", "not a taskgeom/torch state dict"),
    ("tensor.pt", "not a taskgeom/torch state dict"),
    ("strings.pt", "not a taskgeom/torch state dict"),
    ("absent.pt", "no such file"),
]


@pytest.mark.parametrize("name, needle", STATES, ids=[s[0] for s in STATES])
def test_init_from_a_file_that_is_not_a_state_dict(work, capsys, name, needle):
    """A pickle, text, an empty file, a bare tensor, or a missing file given to --init-from: one line naming it
    (exit 1), nothing created, and the pickle's code never runs (weights_only)."""
    d = work["dir"]
    out = d / f"ft-{name}"
    one_line_error(
        ["train", *TINY, "--method", "finetune", "--init-from", d / name, "--store", out], capsys, 1, name, needle
    )
    assert not out.exists() and not (d / "PWNED").exists()


def test_init_from_a_real_state_trains(work, capsys):
    out = work["dir"] / "ft-ok"
    rc, err = call(["train", *TINY, "--method", "finetune", "--init-from", work["state"], "--store", out], capsys)
    assert rc == 0, err


def test_store_errors_name_the_store(work, capsys):
    d = work["dir"]
    (d / "junkstore").mkdir()
    (d / "junkstore" / "manifest.sqlite").write_bytes(b"this is not sqlite" * 100)
    msg = one_line_error(["store", "verify", d / "junkstore"], capsys, 1, "junkstore")
    assert "internal error" not in msg
    one_line_error(["export", d / "nostore", "-o", d / "p.npy", d / "l.npy"], capsys, 1, "nostore")
    assert not (d / "p.npy").exists()


# --- one set of rules on every route ---

BAD_SETTINGS = [
    ("epochs", -3),
    ("epochs", 1.5),
    ("lr", float("nan")),
    ("warmup", 1.0),
    ("temperature", 0.0),
    ("label_smoothing", float("inf")),
    ("crop_scale", (0.5, 0.2)),
    ("checkpoints", 1),
]


@pytest.mark.parametrize("field, value", BAD_SETTINGS, ids=[f"{f}={v}" for f, v in BAD_SETTINGS])
def test_every_route_rejects_the_same_settings(work, capsys, field, value):
    """The Python API (TrainConfig.validate and train()), a sweep (file and dict) and the command line all
    reject a setting with the same rule, naming it, before anything is written."""
    from taskgeom.store import PredictionStore
    from taskgeom.train import TrainConfig, train
    from taskgeom.train.sweep import expand

    d = work["dir"]
    cfg = TrainConfig(**{"arch": "small-cnn", "epochs": 1, "device": "cpu", field: value})
    with pytest.raises(ValueError, match=field):
        cfg.validate()
    store = PredictionStore(d / f"api-{field}-{value}", create=True)
    store.add_eval_set("digits", np.arange(10) % 10)
    x = np.zeros((20, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=field):
        train(cfg, list(range(10)), (x, np.arange(20) % 10), (x[:10], np.arange(10)), store, "digits", "all")
    assert not store.select()
    store.close()
    with pytest.raises(ValueError, match=field):
        expand({"fixed": {field: value, "epochs": 1} if field != "epochs" else {field: value}})
    text = json.dumps({"fixed": {field: list(value) if isinstance(value, tuple) else value}})
    if np.isfinite(np.asarray(value, dtype=float)).all():  # JSON has no NaN or infinity
        f = sweep_file(d, f"route-{field}.json", text)
        one_line_error(["sweep", f, "--out", d / "never"], capsys, 1, field)
    flag = "--" + field.replace("_", "-")
    shown = [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    rc, err = call(["train", *TINY, flag, *shown, "--store", d / "never"], capsys)
    assert rc == 2 and len(err) == 1 and (flag in err[0] or field in err[0]), err
    assert not (d / "never").exists()


def test_presets_are_checked_by_the_same_rules(work, capsys, monkeypatch):
    from taskgeom.train import config as tconfig
    from taskgeom.train.sweep import expand

    for name in tconfig.PRESETS:  # the shipped presets pass
        tconfig.apply_preset(tconfig.TrainConfig(preset=name)).validate()
    monkeypatch.setitem(tconfig.PRESETS, "cifar10-wrn-16-4", {**tconfig.PRESETS["cifar10-wrn-16-4"], "lr": -1.0})
    with pytest.raises(ValueError, match="lr"):
        expand({"fixed": {"preset": "cifar10-wrn-16-4"}})
    d = work["dir"]
    rc, err = call(["train", *TINY, "--preset", "cifar10-wrn-16-4", "--store", d / "never-preset"], capsys)
    assert rc == 2 and len(err) == 1 and "lr" in err[0], err
    assert not (d / "never-preset").exists()


def test_a_good_sweep_file_still_runs(work, capsys):
    d = work["dir"]
    f = sweep_file(
        d,
        "good.yaml",
        "data: {data: digits}\ntasks: [0-4]\narchs: [small-cnn]\n"
        "fixed: {epochs: 1, checkpoints: 2, batch_size: 256, device: cpu, imprint_samples: 100}\n",
    )
    rc, err = call(["sweep", f, "--out", d / "sweep-good"], capsys)
    assert rc == 0, err
    from taskgeom.store import PredictionStore

    with PredictionStore(d / "sweep-good" / "store", readonly=True) as s:
        (t,) = s.select()
        assert len(t) == 2 and t.config["epochs"] == 1


# --- export: complete or nothing ---


def test_export_on_a_full_disk_leaves_nothing_that_looks_complete(work, capsys, monkeypatch):
    d = work["dir"] / "full"
    d.mkdir()
    preds, labels = d / "preds.npy", d / "labels.npy"
    preds.write_bytes(b"old predictions")  # an earlier export is kept, not truncated

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    one_line_error(["export", work["store"], "-o", preds, labels], capsys, 1, "preds.npy", "disk is full")
    assert preds.read_bytes() == b"old predictions" and not labels.exists()
    assert sorted(p.name for p in d.iterdir()) == ["preds.npy"]  # no temporary file left
    monkeypatch.undo()
    rc, err = call(["export", work["store"], "-o", preds, labels], capsys)
    assert rc == 0, err
    from taskgeom.store import PredictionStore

    with PredictionStore(work["store"], readonly=True) as s:
        (t,) = s.select()
        np.testing.assert_array_equal(np.load(preds), np.asarray(t.probs))
        np.testing.assert_array_equal(np.load(labels), np.asarray(s.eval_set(t.eval_set).labels))
    assert sorted(p.name for p in d.iterdir()) == ["labels.npy", "preds.npy"]


def test_export_onto_a_really_full_file_system(tmp_path):
    """A 1 MiB tmpfs and a 1.6 MB export (float16), in a subprocess: one line and exit status 1, where it was a bus
    error (exit 135) and a sparse file of full size (skipped where tmpfs cannot be mounted)."""
    from taskgeom.store import PredictionStore

    rng = np.random.default_rng(0)
    with PredictionStore(tmp_path / "s", create=True) as store:
        store.add_eval_set("toy", rng.integers(0, 10, 4000))
        for seed in range(4):
            t = store.create_trajectory("toy", task="a", method="supervised", seed=seed)
            for k in range(5):
                store.append(t, rng.dirichlet(np.ones(10), 4000).astype(np.float32), epoch=k)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        r = subprocess_cli(["export", tmp_path / "s", "-o", mnt / "preds.npy", mnt / "labels.npy"], cwd=tmp_path)
        assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and "disk is full" in err[0] and "Traceback" not in r.stderr, r.stderr
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --- exit statuses and --debug, as a user sees them (subprocesses) ---


def test_exit_statuses_and_debug_in_subprocesses(work, tmp_path):
    d = work["dir"]
    bad = sweep_file(d, "sub.yaml", "tasks: [all\n")
    cases = [
        (["distances", d / "m.npy", "--budget-mb", "inf"], 2, "--budget-mb"),
        (["sweep", bad], 1, "not valid YAML"),
        (["train", *TINY, "--method", "finetune", "--init-from", d / "evil.pt", "--store", d / "x"], 1, "evil.pt"),
    ]
    for argv, rc, needle in cases:
        r = subprocess_cli(argv, cwd=tmp_path)
        err = r.stderr.strip().splitlines()
        assert r.returncode == rc and len(err) == 1 and needle in err[0] and "Traceback" not in r.stderr, r.stderr
    assert not (d / "PWNED").exists() and not (d / "x").exists()
    for how in (["--debug", "sweep", bad], ["sweep", bad, "--debug"]):
        r = subprocess_cli(how, cwd=tmp_path)
        assert r.returncode == 1 and "Traceback" in r.stderr and "not valid YAML" in r.stderr, r.stderr
    r = subprocess_cli(["sweep", bad], cwd=tmp_path, env={"TASKGEOM_TRACEBACK": "1"})
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_a_bug_is_exit_status_70_and_debug_shows_it(work, capsys, monkeypatch):
    def bug(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_cmd_info", bug)
    one_line_error(["info"], capsys, 70, "internal error (ZeroDivisionError", "--debug")
    with pytest.raises(ZeroDivisionError):
        cli.main(["info", "--debug"])


def test_every_subcommand_documents_debug():
    import argparse

    def parsers(p):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sp in a.choices.values():
                    yield from parsers(sp)

    for p in parsers(cli.build_parser()):
        assert any("--debug" in a.option_strings for a in p._actions), p.prog


def test_state_loader_never_unpickles(tmp_path):
    from taskgeom.train.state import load_state

    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Boom(str(marker)), f)
    with pytest.raises(ValueError, match="evil.pt: not a taskgeom/torch state dict"):
        load_state(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(FileNotFoundError):
        load_state(Path(tmp_path / "absent.pt"))


def test_a_mistyped_option_is_reported_by_its_subcommand_with_a_suggestion(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--epcohs", "3"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("taskgeom train: error: unrecognized arguments: --epcohs 3; did you mean --epochs?")
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("taskgeom ")
