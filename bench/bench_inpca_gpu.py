"""Exact InPCA of 150,000 models on one GPU (issue 13): distances and top-k together in device memory.

    python bench/bench_inpca_gpu.py --json $OUT/inpca_gpu.json --budget-s 140
    python bench/bench_inpca_gpu.py --smoke --json /tmp/smoke.json     # tiny sizes on the CPU

Synthetic models are generated on the device, like bench_scale.py's: low-dimensional trajectories (100
checkpoints each, logits moving from ignorance along a mix of 4 shared directions, plus noise), N = 1,000
samples x C = 10 classes, float16 (generation timed apart). Then, each stage timed and written to the
JSON as it finishes (a failure is one printed line, ``ERROR stage: ...``, and the run goes on where it can):

1. check: a random subset of --check-m models through ``taskgeom.large.inpca_on_device`` (float32 tiles,
   several of them, the last one ragged) against ``torch.linalg.eigh`` of the dense float64 W built from
   float64 distances of the same kernels (relative error of the top-k eigenvalues); three rows of the
   stored D against ``taskgeom.reference`` (float64).
2. full: --m models: distances, centring and ||W||_F^2, Lanczos (products counted), their total, peak
   device memory (``torch.cuda.max_memory_allocated``); then, untimed, the eigenpairs' residuals on the
   stored operator and two rows of D against the float64 reference.

--budget-s bounds the whole script: the full stage stops cleanly (JSON written, ``stopped`` says why) when
the distances' projection or the Lanczos time would pass it. One short table is printed last.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

T0 = time.perf_counter()


def now() -> float:
    return time.perf_counter() - T0


def say(msg: str) -> None:
    print(f"[{now():7.1f} s] {msg}", flush=True)


class BudgetExceeded(Exception):
    pass


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


class Run:
    """The results so far, written to --json after every stage (atomically)."""

    def __init__(self, args):
        self.args = args
        self.res = {"args": vars(args), "errors": [], "stopped": None}

    def save(self) -> None:
        if not self.args.json:
            return
        try:
            path = Path(self.args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(self.res, indent=1, default=str))
            os.replace(tmp, path)
        except Exception as exc:  # noqa: BLE001
            print(f"ERROR json: {one_line(exc)}", flush=True)

    def fail(self, stage: str, exc: BaseException) -> None:
        line = f"ERROR {stage}: {one_line(exc)}"
        print(line, flush=True)
        self.res["errors"].append(line)
        self.res.setdefault("tracebacks", {})[stage] = traceback.format_exc()[-4000:]
        self.save()


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def free_memory(dev) -> None:
    import torch

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def synth(m: int, n: int, c: int, dev, traj_len: int = 100, seed: int = 0, block: int = 4096):
    """(m, n, c) float16 models on ``dev``: trajectory i // traj_len moves from ignorance (s = 0) along its
    own mix of 4 shared directions (bench_scale.py's family), plus a little noise."""
    import torch

    g = torch.Generator(device=dev)
    g.manual_seed(seed)
    base = torch.randn((4, n * c), generator=g, device=dev) * 3
    mix = torch.randn((math.ceil(m / traj_len), 4), generator=g, device=dev)
    x = torch.empty((m, n, c), dtype=torch.float16, device=dev)
    for i0 in range(0, m, block):
        i = torch.arange(i0, min(m, i0 + block), device=dev)
        s = ((i % traj_len) + 1).to(torch.float32) / traj_len
        noise = torch.randn((len(i), n * c), generator=g, device=dev)
        logits = s[:, None] * (mix[i // traj_len] @ base) + 0.05 * noise
        x[i0 : i0 + len(i)] = torch.softmax(logits.view(-1, n, c), dim=-1).to(torch.float16)
    return x


def reference_rows(x, rows, block: int = 8192):
    """Rows ``rows`` of D in float64 (taskgeom.reference), over column blocks (bounded memory)."""
    import torch

    from taskgeom import reference

    a = x[rows]
    parts = [
        reference.pairwise_distances(a, x[j0 : j0 + block], "bhattacharyya", chunk=256)
        for j0 in range(0, len(x), block)
    ]
    return torch.cat(parts, 1).cpu().numpy()


def row_error(stored, ref) -> float:
    """Max relative error over the nonzero reference entries."""
    import numpy as np

    mask = ref > 0
    return float(np.max(np.abs(stored[mask] - ref[mask]) / ref[mask]))


def stage_check(run: Run, x, dev) -> None:
    import numpy as np
    import torch

    import taskgeom as tg
    from taskgeom import large

    args = run.args
    m = x.shape[0]
    mc = min(args.check_m, m)
    idx = torch.sort(torch.randperm(m, generator=torch.Generator().manual_seed(1))[:mc]).values
    xs = x[idx.to(x.device)]
    out = run.res["check"] = {"m": mc, "tile": args.check_tile}
    info = {}
    sync(dev)
    t = time.perf_counter()
    dd = large.device_distances(xs, device=dev, tile=args.check_tile, info=info)
    emb = large.inpca_on_device(dd, k=args.k, info=info)
    sync(dev)
    out.update(seconds=time.perf_counter() - t, **{k: info[k] for k in ("tiles", "method", "matvecs")})
    say(f"check: inpca_on_device of {mc} models, {info['tiles']} tiles, {info['matvecs']} products")
    rows = [0, mc // 2, mc - 1]
    stored = dd.rows(rows)
    ref = reference_rows(xs, rows)
    out["max_relative_row_error"] = row_error(stored, ref)
    del dd
    D64 = torch.as_tensor(tg.pairwise_distances(xs), device=dev)  # float64, the same kernels (fp64tc on sm_90)
    out["max_relative_row_error_float64_kernel"] = row_error(D64[rows].cpu().numpy(), ref)
    r = D64.mean(1)
    W = -0.5 * (D64 - r[:, None] - r[None, :] + r.mean())
    del D64
    vals, vecs = torch.linalg.eigh(W)
    order = torch.argsort(-vals.abs())[: args.k]
    top = vals[order].cpu().numpy()
    out["total_sq_relative_error"] = abs(emb.total_sq / float((W * W).sum()) - 1)
    del W
    rel = np.abs(emb.eigenvalues - top) / np.abs(top)
    out["eigenvalues"] = emb.eigenvalues.tolist()
    out["dense_eigenvalues"] = top.tolist()
    out["relative_eigenvalue_errors"] = rel.tolist()
    out["max_relative_eigenvalue_error"] = float(rel.max())
    out["procrustes_correlation_3d"] = large.procrustes_correlation(
        vecs[:, order[:3]].cpu().numpy() * np.sqrt(np.abs(top[:3])), emb.coords[:, :3]
    )
    say(
        f"check: top-{args.k} eigenvalues max rel. error {out['max_relative_eigenvalue_error']:.2e}; "
        f"D rows {out['max_relative_row_error']:.2e} (float64 kernel {out['max_relative_row_error_float64_kernel']:.2e})"
    )


class Progress:
    """Progress lines with elapsed seconds, and the budget: raises BudgetExceeded when the distances'
    projection (from the tiles so far) plus a reserve for Lanczos, or the Lanczos time, would pass it."""

    def __init__(self, run: Run, dev, budget_end: float, reserve: float):
        self.run, self.dev, self.end, self.reserve = run, dev, budget_end, reserve
        self.t_first = None
        self.last_print = -1e9
        self.rec = run.res.setdefault("full", {})

    def __call__(self, stage: str, done: int, total) -> None:
        sync(self.dev)  # the tiles run asynchronously: time what has finished
        t = now()
        if stage == "distances":
            self.rec["tiles_done"] = done
            if done == 1:
                self.t_first = t
            projected = None
            if done >= 3:
                rate = (t - self.t_first) / (done - 1)
                projected = t + rate * (total - done)
                self.rec["distances_projected_end_s"] = projected
                if projected + self.reserve > self.end:
                    raise BudgetExceeded(
                        f"distances would end at {projected:.0f} s (+{self.reserve:.0f} s for Lanczos) "
                        f"past the budget of {self.end:.0f} s ({done}/{total} tiles done)"
                    )
            if t - self.last_print > 10 or done == total:
                self.last_print = t
                say(f"distances: {done}/{total} tiles" + (f", projected end {projected:.0f} s" if projected else ""))
        else:
            self.rec["matvecs_done"] = done
            if t > self.end:
                raise BudgetExceeded(f"Lanczos passed the budget of {self.end:.0f} s after {done} products")
            if done % 10 == 0 or t - self.last_print > 10:
                self.last_print = t
                say(f"lanczos: {done} products")


def stage_full(run: Run, x, dev) -> None:
    import torch

    from taskgeom import large

    args = run.args
    m = x.shape[0]
    rec = run.res.setdefault("full", {})
    rec.update(m=m, tile=args.tile, k=args.k)
    need = large.DeviceDistances.nbytes_for(m, min(args.tile, m))
    rec["tiles_gb"] = need / 1e9
    say(f"full: {m} models, tiles of {args.tile}: {need / 1e9:.1f} GB of float32 tiles")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    progress = Progress(run, dev, args.budget_s, args.lanczos_reserve_s)
    info = {}
    sync(dev)
    t0 = time.perf_counter()
    dd = None
    try:
        dd = large.device_distances(x, device=dev, tile=args.tile, progress=progress, info=info)
        sync(dev)
        t1 = time.perf_counter()
        rec.update(distances_seconds=t1 - t0, method=info.get("method"), tiles=info.get("tiles"))
        say(f"distances: {t1 - t0:.1f} s ({info.get('method')}, {info.get('tiles')} tiles)")
        run.save()
        emb = large.inpca_on_device(dd, k=args.k, tol=args.tol, progress=progress, info=info)
        sync(dev)
        t2 = time.perf_counter()
    finally:
        rec.update(
            {k: info[k] for k in ("prepare_seconds", "centring_seconds", "lanczos_seconds", "matvecs") if k in info}
        )
        if dev.type == "cuda":
            rec["peak_gpu_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
        run.save()
    rec.update(
        total_seconds=t2 - t0,
        seconds_per_matvec=info["lanczos_seconds"] / max(1, info["matvecs"]),
        eigenvalues=emb.eigenvalues.tolist(),
        explained_stress_3=float(emb.explained_stress(3)),
        explained_stress_k=float(emb.explained_stress(args.k)),
    )
    say(
        f"full: total {t2 - t0:.1f} s (distances {rec['distances_seconds']:.1f}, centring "
        f"{info['centring_seconds']:.1f}, Lanczos {info['lanczos_seconds']:.1f} s / {info['matvecs']} products)"
    )
    run.save()
    # untimed checks on the stored matrix: residuals of the eigenpairs, two rows against float64
    try:
        V = torch.as_tensor(emb.vectors, device=dev)
        lam = torch.as_tensor(emb.eigenvalues, device=dev)
        R = dd.w_matmat(V) - V * lam[None, :]
        rec["max_relative_residual"] = float((R.norm(dim=0) / lam.abs()).max())
        rows = [0, m - 1]
        rec["max_relative_row_error"] = row_error(dd.rows(rows), reference_rows(x, rows))
        say(f"full: residuals {rec['max_relative_residual']:.1e}, D rows {rec['max_relative_row_error']:.1e}")
    except Exception as exc:  # noqa: BLE001
        run.fail("full-check", exc)
    del dd


def table(run: Run) -> str:
    r = run.res
    f, c, g = r.get("full", {}), r.get("check", {}), r.get("generate", {})

    def num(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    rows = [
        ("device", r.get("device", "-")),
        ("models", f"{r['args']['m']} x {r['args']['n']} x {r['args']['c']} float16, k = {r['args']['k']}"),
        ("generate [s]", num(g.get("seconds"))),
        (f"distances [s] ({f.get('method', '-')}, {f.get('tiles', '-')} tiles)", num(f.get("distances_seconds"))),
        ("centring + ||W||^2 [s]", num(f.get("centring_seconds"), "{:.2f}")),
        (f"Lanczos [s] ({f.get('matvecs', '-')} products)", num(f.get("lanczos_seconds"))),
        ("total [s] (target 300)", num(f.get("total_seconds"))),
        ("peak GPU memory [GB]", num(f.get("peak_gpu_gb"))),
        ("residual of eigenpairs (max rel.)", num(f.get("max_relative_residual"), "{:.1e}")),
        ("D rows vs float64 (max rel.)", num(f.get("max_relative_row_error"), "{:.1e}")),
        (
            f"check m={c.get('m', '-')}: top-k eigenvalues vs dense",
            num(c.get("max_relative_eigenvalue_error"), "{:.1e}"),
        ),
        ("check: D rows vs float64 (max rel.)", num(c.get("max_relative_row_error"), "{:.1e}")),
        ("stopped", r.get("stopped") or "-"),
        ("errors", str(len(r["errors"]))),
        ("script wall [s]", num(r.get("wall_seconds"))),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a.ljust(w)}  {b}" for a, b in rows)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", type=int, default=150_000)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--c", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tile", type=int, default=8192)
    ap.add_argument("--tol", type=float, default=1e-10)
    ap.add_argument("--check-m", type=int, default=4000)
    ap.add_argument("--check-tile", type=int, default=1536)
    ap.add_argument("--budget-s", type=float, default=280.0, help="seconds for the whole script")
    ap.add_argument("--lanczos-reserve-s", type=float, default=25.0, help="kept for Lanczos by the budget check")
    ap.add_argument("--device", default=None, help="default cuda (cpu with --smoke)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (a test of this script)")
    return ap


def setup(run: Run, args):
    """The device (checked: a visible GPU and taskgeom's CUDA extension), recorded with the environment."""
    import torch

    import taskgeom  # noqa: F401
    from taskgeom._native import has_cuda, import_error

    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("no visible GPU (torch.cuda.is_available() is False)")
        if not has_cuda():
            raise RuntimeError(f"taskgeom._cuda is missing ({import_error('_cuda')}): build with TASKGEOM_CUDA=1")
        run.res["device"] = torch.cuda.get_device_name(dev)
        free, total = torch.cuda.mem_get_info(dev)
        run.res["gpu_memory_gb"] = {"free": free / 1e9, "total": total / 1e9}
    else:
        run.res["device"] = "cpu"
    return dev


def environment_of(run: Run, dev) -> None:
    import torch

    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from taskgeom._provenance import code_version

        from _common import environment

        run.res["env"] = environment(dev.type)
        run.res["code_version"] = code_version()
    except Exception as exc:  # noqa: BLE001
        run.fail("environment", exc)
    say(f"device {run.res['device']}, torch {torch.__version__}, commit {run.res.get('env', {}).get('commit')}")
    run.save()


def generate(run: Run, args, dev):
    """The synthetic models (None where generating them failed)."""
    x = None
    try:
        sync(dev)
        t = time.perf_counter()
        x = synth(args.m, args.n, args.c, dev)
        sync(dev)
        run.res["generate"] = {"seconds": time.perf_counter() - t, "gb": x.numel() * 2 / 1e9}
        say(f"generated {args.m} models ({x.numel() * 2 / 1e9:.2f} GB) in {run.res['generate']['seconds']:.1f} s")
    except Exception as exc:  # noqa: BLE001
        run.fail("generate", exc)
    run.save()
    return x


def main() -> int:
    args = parser().parse_args()
    if args.smoke:
        args.m, args.n, args.tile, args.check_m, args.check_tile = 700, 40, 256, 300, 128
        args.device = args.device or "cpu"
    args.device = args.device or "cuda"
    run = Run(args)
    say(f"bench_inpca_gpu: m={args.m} n={args.n} c={args.c} k={args.k} tile={args.tile} device={args.device}")
    try:
        dev = setup(run, args)
    except Exception as exc:  # noqa: BLE001
        run.fail("setup", exc)
        run.res["wall_seconds"] = now()
        run.save()
        print(table(run))
        return 1
    environment_of(run, dev)
    x = generate(run, args, dev)
    if x is not None:
        try:
            stage_check(run, x, dev)
        except Exception as exc:  # noqa: BLE001
            run.fail("check", exc)
        free_memory(dev)
        run.save()
        try:
            stage_full(run, x, dev)
        except BudgetExceeded as exc:
            run.res["stopped"] = str(exc)
            say(f"stopped: {exc}")
        except Exception as exc:  # noqa: BLE001
            run.fail("full", exc)
        free_memory(dev)
    run.res["wall_seconds"] = now()
    run.save()
    if args.json:
        say(f"wrote {args.json}")
    print(table(run), flush=True)
    return 0 if not run.res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
