"""The HTML report: self-contained, and it renders in a real headless browser (Debian's chromium,
installed by .ci/run; skipped where absent)."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from taskgeom import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert cli.main(["picture", "--out", str(out), "--tasks", "all", "0-4", "--seeds", "2", "--epochs", "2",
                     "--checkpoints", "5", "--grid", "10"]) == 0
    return out / "report.html"


def test_report_is_self_contained(report):
    text = report.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?:""", text)  # nothing fetched from the network
    payload = json.loads(re.search(r"<script type='application/json' id='tg-data'>(.*?)</script>", text, re.S).group(1))
    means = [ln for ln in payload["lines"] if ln["mean"]]
    assert len(means) == 2 and len(payload["lines"]) == 6
    assert {m["name"] for m in payload["marks"]} == {"P0 (ignorance)", "P* (truth)"}
    point = payload["lines"][0]["points"][3]
    assert set(point) == {"xyz", "progress", "epoch", "accuracy"} and len(point["xyz"]) == 3
    assert "data:image/png;base64," in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    url = report.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'u1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    rendered = re.search(r'data-rendered="(\d+)"', dom.stdout)
    assert rendered and int(rendered.group(1)) > 50, dom.stderr[-2000:]  # the script ran to the end
    shot = tmp_path / "shot.png"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'u2'}", "--enable-logging=stderr", "--v=0",
                          "--window-size=1000,900", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=120)
    console = [ln for ln in run.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    canvas = img[200:800, 30:900]  # where the 3-D view is drawn
    assert (canvas < 200).mean() > 0.002  # lines and markers were drawn, not a blank page


def test_result2_experiment_runs_on_a_picture_store(report, tmp_path):
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "result2_progress.py"
    if not script.exists():
        pytest.skip("experiments/ not beside the tests")
    run = subprocess.run([sys.executable, str(script), "--store", str(report.parent / "store"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / "result2.json").read_text())
    assert set(res) == {"all", "0-4"}
    assert res["0-4"]["unseen_classes_mean"] is not None and res["all"]["unseen_classes_mean"] is None
    assert (tmp_path / "per_class_progress.png").stat().st_size > 10_000


@pytest.mark.parametrize("preset", ["result4", "result5", "result7"])
def test_compare_methods_presets_run(tmp_path, preset):
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "compare_methods.py"
    if not script.exists():
        pytest.skip("experiments/ not beside the tests")
    run = subprocess.run([sys.executable, str(script), "--preset", preset, "--out", str(tmp_path), "--seeds", "2",
                          "--epochs", "1", "--grid", "8", "--device", "cpu"], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / f"{preset}.json").read_text())
    ref = res["reference"]
    assert res["families"][ref]["riemann_length_ratio_to_reference"] == pytest.approx(1.0)
    assert len(res["normalized_distance_to_reference"]) == len(res["families"]) - 1
    assert all(len(v) == 8 for v in res["normalized_distance_to_reference"].values())


def test_result6_experiment_runs(tmp_path):
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "result6_finetune.py"
    if not script.exists():
        pytest.skip("experiments/ not beside the tests")
    run = subprocess.run([sys.executable, str(script), "--out", str(tmp_path), "--seeds", "1", "--epochs", "2",
                          "--finetune-epochs", "1", "--grid", "8", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / "result6.json").read_text())
    assert len(res["finetuned"]) == 6
    states = list((tmp_path / "store" / "state").glob("*_ckpt*.pt"))
    assert len(states) >= 5  # every recorded checkpoint of the supervised run was kept
    final = next(v for k, v in res["finetuned"].items() if "final" in k)
    # fine-tuning starts from the supervised model's backbone: same imprinted model, same progress
    assert abs(final["start_progress"] - res["supervised"]["final_progress"]) < 1e-3
