"""Sweeps on the two engines (issue 14): a digits grid of 20 runs (5 tasks x 4 seeds), in this process
against Ray on the same CPUs, in one run; the merged stores must be equal.

    python bench/bench_sweep.py --out /tmp/tg-sweep --json out.json
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

from taskgeom.store import PredictionStore
from taskgeom.train.sweep import run_sweep

from _common import environment, report

SPEC = {
    "data": {"data": "digits"},
    "tasks": ["all", "0-4", "5-9", "even", "odd"],
    "methods": ["supervised"],
    "seeds": [0, 1, 2, 3],
    "archs": ["small-cnn"],
    "fixed": {"epochs": 5, "checkpoints": 10, "lr": 0.1, "batch_size": 64, "device": "cpu"},
    "resources": {"num_cpus": 1},
}


def snapshot(path):
    store = PredictionStore(path)
    out = {t.name: np.asarray(t.probs).copy() for t in store.select()}
    store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/tg-sweep")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    local = run_sweep(SPEC, out / "local")
    t_local = time.perf_counter() - t0
    import ray

    from taskgeom.engines import init_ray

    init_ray(num_cpus=args.cpus)
    t0 = time.perf_counter()
    remote = run_sweep(SPEC, out / "ray", engine="ray")
    t_ray = time.perf_counter() - t0
    ray.shutdown()
    a, b = snapshot(out / "local" / "store"), snapshot(out / "ray" / "store")
    equal = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    res = {
        "runs": local["runs"],
        "checkpoints": local["checkpoints_added"],
        "local_seconds": t_local,
        "ray_seconds": t_ray,
        "ray_cpus": args.cpus,
        "speedup": t_local / t_ray,
        "merged_stores_equal": equal,
        "ray_checkpoints": remote["checkpoints_added"],
        "env": environment("cpu"),
    }
    report(res, args.json)


if __name__ == "__main__":
    main()
