"""Pairwise Bhattacharyya matrices: taskgeom kernels against the pure-torch reference (batched Gram
matrices plus log over sample chunks) and, on the CPU, a NumPy implementation in the style of the
paper authors' released code, in the same run on the same data.

    python bench/bench_pairwise.py --device cpu  --json bench/results/raw/pairwise_cpu.json
    python bench/bench_pairwise.py --device cuda --json bench/results/raw/pairwise_cuda.json
    python bench/bench_pairwise.py --threads 1 --cases 200x10000x10 100x10000x100 50x10000x1000 --skip-baselines

On the CPU it also prints the Gram's arithmetic rate per core: 2 flops (one FMA) per (pair of the upper
triangle, sample, class) over the time and the threads, and its fraction of the detected core's FP64 peak
(bench/_common.py: fp64_peak_per_core states how the peak is derived), with the CPU model.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import taskgeom as tg
from taskgeom import reference as R

from _common import cpu_model, environment, fp64_peak_per_core, table, timeit, write_json

CPU_CASES = [(200, 10_000, 10)]
CUDA_CASES = [(2430, 10_000, 10), (1000, 10_000, 100), (512, 10_000, 1000)]
FP32_PEAK = 51e12  # H100 SXM float32 (non-tensor) peak measured without TF32, FLOP/s


def make_models(m, n, c, dtype, seed=0, device="cpu"):
    """Checkpoint-like models: softmax of logits with a sample-dependent scale, stored in ``dtype``."""
    g = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(m, n, c, generator=g, device=device) * torch.linspace(0.5, 4, m, device=device)[:, None, None]
    return torch.softmax(logits, -1).to(dtype)


def numpy_authors_style(p: np.ndarray) -> np.ndarray:
    """Row by row: D[i] = -mean_n log sum_c sqrt(p_i p_j), as in the authors' NumPy code."""
    s = np.sqrt(p.astype(np.float32))
    m = s.shape[0]
    out = np.zeros((m, m))
    for i in range(m):
        out[i] = -np.log((s[i][None] * s).sum(-1)).mean(-1)
    return out


def check(kernel_d: torch.Tensor, models: torch.Tensor, rows: int = 3) -> float:
    """Max relative error of the kernel against the float64 reference on a few rows (all columns)."""
    ref = R.pairwise_distances(models[:rows], models).cpu()
    got = kernel_d[:rows].cpu()
    mask = ref > 0
    return float(((got - ref).abs()[mask] / ref[mask]).max())


def measure(args, models, m: int, n: int, c: int, peak: dict) -> dict:
    """One case: taskgeom's time and error, its share of the CPU's peak, and the baselines against it."""
    device = args.device
    row = {"m": m, "N": n, "C": c, "dtype": args.dtype}

    def kernel():
        return tg.pairwise_distances(models, validate=False, threads=args.threads)

    d = kernel()
    row["max_rel_err"] = check(d, models)
    row["taskgeom_s"] = timeit(kernel, device, repeat=args.repeat)
    pair_samples = m * m * n
    row["pair_samples_per_s"] = pair_samples / row["taskgeom_s"]
    if device == "cpu":
        threads = args.threads or tg.build_info().get("openmp_threads") or 1
        row["threads"] = threads
        row["gflops_per_core"] = 2 * m * (m + 1) / 2 * n * c / row["taskgeom_s"] / threads / 1e9
        row["peak_fraction"] = row["gflops_per_core"] / peak["gflops"]
    if args.skip_baselines:
        return row

    def gram():
        return R.pairwise_gram(models, chunk=args.ref_chunk)

    row["torch_ref_s"] = timeit(gram, device, repeat=args.repeat if device == "cuda" else 1)
    row["torch_ref_max_rel_err"] = check(gram(), models)
    row["x_torch"] = row["torch_ref_s"] / row["taskgeom_s"]
    if device == "cpu":
        p = models.numpy()
        row["numpy_s"] = timeit(lambda: numpy_authors_style(p), device, repeat=1, warmup=0)
        row["numpy_pair_samples_per_s"] = pair_samples / row["numpy_s"]
        row["x_numpy"] = row["numpy_s"] / row["taskgeom_s"]
        return row
    tri = m * (m + 1) / 2
    for method in ("tiled", "gram64"):

        def fn(method=method):
            return tg.pairwise_distances(models, validate=False, cuda_method=method)

        row[f"{method}_s"] = timeit(fn, device, repeat=args.repeat)
        row[f"{method}_max_rel_err"] = check(fn(), models)
        row[f"x_torch_{method}"] = row["torch_ref_s"] / row[f"{method}_s"]
    row["tiled_fp32_issue_fraction"] = 7 * tri * n * c / row["tiled_s"] / FP32_PEAK
    return row


def columns(args) -> list:
    """The summary table's columns for the device and options."""
    cpu = args.device == "cpu"
    baselines = not args.skip_baselines
    gpu_cols = ["tiled_s", "gram64_s", "x_torch_tiled", "x_torch_gram64", "tiled_fp32_issue_fraction",
                "tiled_max_rel_err", "gram64_max_rel_err"]  # fmt: skip
    return (
        ["m", "N", "C", "dtype", "taskgeom_s"]
        + (["threads", "gflops_per_core", "peak_fraction"] if cpu else [])
        + (["torch_ref_s", "x_torch"] if baselines else [])
        + ((["numpy_s", "x_numpy"] if cpu else gpu_cols) if baselines else [])
        + ["max_rel_err"]
        + (["torch_ref_max_rel_err"] if baselines else [])
    )


def run(args):
    device = args.device
    cases = CPU_CASES if device == "cpu" else CUDA_CASES
    if args.cases:
        cases = [tuple(int(x) for x in c.split("x")) for c in args.cases]
    dtype = {"float16": torch.float16, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    rows = []
    peak = fp64_peak_per_core()
    if device == "cpu":
        print(f"CPU: {cpu_model()}; FP64 peak {peak['gflops']:.1f} GFLOP/s per core ({peak['basis']} "
              f"at {peak['ghz']:.2f} GHz)")  # fmt: skip
    for m, n, c in cases:
        models = make_models(m, n, c, dtype, device=device)
        row = measure(args, models, m, n, c, peak)
        rows.append(row)
        print(table([row], list(row)))
        models = None  # free before the next case
        if device == "cuda":
            torch.cuda.empty_cache()
    print()
    print(table(rows, columns(args)))
    write_json(
        args.json,
        {
            "benchmark": "pairwise_bhattacharyya",
            "device": device,
            "env": environment(device),
            "fp64_peak_per_core": peak if device == "cpu" else None,
            "notes": "x_* = baseline time / taskgeom time, same run, same data; "
            "gflops_per_core = 2 flops per (pair of the upper triangle, sample, class) / time / threads, "
            "peak_fraction against fp64_peak_per_core; "
            "tiled_fp32_issue_fraction counts 7 flops per (pair, sample, class) over one "
            "triangle against 51 TFLOP/s",
            "rows": rows,
        },
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["float16", "float32", "bfloat16"], default="float16")
    ap.add_argument("--cases", nargs="*", help="MxNxC, e.g. 200x10000x10")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="kernel threads (default: OpenMP's)")
    ap.add_argument("--skip-baselines", action="store_true", help="time the kernel only (no torch, NumPy)")
    ap.add_argument("--ref-chunk", type=int, default=256, help="samples per chunk of the torch reference")
    ap.add_argument("--json")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
