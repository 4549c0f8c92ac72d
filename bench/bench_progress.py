"""Progress (eq. 4) per checkpoint: taskgeom's batched kernel against a SciPy bounded-scalar search
that builds the full geodesic point P_{0,*}^lambda (N x C) at every evaluation, as the paper's
released code does, in the same run on the same models.

    python bench/bench_progress.py --device cpu --json bench/results/raw/progress_cpu.json
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.optimize import minimize_scalar

import taskgeom as tg

from _common import environment, table, timeit, write_json


def scipy_progress(p: np.ndarray, labels: np.ndarray) -> float:
    n, c = p.shape
    sp = np.sqrt(p.astype(np.float64))
    u = np.full((n, c), 1 / math.sqrt(c))
    v = np.zeros((n, c))
    v[np.arange(n), labels] = 1.0
    theta = math.acos(1 / math.sqrt(c))

    def objective(lam):
        g = (math.sin((1 - lam) * theta) * u + math.sin(lam * theta) * v) / math.sin(theta)  # sqrt of the point
        return -np.mean(np.log(np.maximum((sp * g).sum(-1), 1e-300)))

    return minimize_scalar(objective, bounds=(0, 1), method="bounded", options={"xatol": 1e-9}).x


def make_checkpoints(m, n, c, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    push = torch.linspace(0.1, 6.0, m, dtype=torch.float64)[:, None, None]
    logits = torch.randn(m, n, c, generator=g, dtype=torch.float64) + push * torch.nn.functional.one_hot(y, c)
    return torch.softmax(logits, -1).float().to(device), y.to(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--m", type=int, default=200, help="checkpoints")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--c", type=int, default=10)
    ap.add_argument("--scipy-checkpoints", type=int, default=10, help="checkpoints timed for the SciPy loop")
    ap.add_argument("--json")
    args = ap.parse_args()
    models, y = make_checkpoints(args.m, args.n, args.c, device=args.device)
    t_kernel = timeit(lambda: tg.progress(models, y, validate=False), args.device, repeat=3)
    ours = torch.as_tensor(tg.progress(models, y)).cpu().numpy()
    host = models.cpu().numpy()
    yn = y.cpu().numpy()
    k = min(args.scipy_checkpoints, args.m)
    idx = np.linspace(0, args.m - 1, k).astype(int)
    t0 = time.perf_counter()
    theirs = np.array([scipy_progress(host[i], yn) for i in idx])
    t_scipy = (time.perf_counter() - t0) / k
    row = {
        "m": args.m,
        "N": args.n,
        "C": args.c,
        "device": args.device,
        "taskgeom_ms_per_checkpoint": 1e3 * t_kernel / args.m,
        "scipy_ms_per_checkpoint": 1e3 * t_scipy,
        "speedup": t_scipy / (t_kernel / args.m),
        "max_abs_lambda_diff": float(np.abs(ours[idx] - theirs).max()),
    }
    print(table([row], list(row)))
    write_json(
        args.json, {"benchmark": "progress", "device": args.device, "env": environment(args.device), "rows": [row]}
    )


if __name__ == "__main__":
    main()
