"""Geometry at the follow-up's scale (issue 13): landmark InPCA of 150,000 models, exact out-of-core InPCA
of 20,000, the local engine against Ray, and a run killed halfway then resumed.

Each part runs in its own process (so that its peak resident memory is its own) and writes JSON:

    python bench/bench_scale.py landmark --m 150000 --landmarks 2000 --work /tmp/tg-scale --json out.json
    python bench/bench_scale.py exact --m 20000 --check-m 4000 --work /tmp/tg-scale --json out.json
    python bench/bench_scale.py engines --m 3000 --work /tmp/tg-scale --json out.json

Synthetic models are low-dimensional trajectories (as trained networks' are): softmax of logits moving
along a few random directions, N = 1,000 samples x C = 10 classes, float16, written into a
PredictionStore (``landmark``) or an ``(m, N, C)`` ``.npy`` file (``exact``, ``engines``).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import taskgeom as tg
from taskgeom import engines, large

from _common import environment, report


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synth_block(i0: int, i1: int, n: int, c: int, traj_len: int, seed: int = 0) -> np.ndarray:
    """Models [i0, i1): trajectory t = i // traj_len moves from ignorance along its own mix of 4 shared
    directions; the same (i, seed) always gives the same model."""
    g = np.random.default_rng(seed)
    base = g.standard_normal((4, n, c)).astype(np.float32) * 3
    out = np.empty((i1 - i0, n, c), dtype=np.float16)
    for i in range(i0, i1):
        t, k = divmod(i, traj_len)
        gt = np.random.default_rng([seed, t])
        mix = gt.standard_normal(4).astype(np.float32)
        s = (k + 1) / traj_len
        logits = s * np.tensordot(mix, base, 1) + 0.05 * gt.standard_normal((n, c)).astype(np.float32)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        out[i - i0] = p / p.sum(-1, keepdims=True)
    return out


def make_npy(path: Path, m: int, n: int, c: int, traj_len: int) -> None:
    if path.exists() and np.load(path, mmap_mode="r").shape == (m, n, c):
        return
    mm = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float16, shape=(m, n, c))
    for i0 in range(0, m, 2000):
        mm[i0 : i0 + 2000] = synth_block(i0, min(m, i0 + 2000), n, c, traj_len)
    mm.flush()
    del mm
    path.with_suffix(".tmp.npy").rename(path)


def make_store(path: Path, m: int, n: int, c: int, traj_len: int):
    from taskgeom.store import PredictionStore

    store = PredictionStore(path, create=True)
    store.add_eval_set("synthetic", np.arange(n) % c, c=c)
    done = sum(len(t) for t in store.select())
    for t0 in range(done // traj_len, m // traj_len):
        traj = store.create_trajectory("synthetic", task=f"t{t0}", method="synthetic", seed=t0)
        if len(traj) == 0:
            store.extend(traj, synth_block(t0 * traj_len, (t0 + 1) * traj_len, n, c, traj_len), validate=False)
    return store


def part_landmark(args) -> dict:
    work = Path(args.work)
    t0 = time.perf_counter()
    make_store(work / "store150k", args.m, args.n, args.c, 100)
    t_make = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm = large.landmark_inpca(work / "store150k", n_landmarks=args.landmarks, k=3, check=500, progress_bar=False)
    t_lm = time.perf_counter() - t0
    # against the exact embedding of a random subset of 5,000 models (landmarks of the subset's own run)
    ms = tg.open_models(work / "store150k")
    rng = np.random.default_rng(1)
    sub = np.sort(rng.choice(ms.m, args.subset, replace=False))
    X = np.stack([ms.block(i, i + 1)[0] for i in sub])
    t0 = time.perf_counter()
    exact = tg.inpca(tg.pairwise_distances(X), k=3)
    t_exact = time.perf_counter() - t0
    sub_lm = large.landmark_inpca(X, n_landmarks=min(args.landmarks, args.subset), k=3, check=0)
    return {
        "m": args.m,
        "n": args.n,
        "c": args.c,
        "landmarks": args.landmarks,
        "store_seconds": t_make,
        "landmark_inpca_seconds": t_lm,
        "peak_rss_gb": peak_rss_gb(),
        "placement_error": lm.error,
        "subset": args.subset,
        "subset_exact_seconds": t_exact,
        "subset_explained_stress_3_exact": exact.explained_stress(3),
        "subset_explained_stress_3_landmark": sub_lm.explained_stress(3),
        "subset_procrustes_correlation_3d": large.procrustes_correlation(exact.coords, sub_lm.coords),
        "full_run_vs_subset_exact_correlation_3d": large.procrustes_correlation(exact.coords, lm.coords[sub]),
    }


def part_exact(args) -> dict:
    work = Path(args.work)
    make_npy(work / f"m{args.m}.npy", args.m, args.n, args.c, 100)
    t0 = time.perf_counter()
    tg.pairwise_distances(str(work / f"m{args.m}.npy"), out=work / f"D{args.m}", budget=512 << 20)
    t_d = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = large.inpca_out_of_core(work / f"D{args.m}", k=10, budget=512 << 20)
    t_e = time.perf_counter() - t0
    out = {
        "m": args.m,
        "n": args.n,
        "c": args.c,
        "distances_seconds": t_d,
        "inpca_seconds": t_e,
        "peak_rss_gb": peak_rss_gb(),
        "explained_stress_3": emb.explained_stress(3),
        "top10_eigenvalues": emb.eigenvalues.tolist(),
    }
    if args.check_m:  # top-10 eigenvalues against the dense solver at a size it can hold
        D = np.load(work / f"D{args.m}" / "D.npy", mmap_mode="r")[: args.check_m, : args.check_m]
        np.save(work / "Dcheck.npy", np.asarray(D))
        dense = tg.inpca(np.load(work / "Dcheck.npy"), k=10)
        ooc = large.inpca_out_of_core(work / "Dcheck.npy", k=10)
        out["check_m"] = args.check_m
        out["check_max_relative_eigenvalue_error"] = float(
            np.max(np.abs(ooc.eigenvalues - dense.eigenvalues) / np.abs(dense.eigenvalues))
        )
    return out


def part_engines(args) -> dict:
    import ray

    work = Path(args.work)
    src = work / f"m{args.m}.npy"
    make_npy(src, args.m, args.n, args.c, 100)
    for d in ("Dlocal", "Dray", "Dkill"):
        shutil.rmtree(work / d, ignore_errors=True)
    t0 = time.perf_counter()
    local = np.asarray(tg.pairwise_distances(str(src), out=work / "Dlocal", budget=64 << 20))
    t_local = time.perf_counter() - t0
    engines.init_ray(num_cpus=2)
    t0 = time.perf_counter()
    remote = np.asarray(tg.pairwise_distances(str(src), out=work / "Dray", budget=64 << 20, engine="ray"))
    t_ray = time.perf_counter() - t0
    ray.shutdown()
    # killed halfway (SIGKILL of the whole process at about half the local time), then resumed
    code = f"import taskgeom as tg; tg.pairwise_distances({str(src)!r}, out={str(work / 'Dkill')!r}, budget=64 << 20)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not (work / "Dkill" / "meta.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5 * t_local)
    proc.kill()
    proc.wait()
    dm = tg.DistanceMatrix(work / "Dkill")
    total = (dm.m + dm.tile - 1) // dm.tile
    total = total * (total + 1) // 2
    left = len(dm.tasks())
    t0 = time.perf_counter()
    resumed = np.asarray(tg.pairwise_distances(str(src), out=work / "Dkill", budget=64 << 20))
    t_resume = time.perf_counter() - t0
    return {
        "m": args.m,
        "n": args.n,
        "c": args.c,
        "tiles": total,
        "local_seconds": t_local,
        "ray_seconds": t_ray,
        "ray_equals_local": bool(np.array_equal(local, remote)),
        "killed_tiles_left": left,
        "resume_seconds": t_resume,
        "resumed_equals_local": bool(np.array_equal(local, resumed)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=["landmark", "exact", "engines"])
    ap.add_argument("--m", type=int, default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--c", type=int, default=10)
    ap.add_argument("--landmarks", type=int, default=2000)
    ap.add_argument("--subset", type=int, default=5000)
    ap.add_argument("--check-m", type=int, default=4000)
    ap.add_argument("--work", default="/tmp/tg-scale")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    args.m = args.m or {"landmark": 150_000, "exact": 20_000, "engines": 3000}[args.part]
    Path(args.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = {
        "part": args.part,
        **{"landmark": part_landmark, "exact": part_exact, "engines": part_engines}[args.part](args),
        "wall_seconds": time.perf_counter() - t0,
        "env": environment("cpu"),
    }
    report(res, args.json)


if __name__ == "__main__":
    main()
