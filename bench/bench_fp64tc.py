"""The fp64 tensor-core kernel on the GPU: a tuning sweep over its compiled-in instances, the three
benchmark cases against the torch reference, and the table ``cuda_method="auto"`` reads.

    python bench/bench_fp64tc.py --sweep --json OUT/fp64tc.json --tuning OUT/_tuning.json

With ``--profile`` the tuned instance, the default and every 96 x 96, 128 x 128 and lean instance are also
run once under torch.profiler (per-kernel device times, L2 operand bytes per second of the main kernel).
With ``--sweep`` every instance is checked against the float64 reference and timed on every case; the
fastest per case becomes the tuning table (written to ``--tuning``; copy it to taskgeom/_tuning.json to
adopt it). Then each case is timed with that instance, the tiled kernel and the torch reference in the
same run. The arithmetic floor counts 2 flops per (pair, sample, class padded to 4) over one triangle
at the FP64 tensor peak (67 TFLOP/s on an H100 SXM; a DGEMM measured in the same run is reported too).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time

import torch
from bench_pairwise import make_models

import taskgeom as tg
from taskgeom import _cuda_ops, kernels
from taskgeom import reference as R

from _common import environment, table, timeit, write_json

CASES = [(2430, 10_000, 10), (1000, 10_000, 100), (512, 10_000, 1000)]
FP64_TC_PEAK = 67e12  # H100 SXM FP64 tensor-core peak, FLOP/s (the reference; H200: the same)


def reference_rows(models: torch.Tensor):
    """Five full rows (first, middle, last) of the float64 reference, computed once per case."""
    m = models.shape[0]
    rows = sorted({0, 1, 2, m // 2, m - 1})
    return rows, R.pairwise_distances(models[rows], models).cpu()


def max_rel_err(d: torch.Tensor, ref_rows) -> float:
    """Max relative error against the float64 reference rows (inf if anything is not finite)."""
    rows, ref = ref_rows
    got = d[rows].cpu()
    if not bool(torch.isfinite(got).all()):
        return float("inf")
    mask = ref > 0
    return float(((got - ref).abs()[mask] / ref[mask]).max())


def floor_seconds(m: int, n: int, c: int, peak: float = FP64_TC_PEAK) -> float:
    return m * (m + 1) / 2 * n * 4 * ((c + 3) // 4) * 2 / peak


def dgemm_rate(size: int = 8192) -> float:
    """FLOP/s of a float64 matrix product through torch (cuBLAS, FP64 tensor cores): the measured ceiling."""
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(size, size, dtype=torch.float64, device="cuda", generator=g)
    y = torch.randn(size, size, dtype=torch.float64, device="cuda", generator=g)
    t = timeit(lambda: x @ y, "cuda", repeat=5)
    return 2 * size**3 / t


def sweep(cases, repeat, deadline):
    code = tg.divergences.get("bhattacharyya").code
    rows, best = [], []
    for m, n, c in cases:
        models = make_models(m, n, c, torch.float16, device="cuda")
        ref_rows = reference_rows(models)
        fastest = None
        names = _cuda_ops.fp64tc_runnable(classes=c)
        tuned = _cuda_ops.fp64tc_config(m, c)
        # the tuned instance and the lean-epilogue ones ("..._s<NST>[p]e") first: a sweep its budget cuts
        # short still compares the newest against the best so far
        names = sorted(names, key=lambda x: (x != tuned, re.search(r"_s\d+p?e$", x) is None, names.index(x)))
        for name in names:
            row = {"m": m, "N": n, "C": c, "config": name}
            if time.time() > deadline:
                row["skipped"] = "time"
                rows.append(row)
                continue
            try:
                d = _cuda_ops.pairwise_fp64tc(models, None, code, config=name)
                row["max_rel_err"] = max_rel_err(d, ref_rows)
                # (the checked run above was the warm-up)
                run = lambda: _cuda_ops.pairwise_fp64tc(models, None, code, config=name)  # noqa: E731
                row["seconds"] = timeit(run, "cuda", repeat, warmup=0)
                row["fp64_peak_fraction"] = floor_seconds(m, n, c) / row["seconds"]
            except Exception as e:  # noqa: BLE001 - one failing instance must not end the sweep
                row["error"] = repr(e)[:300]
            rows.append(row)
            print(table([row], list(row)), flush=True)
            ok = row.get("max_rel_err", float("inf")) <= 1e-5
            if ok and (fastest is None or row["seconds"] < fastest["seconds"]):
                fastest = row
        if fastest is not None:
            best.append({"m": m, "N": n, "C": c, "config": fastest["config"], "seconds": fastest["seconds"]})
        models = None
        torch.cuda.empty_cache()
    return rows, best


def benchmark(cases, repeat):
    rows = []
    for m, n, c in cases:
        models = make_models(m, n, c, torch.float16, device="cuda")
        ref_rows = reference_rows(models)
        row = {"m": m, "N": n, "C": c}
        row["method"] = kernels.choose_cuda_method("bhattacharyya", c, torch.cuda.current_device())
        row["config"] = _cuda_ops.fp64tc_config(m, c) if row["method"] == "fp64tc" else None
        try:
            fn = lambda: tg.pairwise_distances(models, validate=False)  # noqa: E731
            row["max_rel_err"] = max_rel_err(fn(), ref_rows)
            row["seconds"] = timeit(fn, "cuda", repeat)
            ref = lambda: R.pairwise_gram(models, chunk=256)  # noqa: E731
            row["torch_ref_seconds"] = timeit(ref, "cuda", repeat)
            row["ratio"] = row["torch_ref_seconds"] / row["seconds"]
            row["torch_ref_max_rel_err"] = max_rel_err(ref(), ref_rows)
            tiled = lambda: tg.pairwise_distances(models, validate=False, cuda_method="tiled")  # noqa: E731
            row["tiled_seconds"] = timeit(tiled, "cuda", repeat)
            row["floor_seconds"] = floor_seconds(m, n, c)
            row["fp64_peak_fraction"] = row["floor_seconds"] / row["seconds"]
        except Exception as e:  # noqa: BLE001 - report and go on to the next case
            row["error"] = repr(e)[:300]
        rows.append(row)
        print(table([row], list(row)), flush=True)
        models = None
        torch.cuda.empty_cache()
    return rows


def config_geometry(name: str, c: int) -> tuple[int, int]:
    """(tile side T, k-steps per sample KC) of an instance, from its name (see pairwise_fp64tc.cu)."""
    t = int(name.split("_t")[1].split("_")[0]) if "_t" in name else int(name[1:].split("_")[0])
    ki = 4 if name.startswith("mma16816") else 2 if name.startswith("mma1688") else 1
    return t, (c + 4 * ki - 1) // (4 * ki) * ki


def operand_bytes(m: int, n: int, c: int, name: str) -> int:
    """Bytes of staged operands the blocks of one symmetric call read from L2 (each tile of T x T pairs reads
    T rows of A and T of B per k-step, 32 bytes a row): the traffic that bigger tiles cut."""
    t, kc = config_geometry(name, c)
    tiles_i = -(-m // t)
    return tiles_i * (tiles_i + 1) // 2 * 2 * t * 32 * kc * n


def profile(cases, configs_for):
    """Device time of each kernel of one call (torch.profiler, CUDA activity) for the instances
    ``configs_for(m, c)`` names: staging, the main kernel, the rest (row sums, zeroing, mirror); for the
    main kernel its share of the FP64 tensor peak and the L2 operand bytes per second it read. Tells
    whether the gap to the floor lies in the main kernel and whether its L2 read rate is the same for every
    instance (a bandwidth limit) or not."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    code = tg.divergences.get("bhattacharyya").code
    rows = []
    for m, n, c in cases:
        models = make_models(m, n, c, torch.float16, device="cuda")
        for name in configs_for(m, c):
            row = {"m": m, "N": n, "C": c, "config": name}
            try:
                _cuda_ops.pairwise_fp64tc(models, None, code, config=name)  # warm-up
                torch.cuda.synchronize()
                with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                    _cuda_ops.pairwise_fp64tc(models, None, code, config=name)
                    torch.cuda.synchronize()
                main = stage = other = 0.0
                for ev in prof.key_averages():
                    us = getattr(ev, "device_time_total", None)
                    us = getattr(ev, "cuda_time_total", 0.0) if us is None else us
                    if "fp64tc_kernel" in ev.key and "mirror" not in ev.key:
                        main += us
                    elif "stage_fp64" in ev.key:
                        stage += us
                    elif us:
                        other += us
                row.update(main_s=main / 1e6, stage_s=stage / 1e6, other_s=other / 1e6)
                if main > 0:
                    row["main_fp64_peak_fraction"] = floor_seconds(m, n, c) / (main / 1e6)
                    row["main_l2_operand_TBps"] = operand_bytes(m, n, c, name) / (main / 1e6) / 1e12
            except Exception as e:  # noqa: BLE001 - report and go on
                row["error"] = repr(e)[:300]
            rows.append(row)
            print(table([row], list(row)), flush=True)
        models = None
        torch.cuda.empty_cache()
    return rows


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", action="store_true", help="time every instance first and tune")
    ap.add_argument("--cases", nargs="*", help="MxNxC, e.g. 2430x10000x10")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=150.0, help="seconds for the sweep (later instances skipped)")
    ap.add_argument("--profile", action="store_true", help="per-kernel device times of the tuned and lean instances")
    ap.add_argument(
        "--once",
        metavar="CONFIG",
        nargs="*",
        help="only run these instances once on each case, '' for the tuned one (under ncu)",
    )
    ap.add_argument("--json")
    ap.add_argument("--tuning", help="write the sweep's table here (and use it for the benchmark)")
    return ap


def run_once(cases, once: list) -> None:
    """Each named instance once on each case, '' for the tuned one: for a profiler (bench/gpu_run.sh runs
    ncu on this), so no timing and no JSON."""
    code = tg.divergences.get("bhattacharyya").code
    for m, n, c in cases:
        models = make_models(m, n, c, torch.float16, device="cuda")
        names = [x or _cuda_ops.fp64tc_config(m, c) for x in once or [""]]  # "": the tuned one
        for name in dict.fromkeys(names):  # each once, in order
            if name in _cuda_ops.fp64tc_runnable(classes=c):
                _cuda_ops.pairwise_fp64tc(models, None, code, config=name)
        torch.cuda.synchronize()


def tune(args, cases, env: dict, payload: dict) -> None:
    """The sweep over every instance and the tuning table it gives (used for the benchmark with --tuning)."""
    rows, best = sweep(cases, args.repeat, time.time() + args.budget)
    payload["sweep"] = rows
    tuning = {
        "fp64tc": {
            "note": "fastest instance per case, bench/bench_fp64tc.py --sweep",
            "device": torch.cuda.get_device_name(0),
            "commit": env["commit"],
            "cases": best,
        }
    }
    payload["tuning"] = tuning
    if args.tuning:
        with open(args.tuning, "w") as f:
            json.dump(tuning, f, indent=2)
        os.environ["TASKGEOM_FP64TC_TUNING"] = os.path.abspath(args.tuning)
        _cuda_ops._tuning_cases.cache_clear()


def configs_for(m, c) -> list:
    """The instances profiled on a case: the tuned one, the default, and the lean and wide tiles."""
    names = _cuda_ops.fp64tc_runnable(classes=c)
    picked = [_cuda_ops.fp64tc_config(m, c), _cuda_ops.DEFAULT_FP64TC_CONFIG]
    picked += [x for x in names if x.endswith(("_c12", "_c16")) or "_t96_" in x or "_t128_" in x]
    return [x for i, x in enumerate(picked) if x in names and x not in picked[:i]]


def main():
    args = parser().parse_args()
    cases = [tuple(int(x) for x in c.split("x")) for c in args.cases] if args.cases else CASES
    if args.once is not None:
        run_once(cases, args.once)
        return
    env = environment("cuda")
    payload = {"benchmark": "pairwise_fp64tc", "env": env, "fp64_tc_peak": FP64_TC_PEAK}
    payload["dgemm_flops"] = dgemm_rate()
    print(f"DGEMM 8192^3 float64: {payload['dgemm_flops'] / 1e12:.1f} TFLOP/s", flush=True)
    if args.sweep:
        tune(args, cases, env, payload)
    payload["rows"] = benchmark(cases, args.repeat)
    write_json(args.json, payload)  # (again below with the profile: a timeout there keeps the rest)
    if args.profile:
        payload["profile"] = profile(cases, configs_for)
    cols = ["m", "N", "C", "method", "config", "seconds", "torch_ref_seconds", "ratio", "max_rel_err"]
    cols += ["tiled_seconds", "floor_seconds", "fp64_peak_fraction"]
    print()
    print(table(payload["rows"], cols))
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
