"""bench/results/*.json, the benchmark history that bench/README.md summarises: every file parses and has
the shape the README describes (pure JSON, no kernels run)."""

import json
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
FILES = sorted(RESULTS.glob("*.json"))


def test_there_are_results():
    assert FILES, f"no JSON files under {RESULTS}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_results_file_shape(path):
    data = json.loads(path.read_text())
    assert isinstance(data, dict), f"{path.name}: top level must be an object"
    assert isinstance(data.get("benchmark"), str) and data["benchmark"], f"{path.name}: no 'benchmark'"
    runs = data.get("runs")
    assert isinstance(runs, list) and runs, f"{path.name}: 'runs' must be a non-empty list"
    for i, run in enumerate(runs):
        where = f"{path.name} run {i}"
        assert isinstance(run, dict), f"{where}: not an object"
        assert isinstance(run.get("machine"), str) and run["machine"], f"{where}: no 'machine'"
        assert run.get("numbers"), f"{where}: no 'numbers'"
        assert isinstance(run["numbers"], (dict, list)), f"{where}: 'numbers' must be an object or a list"
        assert run.get("date") or run.get("commit"), f"{where}: needs a 'date' or a 'commit'"
