"""Fair share under contention (issue 27, item 1): each CPU workload alone, then beside K CPU-bound busy
processes (``python -c "while True: pass"``, started and killed here), with each slowdown against the
fair-share expectation.

Fair share: with K busy processes on P cores (the CPUs this process may run on), a job whose T threads
are all runnable gets T / (K + T) of the P cores under a fair scheduler, against min(T, P) cores alone, so
its expected slowdown is max(1, (K + T) / P) for T <= P (T = the threads the workload uses: OpenMP
threads of a kernel call, torch threads or worker processes during training). Goal: slowdown / fair share
<= 1.3. The conditions are interleaved: each of ``--repeat`` rounds times every workload once under each busy
count (in turn forwards and backwards), so that alone and busy meet the same minutes of a machine whose speed
drifts; medians over the rounds. Other
engineers' processes are not controlled here: the tasks runnable at each condition's start are recorded and
printed (an "alone" time on a machine with more than about 1 runnable task is not alone).

    python bench/bench_contention.py --json bench/results/raw/contention_cpu.json
    python bench/bench_contention.py --busy 0 2 4 --workloads pairwise-c10 progress --repeat 5
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# taskgeom first: it sets OpenMP's passive wait policy only if torch is not imported yet; --torch-first
# measures the other order, the common one in user code (libgomp then spins while it waits)
if "--torch-first" in sys.argv:
    import torch  # noqa: F401

import taskgeom as tg

# isort: split
import numpy as np
import torch

from taskgeom import reference as R

from _common import environment, table, write_json

WORKLOADS = ["pairwise-c10", "pairwise-c100", "progress", "landmark", "analyse", "train", "train-one", "train-threads"]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def kernel_threads(requested: int | None) -> int:
    """Threads a kernel call uses: as the kernel itself decides (taskgeom.build_info reports OpenMP's)."""
    if requested:
        return requested
    env = os.environ.get("TASKGEOM_NUM_THREADS")
    return int(env) if env else int(tg.build_info().get("openmp_threads") or cores())


def models(m, n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(m, n, c, generator=g) * torch.linspace(0.5, 4, m)[:, None, None]
    return torch.softmax(logits, -1).to(torch.float16)


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    img = (d.images / 16 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    y = d.target.astype(np.int64)
    return (img[:1200], y[:1200]), (img[1200:], y[1200:])


def _pairwise(name: str, args):
    threads = args.threads
    m, n, c = (200, 10_000, 10) if name == "pairwise-c10" else (100, 10_000, 100)
    p = models(m, n, c)

    def fn():
        return tg.pairwise_distances(p, validate=False, threads=threads)

    d = torch.as_tensor(fn())
    ref = R.pairwise_distances(p[:3], p)
    mask = ref > 0
    err = float(((d[:3] - ref).abs()[mask] / ref[mask]).max())
    assert err < 1e-5, err
    return fn, kernel_threads(threads), f"{m}x{n}x{c}, max rel err {err:.1e}"


def _progress(name: str, args):
    threads = args.threads
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (10_000,), generator=g)
    logits = torch.randn(40, 10_000, 10, generator=g) + torch.linspace(0.1, 6, 40)[:, None, None] * (
        torch.nn.functional.one_hot(y, 10)
    )
    p = torch.softmax(logits, -1)
    lam = np.asarray(tg.progress(p, y, threads=threads))
    ref = np.asarray(tg.progress(p, y, backend="torch"))
    err = float(np.abs(lam - ref).max())
    assert err < 1e-6, err

    def fn():
        for _ in range(args.progress_calls):
            tg.progress(p, y, validate=False, threads=threads)

    return fn, kernel_threads(threads), f"m=40 N=10000 C=10 x {args.progress_calls} calls, |dlambda| {err:.1e}"


def _landmark(name: str, args):
    threads = args.threads
    from taskgeom.large import landmark_inpca

    p = models(2000, 2000, 10, seed=1).float().numpy()

    def fn():
        return landmark_inpca(p, n_landmarks=200, k=3, check=200)

    res = fn()
    assert np.isfinite(res.coords).all()
    return fn, kernel_threads(threads), f"2000 models x 2000 x 10, 200 landmarks, rel err {res.error}"


def _train(name: str, args):
    """The main job's way (taskgeom picture, sweeps): one run per worker process, one thread each."""
    from taskgeom import picture
    from taskgeom.data import datasets
    from taskgeom.train.schedule import Job, Scheduler, job_id

    data_cfg = datasets.DataConfig()
    cfg = picture.PictureConfig(epochs=1, batch_size=16, checkpoints=2, device="cpu")
    data = datasets.load(data_cfg)
    tmp = tempfile.mkdtemp(prefix="tg-contention-")
    atexit.register(shutil.rmtree, tmp, True)
    P = cores()
    sched = Scheduler(picture._data_source(data_cfg), tmp, executor="processes", workers=P, in_order=True)
    atexit.register(sched.close)
    count = iter(range(1 << 30))

    def fn():
        # fresh job ids each time: a job whose shard holds its whole run only resumes (and returns at once)
        jobs = [
            Job(job_id("all", seed), "all", picture._run_config(cfg, data, seed))
            for seed in [next(count) for _ in range(args.train_runs * P)]
        ]
        sched.run(jobs)

    fn()
    acc = [d["accuracy"] for d in sched.done.values()]
    assert all(np.isfinite(acc)), acc
    workers = lambda: list((getattr(sched._executor.pool, "_processes", None) or {}).values())  # noqa: E731
    return (
        fn,
        P,
        f"digits 1 epoch small-cnn x {args.train_runs * P} runs, {P} worker processes of 1 thread, acc {min(acc):.2f}",
        lambda: cpu_seconds() + sum(_proc_cpu(p.pid) for p in workers()),
    )


def _analyse(name: str, args):
    """The main job's analysis (taskgeom.analysis.analyse) of a small digits picture trained here once: 2
    tasks x 2 seeds x 3 epochs, 20 bootstrap replicates; torch's threads, as the main job runs it."""
    from taskgeom import picture
    from taskgeom.analysis import analyse

    tmp = tempfile.mkdtemp(prefix="tg-contention-")
    atexit.register(shutil.rmtree, tmp, True)
    cfg = picture.PictureConfig(out=tmp, tasks=("all", "0-4"), seeds=[0, 1], epochs=3, n_boot=0, device="cpu")
    picture.run(cfg)
    store = os.path.join(tmp, "store")

    def fn():
        return analyse(store, grid=20, n_boot=20, method="supervised")

    res = fn()
    return (
        fn,
        torch.get_num_threads(),
        f"digits picture 2 tasks x 2 seeds, {res.trajectories} trajectories, 20 replicates",
    )


def _train_threads(name: str, args):
    """One run in this process: on one thread (``train-one``: taskgeom train's and train()'s default) or on all
    torch's threads (``train-threads``: taskgeom train --threads 0, every run of them before 16ff572)."""
    from taskgeom.store import PredictionStore
    from taskgeom.train import TrainConfig, train

    (xtr, ytr), (xte, yte) = digits()
    tmp = tempfile.mkdtemp(prefix="tg-contention-")
    atexit.register(shutil.rmtree, tmp, True)
    cfg = TrainConfig(method="supervised", arch="small-cnn", epochs=1, batch_size=16, checkpoints=2, device="cpu")
    cfg = dataclasses.replace(cfg, threads=0 if name == "train-threads" else 1)  # 0: torch's, one per core
    count = iter(range(1 << 30))

    def one():
        # a fresh store each time: train() resumes (and returns at once) a run recorded with the same settings
        store = PredictionStore(os.path.join(tmp, f"s{next(count)}"), create=True)
        store.add_eval_set("digits", yte, c=10)
        return train(cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits", "all", progress_bar=False)

    def fn():
        for _ in range(args.train_runs):
            one()

    traj = one()
    assert np.isfinite(np.asarray(traj.probs, dtype=np.float64)).all()
    return (
        fn,
        cfg.threads or torch.get_num_threads(),
        f"digits 1 epoch small-cnn x {args.train_runs} runs, acc {traj.checkpoints[-1]['accuracy']:.2f}",
    )


def build(name: str, args):
    """(function to time, threads it uses, check message[, CPU seconds function]): the check runs once here,
    before any timing."""
    builders = {"pairwise-c10": _pairwise, "pairwise-c100": _pairwise, "progress": _progress, "analyse": _analyse}
    builders.update(
        {"landmark": _landmark, "train": _train, "train-one": _train_threads, "train-threads": _train_threads}
    )
    return builders[name](name, args)


def cpu_seconds() -> float:
    return time.process_time()  # every thread of this process (not the busy processes), in seconds


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a running process (Linux's /proc; 0 where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def timed(fn, repeat: int, warmup: int, cpu_fn=cpu_seconds) -> tuple[float, list[float], float]:
    """Median wall time, the wall times, and the median CPU time per call (of this process, and of its
    workers where the workload has them)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeat):
        c0, t0 = cpu_fn(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(cpu_fn() - c0)
    return statistics.median(times), times, statistics.median(cpu)


def runnable() -> float:
    """Tasks runnable now (Linux's /proc/loadavg, this thread included; the 1-minute load average elsewhere):
    with the conditions interleaved, the load average would mix them."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return float(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]


def start_busy(k: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(k)]
    time.sleep(0.5)  # let them start spinning
    return procs


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def run(args):
    P = cores()
    names = args.workloads or WORKLOADS
    built = {}
    for name in names:
        fn, T, note, *cpu_fn = build(name, args)
        built[name] = (fn, T, *cpu_fn)
        print(f"checked {name}: {note} ({T} threads)")
    results, loads = measure(built, names, args)
    rows = [row(name, built[name][1], k, P, results[name], loads[k]) for name in names for k in args.busy]
    report(rows, P, args)


def measure(built: dict, names: list, args) -> tuple[dict, dict]:
    """Per workload and busy count: (median wall s, the wall times, median CPU s); per busy count: the mean
    number of runnable tasks at the starts."""
    # rounds are the outer loop, the busy counts inside (in turn forwards and backwards): every condition
    # meets the same minutes of this machine, whose cores' speed drifts from one minute to the next
    samples = {name: {k: [] for k in args.busy} for name in names}
    loads = {k: [] for k in args.busy}
    for name in names:  # warm-up, alone
        built[name][0]()
    for r in range(args.repeat):
        for k in args.busy if r % 2 == 0 else args.busy[::-1]:
            procs = start_busy(k)
            try:
                loads[k].append(runnable())
                for name in names:
                    fn, _, *cpu_fn = built[name]
                    samples[name][k].append(timed(fn, 1, 0, *cpu_fn))
            finally:
                stop_busy(procs)
        print(f"round {r + 1}/{args.repeat}: load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {
        name: {
            k: (statistics.median(t[0] for t in v), [t[0] for t in v], statistics.median(t[2] for t in v))
            for k, v in by_k.items()
        }
        for name, by_k in samples.items()
    }
    return results, {k: statistics.mean(v) for k, v in loads.items()}


def row(name: str, T: int, k: int, P: int, results: dict, load: float) -> dict:
    """One workload beside ``k`` busy processes against alone and against its fair share."""
    t, times, cpu = results[k]
    base, _, base_cpu = results.get(0, (None, None, None))
    fair = max(1.0, (k + T) / P) / max(1.0, min(T, P) / P)
    slow = t / base if base else None
    # slowdown = fair share x (CPU per call / alone) / (cores obtained / fair cores): whether the workload
    # got its share of the cores, and whether a call took more CPU than alone (waits that spin, or a core
    # that runs slower at this hour: this guest's speed varies by up to 1.6x)
    fair_cores = min(T, P) / fair
    return {
        "workload": name,
        "threads": T,
        "busy": k,
        "runnable": round(load, 2),
        "median_s": t,
        "min_s": min(times),
        "slowdown": slow,
        "fair_share": fair,
        "x_fair": slow / fair if slow else None,
        "cpu_s": cpu,
        "cores_x_fair": (cpu / t) / fair_cores if t > 0 else None,
        "cpu_x_alone": cpu / base_cpu if base_cpu else None,
    }


def report(rows: list, P: int, args) -> None:
    cols = ["workload", "threads", "busy", "runnable", "median_s", "slowdown", "fair_share", "x_fair"]
    cols += ["cores_x_fair", "cpu_x_alone"]
    print()
    print(table(rows, cols))
    worst = max((r["x_fair"] for r in rows if r["x_fair"]), default=None)
    print(f"\nP = {P} cores; fair share = max(1, (K + T) / P); worst slowdown / fair share = {worst}")
    print(
        "cores_x_fair: CPU time per wall second against the fair cores min(T, P) / fair share (1: its share); "
        "cpu_x_alone: CPU time per call against alone (above 1: waits that spin, or a slower core this hour)"
    )
    write_json(
        args.json,
        {
            "benchmark": "contention",
            "device": "cpu",
            "env": {**environment("cpu"), **cpu_info()},
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "notes": "fair_share = max(1, (K + T) / P), P = usable cores, T = the workload's threads; "
            "x_fair = slowdown / fair_share; cpu_s = median CPU seconds of the process per call; "
            "cores_x_fair = (cpu_s / median_s) / (min(T, P) / fair_share), the cores obtained against the fair "
            "cores; cpu_x_alone = cpu_s / alone cpu_s (slowdown = fair_share x cpu_x_alone / cores_x_fair, "
            "up to the medians); runnable = mean number of runnable tasks when the condition started, over the "
            "rounds (/proc/loadavg; this process and other users' processes included)",
            "rows": rows,
        },
    )


def cpu_info() -> dict:
    from _common import cpu_model

    return {"cpu_model": cpu_model(), "cores": cores()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", nargs="*", choices=WORKLOADS)
    ap.add_argument("--busy", nargs="*", type=int, default=[0, 2, 4], help="busy-process counts (0 = alone)")
    ap.add_argument("--threads", type=int, help="kernel threads (default: the kernel's own choice)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--train-runs", type=int, default=3, help="training runs per timing")
    ap.add_argument("--progress-calls", type=int, default=20)
    ap.add_argument("--json")
    ap.add_argument(
        "--torch-first", action="store_true", help="import torch before taskgeom (libgomp's default, spinning waits)"
    )
    run(ap.parse_args())


if __name__ == "__main__":
    main()
