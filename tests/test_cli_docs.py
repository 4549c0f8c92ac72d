"""The command line documents itself (issue 12, item 2): every option of every subcommand and of every
experiment script has a help text with its default; ``inpca -o`` writes what the name says; ``export``
makes the files the README's API example starts from."""

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taskgeom import cli

ROOT = Path(__file__).resolve().parents[1]


def _options(parser, name="taskgeom"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _options(p, f"{name} {sub}")
        elif not isinstance(action, argparse._HelpAction):
            yield name, action


def test_every_cli_option_has_help_and_default():
    missing = []
    for name, action in _options(cli.build_parser()):
        text = action.help or ""
        if not text:
            missing.append(f"{name} {action.dest}: no help")
        elif action.option_strings and not isinstance(action, argparse._StoreTrueAction) and "default" not in text:
            missing.append(f"{name} {'/'.join(action.option_strings)}: no default in {text!r}")
    assert not missing, missing


def _option_blocks(help_text: str) -> dict:
    blocks, current = {}, None
    for line in help_text.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith("     "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


@pytest.mark.parametrize(
    "script", ["cifar_gpu_smoke", "compare_methods", "result2_progress", "result3_hierarchy", "result6_finetune"]
)
def test_every_experiment_option_has_help_and_default(script):
    path = ROOT / "experiments" / f"{script}.py"
    if not path.exists():
        pytest.skip("experiments/ not beside the tests")
    run = subprocess.run(
        [sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120, env=None, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-2000:]
    blocks = _option_blocks(run.stdout)
    assert len(blocks) >= 2
    bad = [b for k, b in blocks.items() if k not in ("-h", "--help") and not re.search(r"default|required", b)]
    assert not bad, bad


def test_method_choices_are_listed():
    text = subprocess.run(
        [sys.executable, "-m", "taskgeom.cli", "train", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    assert re.search(r"--method \{supervised,finetune,protonet,simclr,barlow,fixmatch\}", text)


def test_inpca_writes_what_the_name_says(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.dirichlet(np.ones(4), size=(6, 30)).astype(np.float32))
    assert cli.main(["distances", str(tmp_path / "p.npy"), "-o", str(tmp_path / "D.npy")]) == 0
    assert cli.main(["inpca", str(tmp_path / "D.npy"), "-k", "3", "-o", str(tmp_path / "E.npz")]) == 0
    assert not (tmp_path / "E.npz.npy").exists()
    with np.load(tmp_path / "E.npz") as e:
        assert e["coords"].shape == (6, 3) and e["eigenvalues"].shape == (3,) and e["signature"].shape == (3,)
        assert set(e["signature"].tolist()) <= {-1, 1} and e["explained_stress"].shape == (3,)
    assert cli.main(["inpca", str(tmp_path / "D.npy"), "-o", str(tmp_path / "X.npy")]) == 0
    assert np.load(tmp_path / "X.npy").shape == (6, 3)
    capsys.readouterr()
    assert cli.main(["inpca", str(tmp_path / "D.npy"), "-o", str(tmp_path / "E.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".npz" in err


def test_export_makes_the_api_example_inputs(tmp_path, capsys):
    from taskgeom.store import PredictionStore

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 20)
    with PredictionStore(tmp_path / "s", create=True) as store:
        store.add_eval_set("toy", labels)
        for task, seed in (("a", 0), ("a", 1), ("b", 0)):
            t = store.create_trajectory("toy", task=task, method="supervised", seed=seed)
            for k in range(3):
                store.append(t, rng.dirichlet(np.ones(3), 20).astype(np.float32), epoch=k)
    preds, lab = tmp_path / "preds.npy", tmp_path / "labels.npy"
    assert cli.main(["export", str(tmp_path / "s"), "-o", str(preds), str(lab)]) == 0
    assert np.load(preds).shape == (9, 20, 3) and np.array_equal(np.load(lab), labels)
    assert (
        cli.main(["export", str(tmp_path / "s"), "--task", "a", "--checkpoint", "last", "-o", str(preds), str(lab)])
        == 0
    )
    assert np.load(preds).shape == (2, 20, 3)
    capsys.readouterr()
    assert cli.main(["export", str(tmp_path / "s"), "--task", "zzz", "-o", str(preds), str(lab)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    # the exported files are what `taskgeom progress` and the Python API take
    assert cli.main(["progress", str(preds), str(lab)]) == 0


def _modules_after(code: str) -> set:
    run = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n' + ' '.join(sys.modules))"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return set(run.stdout.splitlines()[-1].split())


def test_help_and_import_do_not_import_torch():
    """``import taskgeom`` and every ``--help`` (train's and picture's included) answer without torch (it
    took 2-5 s to import): the public names are imported on first use, a subcommand's options only when it
    runs."""
    assert "torch" not in _modules_after("import taskgeom")
    helps = [["--help"], ["distances", "--help"], ["analyse", "--help"], ["store", "verify", "--help"]]
    for argv in helps + [["train", "--help"], ["picture", "--help"], ["sweep", "--help"]]:
        code = f"from taskgeom.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"
        assert "torch" not in _modules_after(code), argv
    help_text = subprocess.run([sys.executable, "-m", "taskgeom.cli", "--help"], capture_output=True, text=True,
                               cwd=ROOT, timeout=120).stdout  # fmt: skip
    assert all(name in help_text for name in cli.COMMANDS)


def test_public_names_resolve_whatever_was_imported_first():
    """Every public name is what it says, also after its module was imported by its own name (a function never
    shadowed by a module of the same name)."""
    code = "import taskgeom.imprinting, taskgeom.comparison, taskgeom as tg\n" + (
        "bad = [n for n in tg.__all__ if getattr(tg, n).__class__.__name__ == 'module']\nassert not bad, bad\n"
        "assert callable(tg.imprint) and callable(tg.compare) and sorted(tg.__all__) == sorted(tg._EXPORTS)"
    )
    _modules_after(code)


def test_submodules_reachable_as_attributes():
    """``tg.trajectories.reindex`` and the like work without importing the submodule first."""
    _modules_after("import taskgeom as tg\nassert callable(tg.trajectories.progress_grid) and tg.geometry.progress")
