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
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",  # software WebGL for the 3-D view (headless, no GPU)
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no network: the report must render offline
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert (
        cli.main(
            [
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
                "2",
                "--checkpoints",
                "5",
                "--grid",
                "10",
            ]
        )
        == 0
    )
    return out / "report.html"


def _json_strings(page: str) -> list[str]:
    """Every string in the arguments of the page's ``Plotly.newPlot(...)`` calls, decoded as JSON: plotly
    writes non-ASCII characters raw (with orjson) or as ``\\uXXXX`` escapes (the json module, when orjson is
    absent), and both decode to the same text."""
    dec = json.JSONDecoder()
    out = []

    def walk(v):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for m in re.finditer(r"Plotly\.newPlot\(", page):
        i = m.end()
        for _ in range(4):  # div id, data, layout, config
            while page[i] in " \t\r\n,":
                i += 1
            value, i = dec.raw_decode(page, i)
            walk(value)
    return out


@pytest.mark.parametrize("engine", ["json", "orjson"])
def test_axis_titles_survive_either_json_engine(engine):
    """The figures' non-ASCII titles decode to the same text whichever JSON engine plotly uses."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from taskgeom.report import _axis_name, _figure

    if engine == "orjson":
        pytest.importorskip("orjson")
    title = _axis_name(0, 1.5)
    assert title.startswith("InPCA 1 (λ = ")
    old = pio.json.config.default_engine
    pio.json.config.default_engine = engine
    try:
        html = _figure(go.Figure(layout={"xaxis": {"title": {"text": title}}}), "f", "caption")
    finally:
        pio.json.config.default_engine = old
    assert title in _json_strings(html)


def test_report_is_self_contained(report):
    text = report.read_text(encoding="utf-8")
    # plotly.js is embedded once (its own source holds map-tile and attribution URLs, never loaded here)
    page = re.sub(r"<script type='text/javascript'>.*?</script>", "", text, count=1, flags=re.S)
    assert len(page) < len(text) / 3
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?:""", page)  # nothing fetched from the network
    assert "<script src" not in page
    assert text.count("Plotly.newPlot") == 5  # five interactive figures ...
    assert len(re.findall(r"plotly\.js v\d", text)) == 1  # ... and plotly.js embedded once
    payload = json.loads(re.search(r"<script type='application/json' id='tg-data'>(.*?)</script>", text, re.S).group(1))
    means = [ln for ln in payload["lines"] if ln["mean"]]
    assert len(means) == 2 and len(payload["lines"]) == 6
    assert {m["name"] for m in payload["marks"]} == {"P0 (ignorance)", "P* (truth)"}
    point = payload["lines"][0]["points"][3]
    assert set(point) == {"xyz", "progress", "epoch", "accuracy", "reached", "true_progress"} and len(point["xyz"]) == 3
    assert "data:image/png;base64," in text
    # the header: the run's settings, the code's commit, and accuracies
    settings = payload["settings"]
    assert {"data", "architecture", "epochs", "seeds", "imprinting head", "code"} <= set(settings)
    assert settings["epochs"] == 2 and settings["architecture"] == "small-cnn"
    assert "cosine" in settings["imprinting head"] and "commit" in settings["code"]
    assert "final accuracy on all classes" in text
    assert text.count("<figcaption>") == 7  # a caption under every figure (5 interactive, 2 PNG)
    # axes named by component and eigenvalue sign (decoded: plotly may write λ raw or as \\u03bb)
    titles = [t for t in _json_strings(page) if t.startswith("InPCA ")]
    assert any(t.startswith("InPCA 1 (λ = ") for t in titles) and all(len(t) <= 28 for t in titles)
    assert any(t.endswith(", +)") for t in titles) and "+: space-like, −: time-like" in text  # signs explained


def test_hover_never_claims_progress_a_run_did_not_reach(report):
    text = report.read_text(encoding="utf-8")
    payload = json.loads(re.search(r"id='tg-data'>(.*?)</script>", text, re.S).group(1))
    seeds = [ln for ln in payload["lines"] if not ln["mean"]]
    # the grid spans only the progress the runs reach, and each run is drawn only where it reached (no
    # clamped copies of a first or last checkpoint): every point's progress lies within its run's range
    grid = sorted({p["progress"] for ln in seeds for p in ln["points"]})
    assert max(grid) < 0.9 and "progress 1.000" not in text
    assert all(p["reached"] and p["true_progress"] == p["progress"] for ln in seeds for p in ln["points"])
    lengths = {len(ln["points"]) for ln in seeds}
    assert len(lengths) > 1  # two epochs: the seeds do not all reach the same progress, so lines differ
    for ln in payload["lines"]:
        if ln["mean"]:  # a mean only where every seed of its task reached
            mine = [s for s in seeds if s["task"] == ln["task"]]
            common = set.intersection(*({p["progress"] for p in s["points"]} for s in mine))
            assert {p["progress"] for p in ln["points"]} == common


def _chromium(url, tmp_path, name, extra=()):
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / name}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


#: messages Chromium itself logs for software-rendered WebGL and canvas read-backs (performance notes
#: from the browser, not from the page's scripts); anything else on the console fails the test
BROWSER_NOTES = ("GL Driver Message (OpenGL, Performance", "Canvas2D: Multiple readback operations")


def _console(stderr: str) -> list:
    lines = [ln for ln in stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    return [ln for ln in lines if not any(note in ln for note in BROWSER_NOTES)]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report, tmp_path):
    url = report.resolve().as_uri()
    dom = _chromium(url, tmp_path, "u1", ["--virtual-time-budget=10000", "--dump-dom"])
    rendered = re.search(r'data-rendered="(\d+)"', dom.stdout)
    # every plotly figure was drawn: its div became a .js-plotly-plot holding .main-svg layers
    assert rendered and int(rendered.group(1)) >= 10, dom.stderr[-2000:]
    for div in ("tg-inpca", "tg-stress", "tg-progress", "tg-distance", "tg-tasks"):
        tag = re.search(rf'<div id="{div}"[^>]*>', dom.stdout)
        assert tag and "js-plotly-plot" in tag.group(0), div
    assert dom.stdout.count('class="main-svg"') >= 10
    assert "gl-container" in dom.stdout  # the 3-D scene's WebGL layer
    shot = tmp_path / "shot.png"
    run = _chromium(
        url,
        tmp_path,
        "u2",
        ["--enable-logging=stderr", "--v=0", "--window-size=1100,1600", f"--screenshot={shot}"],
    )
    assert not _console(run.stderr), _console(run.stderr)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert (img < 200).mean() > 0.01  # tables, axes and lines were drawn, not a blank page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_console_check_catches_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    run = _chromium(page.as_uri(), tmp_path, "u", ["--enable-logging=stderr", "--v=0", "--dump-dom"])
    assert _console(run.stderr)  # an uncaught error on the page is reported


def test_result2_experiment_runs_on_a_picture_store(report, tmp_path):
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "result2_progress.py"
    if not script.exists():
        pytest.skip("experiments/ not beside the tests")
    run = subprocess.run(
        [sys.executable, str(script), "--store", str(report.parent / "store"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    written = json.loads((tmp_path / "result2.json").read_text())
    assert set(written) == {"tasks", "settings", "code"} and written["settings"]["store"] == str(
        report.parent / "store"
    )
    assert written["code"]["taskgeom"] and "out" not in written["settings"]
    res = written["tasks"]
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
    run = subprocess.run(
        [
            sys.executable,
            str(script),
            "--preset",
            preset,
            "--out",
            str(tmp_path),
            "--seeds",
            "0",
            "1",
            "--epochs",
            "1",
            "--grid",
            "8",
            "--max-checkpoints",
            "12",
            "--n-boot",
            "20",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / f"{preset}.json").read_text())
    assert res["settings"]["preset"] == preset and res["settings"]["seeds"] == [0, 1] and res["code"]["taskgeom"]
    ref = res["reference"]
    assert res["families"][ref]["riemann_length_ratio_to_reference"]["full"] == pytest.approx(1.0)
    assert len(res["normalized_distance_to_reference"]) == len(res["families"]) - 1
    every = res["checkpoint_every"]
    for f in res["families"].values():
        assert f["seeds"] == [0, 1] and f["riemann_length"]["verdict"]
        # the same density of checkpoints per step: a run's count follows its length, not a fixed number
        assert f["riemann_length"]["full"]["mean"] >= f["riemann_length"]["third"]["mean"] > 0
        assert all(n >= 2 for n in f["checkpoints"])
        assert f["progress_gain"]["mean"] == pytest.approx(
            f["final_progress"]["mean"] - f["progress_at_init"]["mean"], abs=1e-9
        )
    if preset == "result4":  # protonet trains 7.5x the steps: about 7.5x the checkpoints past the dense start
        fams = res["families"]
        assert max(fams["protonet-2way"]["checkpoints"]) > 2 * max(fams["supervised"]["checkpoints"]) and every >= 1
    # Remark 5 curves over the progress both families reach, with intervals over samples and seeds
    for v in res["normalized_distance_to_reference"].values():
        if "error" in v:
            continue
        assert len(v["grid"]) == len(v["normalized_distance"]) <= 8 and v["seeds"] == [2, 2]
        assert "seeds" in v["over"] and 0 <= v["p_value"] <= 1
    assert max(res["grid"]) < 1.0  # the embedding's grid spans only progress some run reaches


def test_result6_experiment_runs(tmp_path):
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "result6_finetune.py"
    if not script.exists():
        pytest.skip("experiments/ not beside the tests")
    run = subprocess.run(
        [
            sys.executable,
            str(script),
            "--out",
            str(tmp_path),
            "--seeds",
            "0",
            "1",
            "--epochs",
            "2",
            "--n-boot",
            "20",
            "--finetune-epochs",
            "1",
            "--grid",
            "8",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / "result6.json").read_text())
    assert len(res["finetuned"]) == 6
    states = list((tmp_path / "shards" / "all-s0" / "state").glob("*_ckpt*.pt"))
    assert len(states) >= 5  # every recorded checkpoint of the supervised run was kept (in its shard)
    from taskgeom.store import PredictionStore

    with PredictionStore(tmp_path / "store", readonly=True) as store:  # every run merged into the store
        ft = store.select(method="finetune")
        assert len(ft) == 12 and len(store.select(method="supervised")) == 2
        assert {Path(t.config["init_from"]) for t in ft} <= set(states) | set(
            (tmp_path / "shards" / "all-s1" / "state").glob("*_ckpt*.pt")
        )
    final = next(v for k, v in res["finetuned"].items() if "final" in k)
    # fine-tuning starts from the supervised model's backbone: same imprinted model, same progress
    at_start = np.mean([st["final"][1] for st in res["starts"].values()])
    assert abs(final["start_progress"] - at_start) < 1e-3
    # starts spaced by progress: each seed's early, middle and final checkpoints in order, final the last
    for st in res["starts"].values():
        targets = [st[w][2] for w in ("early", "middle", "final")]
        assert targets[0] < targets[1] < targets[2] == pytest.approx(st["final"][1])  # final: the highest
        assert all(k >= 1 for k, _, _ in st.values())  # never the initialisation
    # Remark 5 as a curve over the progress both families reach, with its interval over samples and seeds
    for r in res["finetuned"].values():
        assert len(r["grid"]) == len(r["normalized_distance"])
        if r["grid"]:
            assert len(r["interval"]["low"]) == len(r["grid"]) and r["seeds"] == [2, 2] and "seeds" in r["over"]
        else:
            assert "error" in r
    assert "warning" not in res and (tmp_path / "result6_normalized_distance.png").exists()


def test_picture_reports_distances_between_tasks(report):
    res = json.loads((report.parent / "results.json").read_text())
    td = res["task_distances"]
    assert td["tasks"] == ["all", "0-4"]
    nd = np.array(td["normalized"])
    assert nd.shape == (2, 2) and np.all(np.diag(nd) == 0)
    # compared only over the progress every seed of both reaches: NaN (not an extrapolation) without any
    if td["points_compared"]["all|0-4"]:
        assert nd[0, 1] == nd[1, 0] > 0
    else:
        assert np.isnan(nd[0, 1]) and np.isnan(nd[1, 0])
    assert np.array(td["normalized_final"])[0, 1] > 0 and "normalized_interval" in td
    assert "Distances between tasks" in report.read_text()


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """A CIFAR-10-shaped ImageFolder (train/ and test/, the ten class names, 32 x 32 PNGs): each class a
    colour, so that even one epoch separates them."""
    from taskgeom.data import CIFAR10_CLASSES

    root = tmp_path_factory.mktemp("tiny_cifar")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for k, c in enumerate(CIFAR10_CLASSES):
            (root / split / c).mkdir(parents=True)
            base = np.array([25 * k, 255 - 25 * k, (80 * k) % 256])
            for i in range(count):
                img = np.clip(base + rng.integers(-20, 21, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i}.png")
    return root


def test_picture_on_cifar10_layout_and_result3_analysis(tiny_cifar, tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.setenv("TASKGEOM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "pic"
    assert (
        cli.main(
            [
                "picture",
                "--data",
                "cifar10",
                "--data-path",
                str(tiny_cifar),
                "--out",
                str(out),
                "--tasks",
                "all",
                "vehicles",
                "animals",
                "pets",
                "--seeds",
                "0",
                "1",
                "--epochs",
                "1",
                "--checkpoints",
                "3",
                "--grid",
                "6",
                "--batch-size",
                "16",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert res["n"] == 40 and res["c"] == 10 and res["eval_set"].startswith("cifar10-test-40")
    assert res["task_distances"]["tasks"] == ["all", "vehicles", "animals", "pets"]
    script = Path(__file__).resolve().parents[1] / "experiments" / "result3_hierarchy.py"
    if not script.exists():
        pytest.skip("experiments/ not beside the tests")
    run = subprocess.run(
        [sys.executable, str(script), "--results", str(out / "results.json"), "--out", str(tmp_path / "r3")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    r3 = json.loads((tmp_path / "r3" / "result3.json").read_text())
    tree = np.array(r3["tree_distance"])
    # all -> vehicles 1, all -> animals 1, all -> pets 3, vehicles -> animals 2, vehicles -> pets 4, animals -> pets 2
    assert tree[np.triu_indices(4, 1)].tolist() == [1, 1, 3, 2, 4, 2]
    sp = r3["spearman_normalized_vs_tree_distance"]  # over the pairs that share some progress
    assert -1 <= sp["rho"] <= 1 if sp["pairs"] >= 3 else sp["rho"] is None  # undefined: null (strict JSON)
    assert -1 <= r3["spearman_normalized_final_vs_tree_distance"]["rho"] <= 1
    assert (tmp_path / "r3" / "result3.png").stat().st_size > 0


def test_report_without_bootstrap_replicates(report, tmp_path):
    """``--n-boot 0`` (no intervals) re-analyses the same store and still writes the whole report."""
    store = report.parent / "store"
    args = ["picture", "--out", str(tmp_path), "--store", str(store), "--tasks", "all", "0-4", "--seeds", "0", "1"]
    args += ["--epochs", "2", "--checkpoints", "5", "--grid", "10", "--n-boot", "0"]
    assert cli.main(args) == 0
    html = (tmp_path / "report.html").read_text()
    assert "No bootstrap intervals" in html
    res = json.loads((tmp_path / "results.json").read_text())
    assert not res.get("uncertainty") and not any(res.get("normalized_distance_to_all_interval", {}).values())
