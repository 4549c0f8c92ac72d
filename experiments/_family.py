"""What the CIFAR-10 family scripts (cifar10_family_a.py, cifar10_family_b.py) share: options, data, the
runs of a family trained into one store (resumable: a rerun with the same --work continues), the
re-indexed families on a grid over the progress reached, and the output folder (at most 8 files and
64 MB: results.json, summary.png, store.tar, run.log; the store's training states stay in --work).

Runs train in spawned worker processes (``--workers`` at once; one GPU is shared), each into its own store
shard, merged into the family's store as it finishes. They are taken seed by seed (every group's first
seed before any group's second), so that with ``--budget-s`` a GPU window that runs short still ends with
every group: a run whose group's runs so far took longer than the time left (the budget less
``--reserve-s`` for the analysis) is skipped, and a run still training at that point is stopped (its
worker killed, its shard never merged). results.json says what was trained and what was not, and why.

``--smoke`` runs the same code on the CPU in about a minute: a generated 32 x 32 ImageFolder with
CIFAR-10's class names, the small CNN, one epoch, two seeds, few checkpoints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

#: when this module began loading (before numpy, torch and taskgeom): --budget-s counts from here
STARTED = time.perf_counter()

import numpy as np  # noqa: E402

import taskgeom as tg  # noqa: E402
from taskgeom.analysis import TrajectoryGroups  # noqa: E402
from taskgeom.bootstrap import Resampling  # noqa: E402
from taskgeom.data import CIFAR10_CLASSES, DataConfig, balanced_subset, load  # noqa: E402
from taskgeom.imprinting import HEADS  # noqa: E402
from taskgeom.store import ConfigMismatchError, PredictionStore  # noqa: E402
from taskgeom.train import PRESETS, TrainConfig  # noqa: E402
from taskgeom.train.schedule import Job, Scheduler, job_id  # noqa: E402

from _data import provenance  # noqa: E402

MAX_FILES, MAX_BYTES = 8, 64 * 2**20
OUTPUTS = ("results.json", "summary.png", "store.tar", "run.log")  # what a family writes into --out

#: the fast recipe (bench/bench_train.py) for every run unless a family overrides a field
FAST = dict(PRESETS["cifar10-fast-resnet"])


@dataclass
class FamilyRun:
    """One run of a family: a label (its group in the analysis), the task, the seed and its settings."""

    group: str
    task: str
    seed: int
    settings: dict = field(default_factory=dict)
    init: tuple | None = None  # (label of a supervised run, checkpoint index) to fine-tune from


def arguments(description: str, epochs: int, seeds: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-path", default=".devdata/cifar10", help="CIFAR-10 (default: %(default)s)")
    ap.add_argument("--out", required=True, help="output folder: at most 8 files and 64 MB (required)")
    ap.add_argument("--work", help="store and training states (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny generated data on the CPU (a rehearsal)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    ap.add_argument("--arch", default="fast-resnet", help="network (default: %(default)s)")
    ap.add_argument("--epochs", type=_at_least(1, int), default=epochs, help="supervised epochs (default: %(default)s)")
    add_seeds_argument(ap, seeds, "of every configuration")
    ap.add_argument(
        "--checkpoints", type=_at_least(2, int), default=16, help="checkpoints per run (default: %(default)s)"
    )
    ap.add_argument(
        "--checkpoint-every", type=_at_least(0, int), default=0,
        help="steps between checkpoints, the same for every run (a dense geometric start, then uniform in steps: "
        "the same density per training step whatever a run's length; 0: --checkpoints per run, geometric in "
        "steps) (default: %(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--imprint-head", default="cosine-ml", choices=HEADS,
        help="imprinted head of every run's checkpoints, the same for every family compared (default: %(default)s)",
    )  # fmt: skip
    ap.add_argument("--n-boot", type=_at_least(1, int), default=200, help="bootstrap replicates (default: 200)")
    ap.add_argument("--eval-samples", type=int, default=2000, help="evaluation images (default: %(default)s)")
    ap.add_argument(
        "--train-per-class", type=int, default=0, help="training images per class, 0: all (default: %(default)s)"
    )
    ap.add_argument("--imprint-samples", type=int, default=5000, help="imprinting images (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, help="samples per batch (default: the fast recipe's 1,024)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: the fast recipe's 0.8)")
    ap.add_argument("--grid", type=int, default=24, help="progress values of the re-indexed runs (default: 24)")
    ap.add_argument(
        "--workers", type=_at_least(1, int), default=1,
        help="runs trained at once, each in its own process sharing the device, on the CPUs / workers torch threads "
        "(recorded with each run: a rerun continues unfinished runs with the same --workers) (default: %(default)s)",
    )  # fmt: skip
    ap.add_argument(
        "--budget-s", type=_at_least(1e-9, float),
        help="seconds for the whole script, analysis included (default: no limit): runs that would not end "
        "in time are skipped, a run still training at the end is stopped",
    )  # fmt: skip
    ap.add_argument(
        "--reserve-s", type=_at_least(0, float), default=60.0,
        help="of --budget-s, the seconds kept for the analysis and the outputs (default: %(default)s)",
    )  # fmt: skip
    return ap


def add_seeds_argument(ap: argparse.ArgumentParser, n: int, what: str) -> None:
    """``--seeds``: the seeds themselves, as in ``taskgeom train`` and ``picture`` (``--seeds 0 1``; default
    ``0 .. n-1``), distinct and non-negative."""
    ap.add_argument(
        "--seeds", type=_at_least(0, int), nargs="+", default=list(range(n)), action=_Distinct,
        help=f"seeds {what}, e.g. --seeds 0 1 2 (default: {' '.join(map(str, range(n)))})",
    )  # fmt: skip


class _Distinct(argparse.Action):
    """Store a list, refusing a repeated value in one line (argparse's error, exit code 2)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(set(values)) != len(values):
            raise argparse.ArgumentError(self, f"each value once, got {' '.join(map(str, values))}")
        setattr(namespace, self.dest, list(values))


def _at_least(low, kind):
    """An argparse type: a number of ``kind`` at least (int) or above (float) ``low``."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if kind is int and v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        if kind is float and not (math.isfinite(v) and v >= low):
            raise argparse.ArgumentTypeError(f"must be a finite number of at least {low:g}, got {text}")
        return v

    return parse


#: fine-tuning starts, as fractions of the way from a run's progress at initialisation to its highest
STARTS = {"early": 1 / 6, "middle": 1 / 2, "final": 1.0}


def start_checkpoints(progress) -> dict:
    """``{where: (checkpoint, its progress, the target)}``: for each fraction of STARTS, the checkpoint (not
    the initialisation) whose progress is nearest that fraction of the way from the run's progress at
    initialisation to its highest; spaced by training progress, not by checkpoint index."""
    p = np.asarray(progress, dtype=np.float64)
    out = {}
    for where, f in STARTS.items():
        target = p[0] + f * (p.max() - p[0])
        k = 1 + int(np.argmin(np.abs(p[1:] - target)))
        out[where] = (k, float(p[k]), float(target))
    return out


def renormalised(trajectory) -> np.ndarray:
    """A trajectory's checkpoints (T, N, C) in float64 with rows renormalised (stored as float16)."""
    p = np.asarray(trajectory.probs, dtype=np.float64)
    return p / p.sum(-1, keepdims=True)


def riemann_density(runs, tol: float) -> dict:
    """Each run's Riemann length (eq. 6, geodesic refinement) with all its checkpoints, every 2nd and every
    3rd (:func:`taskgeom.trajectories.riemann_length_density`), their seed summaries, and whether the
    length has converged in the checkpoint density: halving the density changes no run's length by more
    than ``tol`` (relative)."""
    from taskgeom.trajectories import riemann_length_density

    per_run = [riemann_length_density(p, strides=(1, 2, 3)) for p in runs]
    change = [abs(1.0 - r[2] / r[1]) if r[1] > 0 else 0.0 for r in per_run]
    return {
        "checkpoints": [len(p) for p in runs],
        "full": summary([r[1] for r in per_run]),
        "half": summary([r[2] for r in per_run]),
        "third": summary([r[3] for r in per_run]),
        "halving_change": summary(change),
        "tolerance": tol,
        "converged": bool(max(change) <= tol),
        "verdict": "converged" if max(change) <= tol else (
            f"not converged: halving the checkpoint density changes a length by {100 * max(change):.0f}% "
            f"(> {100 * tol:.0f}%)"
        ),
    }  # fmt: skip


def smoke_settings(args) -> None:
    """Shrink everything for a CPU rehearsal (same code path)."""
    args.arch, args.epochs, args.seeds, args.checkpoints = "small-cnn", 1, args.seeds[:2], 3
    args.eval_samples, args.imprint_samples, args.grid, args.device = 100, 100, 6, "cpu"
    args.train_per_class = 0


def smoke_data(root: Path, per_class: int = 24, test_per_class: int = 10) -> str:
    """A tiny CIFAR-like ImageFolder (``<split>/<class>/<image>.png``, 32 x 32) with a class signal."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(CIFAR10_CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
                img[: 3 + 2 * c, :, c % 3] = 255
                Image.fromarray(img).save(d / f"{i}.png")
    return str(root)


def family_data(data_path: str, eval_samples: int, train_per_class: int, eval_on_train: bool):
    """CIFAR-10 as the family uses it; with ``eval_on_train`` evaluated on class-balanced training images
    (the paper's Figs. 4-5)."""
    data = load(
        DataConfig(data="cifar10", data_path=data_path, eval_samples=eval_samples, train_per_class=train_per_class)
    )
    if eval_on_train:
        idx = balanced_subset(data.train[1], max(1, eval_samples // 10), np.random.default_rng(0))
        data = replace(data, test=(data.train[0][idx], data.train[1][idx]), eval_set=f"cifar10-train-{len(idx)}-seed0")
    return data


def run_script(main) -> None:
    """Run a family script's ``main`` with the command line's error policy (:func:`taskgeom.cli.run_script`:
    one line, never a traceback); an interrupt says how to continue."""
    from taskgeom.cli import run_script as run

    run(
        main,
        Path(sys.argv[0]).name,
        interrupted="the outputs may be incomplete; rerun with the same --work to redo them",
    )


class Family:
    """The data, store and runs of one family script."""

    def __init__(self, args, name: str, eval_on_train: bool = False):
        self.args, self.name, self.t0 = args, name, STARTED
        budget = args.budget_s
        if budget is not None and args.reserve_s >= budget:
            print(f"error: --reserve-s ({args.reserve_s:g}) must be below --budget-s ({budget:g})", file=sys.stderr)
            raise SystemExit(2)
        self.deadline = math.inf if budget is None else self.t0 + budget - args.reserve_s
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        others = [f for f in self.out.rglob("*") if f.is_file() and f.relative_to(self.out).as_posix() not in OUTPUTS]
        if len(others) + len(OUTPUTS) > MAX_FILES:
            print(f"error: --out {self.out} holds {len(others)} other files: with this family's "
                  f"{len(OUTPUTS)} over {MAX_FILES}; use an empty folder", file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        self.temporary_work = not args.work  # removed when the family is complete
        self.work = Path(args.work or tempfile.mkdtemp(prefix=f"taskgeom-{name}-"))
        self.log_file = open(self.out / "run.log", "a", encoding="utf-8")
        path = smoke_data(self.work / "data") if args.smoke else args.data_path
        self.data_path = str(path)
        self.data_args = dict(
            data_path=self.data_path,
            eval_samples=args.eval_samples,
            train_per_class=args.train_per_class,
            eval_on_train=eval_on_train,
        )
        self.data = family_data(**self.data_args)
        self.store_path = self.work / "store"
        store = PredictionStore(self.store_path, create=True)
        store.add_eval_set(self.data.eval_set, self.data.test[1], class_names=self.data.classes)
        store.close()
        self.store = None  # the family's store, opened read-only after each round of training
        self.labels = np.asarray(self.data.test[1])
        self.trajs: dict[str, list] = {}  # group -> trajectories (seed order)
        self.groups: list[str] = []  # every group planned, in the order first given
        self.done: dict[tuple, dict] = {}  # (group, seed) -> the trained run (name, id, state dir, seconds)
        self.skipped: list[dict] = []  # runs not trained, each with why
        self.scheduler = None  # the runs' scheduler, made when they are first trained
        self.grouped = TrajectoryGroups({}, self.labels)  # the trained runs by group (after each round)
        self.log(
            f"{name}: {len(self.data.train[1])} training, {len(self.labels)} evaluation images; work folder {self.work}"
        )

    def log(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    @staticmethod
    def key(run: FamilyRun) -> str:
        """The run's folder name (its shard and training states): group and seed."""
        return job_id(run.group, run.seed)

    def state_dir(self, run: FamilyRun) -> str:
        """Where the run saves its training states."""
        return str(self.work / "state" / self.key(run))

    def config(self, run: FamilyRun) -> TrainConfig:
        a = self.args
        base = {**FAST, "arch": a.arch, "epochs": a.epochs, "checkpoints": a.checkpoints, "device": a.device}
        base.update(checkpoint_every=a.checkpoint_every, imprint_head=a.imprint_head)
        base.update(imprint_samples=a.imprint_samples, seed=run.seed, state_dir=self.state_dir(run))
        if a.smoke:
            base.update(batch_size=64, lr=0.1)
        base.update({k: v for k, v in (("batch_size", a.batch_size), ("lr", a.lr)) if v is not None})
        cfg = {**base, **run.settings}
        if run.init is not None:
            cfg["method"] = "finetune"  # from the checkpoint the scheduler names in init_from
        return TrainConfig(**cfg)

    def job(self, run: FamilyRun) -> Job:
        """The scheduler's job of ``run``: its shard named by :meth:`key`, recorded under its group, with
        the torch threads of one of ``--workers`` processes sharing the CPUs."""
        start = None
        if run.init is not None:
            src, k = run.init
            start = (self.key(FamilyRun(src, "", run.seed)), k)
        cfg = replace(self.config(run), threads=max(1, (os.cpu_count() or 1) // self.args.workers))
        return Job(self.key(run), run.task, cfg, label=run.group, start_from=start)

    def train(self, runs: list[FamilyRun], then=None) -> None:
        """Train ``runs`` with the one scheduler (:class:`taskgeom.train.schedule.Scheduler`): seed by seed
        (stable: groups in the order given), ``--workers`` processes at once, within the budget; each
        finished run's shard is merged into the family's store. ``then(run)``, called as each run finishes,
        may return more runs (they join the queue by seed: a fine-tuning run after its seed's other runs). A
        run fine-tuning from another (``init``) waits while that run trains and is skipped when it was not
        trained."""
        of = {}  # job id -> its run

        def jobs(more) -> list[Job]:
            out = []
            for run in more:
                if run.group not in self.groups:
                    self.groups.append(run.group)
                job = self.job(run)
                of[job.id] = run
                out.append(job)
            return out

        def finished(job: Job, info: dict) -> list[Job]:
            run = of[job.id]
            self.done[run.group, run.seed] = info  # its state folder included
            return jobs(then(run) or []) if then is not None else []

        def failed(job: Job, exc: BaseException) -> None:
            if isinstance(exc, ConfigMismatchError):
                run = of[job.id]
                raise ValueError(
                    f"{run.group} seed {run.seed}: --work {self.work} holds this run with other settings; use "
                    "another --work for other settings"
                ) from None

        if self.scheduler is None:
            self.scheduler = Scheduler(
                (family_data, self.data_args),
                self.work,
                executor="processes",  # stoppable at the budget's end
                workers=self.args.workers,
                store=self.store_path,
                deadline=self.deadline,
                log=self.log,
            )
        skipped = len(self.scheduler.skipped)
        try:
            self.scheduler.run(jobs(runs), then=finished, on_error=failed)
        except KeyboardInterrupt:  # one line by run_script, exit status 130
            raise KeyboardInterrupt(f"rerun with --work {self.work} to continue") from None
        for s in self.scheduler.skipped[skipped:]:
            run = of[s["id"]]
            self.skipped.append({"group": run.group, "seed": run.seed, "why": s["why"]})
        self._open()

    def _open(self) -> None:
        """(Re)open the family's store and list each group's trained runs in seed order."""
        if self.store is not None:
            self.store.close()
        self.store = PredictionStore(self.store_path, readonly=True)
        self.trajs = {}
        for g in self.groups:
            seeds = sorted(s for (h, s) in self.done if h == g)
            if seeds:
                self.trajs[g] = [self.store.trajectory(self.done[g, s]["name"]) for s in seeds]
        # progress, grids, reached values and re-indexing: taskgeom.analysis's, on rows renormalised in float64
        self.grouped = TrajectoryGroups(self.trajs, self.labels, load=renormalised, points=self.args.grid)

    def run_progress(self, group: str, seed: int) -> np.ndarray:
        """One trained run's progress at every checkpoint, read from the family's store (between merges)."""
        store = PredictionStore(self.store_path, readonly=True)
        try:
            p = renormalised(store.trajectory(self.done[group, seed]["name"]))
        finally:
            store.close()
        return np.asarray(tg.progress(p, self.labels), dtype=np.float64)

    def missing(self) -> list[str]:
        """The groups planned with no trained run (no analysis without them)."""
        return [g for g in self.groups if g not in self.trajs]

    def boot(self, groups, seed: int = 0) -> Resampling:
        """One bootstrap for ``groups`` (:class:`taskgeom.bootstrap.Resampling`, as the analysis draws it):
        sample counts (B, N) and, for each group, seed counts (B, K) (all ones for a group of one run)."""
        return Resampling(len(self.labels), self.args.n_boot, {g: len(self.trajs[g]) for g in groups}, seed)

    def progress_summary(self, groups=None) -> dict:
        """For each group: progress on all ten classes at initialisation (checkpoint 0), at the end and the
        gain between them (mean, std over seeds, values), each with a 95% bootstrap interval over
        evaluation samples and seeds (the number of seeds beside it)."""
        groups = list(self.trajs) if groups is None else groups
        boot = self.boot(groups, seed=1)
        out = {}
        for g in groups:
            reps = self.grouped.progress_replicates(g, boot)  # at initialisation, at the end
            init = np.array([p[0] for p in self.grouped.progress(g)])
            end = np.array([p[-1] for p in self.grouped.progress(g)])
            out[g] = {
                "at_init": {**summary(init), "interval": boot.interval(reps[0], init.mean())},
                "final": {**summary(end), "interval": boot.interval(reps[1], end.mean())},
                "gain": {**summary(end - init), "interval": boot.interval(reps[1] - reps[0], (end - init).mean())},
                "over": boot.over(g),
            }
        return out

    def riemann_density(self, group: str, tol: float) -> dict:
        """:func:`riemann_density` of ``group``'s runs."""
        return riemann_density(self.grouped.probs(group), tol)

    def finish(self, results: dict, figure) -> None:
        """results.json, summary.png, store.tar (the prediction store without training states), run.log;
        checks the folder's limits. A family with groups not trained at all (:meth:`missing`) is written
        as it stands, with a note and a figure that says so (the caller did no analysis), and the script
        then exits with status 1."""
        if self.scheduler is not None:
            self.scheduler.close()
        missing = self.missing()
        results = {**results, "family": self.name, "device": _device(), "seconds": time.perf_counter() - self.t0}
        results["runs"] = {
            "planned": len(self.done) + len(self.skipped),
            "trained": len(self.done),
            "seeds": {g: sorted(s for (h, s) in self.done if h == g) for g in self.groups},
            "skipped": self.skipped,
            # each run's training time (None: already trained when this invocation began); a worker's first
            # run includes its start-up
            "seconds": {f"{g} seed {s}": None if d["resumed"] else d["seconds"] for (g, s), d in self.done.items()},
        }
        if any(len(self.trajs.get(g, [])) == 1 for g in self.groups):
            results["runs"]["note"] = (
                "a group of one run has no tube around its mean: its normalised distances (Remark 5) are "
                "undefined (null)"
            )
        if missing:
            results["incomplete"] = f"no run of {', '.join(missing)} was trained: no analysis"
        # a temporary work folder goes once everything planned is trained (else a rerun may continue from it)
        remove_work = self.temporary_work and not missing and not self.skipped
        results.update(provenance(self.args, leave_out=("out", "work")))  # settings, and the code's version
        results["settings"]["data_path"] = self.data_path  # the data actually used (generated with --smoke)
        # the store and training states (--work continues from them); None: a temporary folder, removed
        results["settings"]["work"] = None if remove_work else str(self.work)
        (self.out / "results.json").write_text(json.dumps(_plain(results), indent=1, allow_nan=False))
        (_incomplete_figure if missing else figure)(results, self.out / "summary.png")
        if self.store is not None:
            self.store.close()
        with tarfile.open(self.out / "store.tar", "w") as tar:
            for f in sorted(self.store_path.rglob("*")):
                if f.is_file() and "state" not in f.relative_to(self.store_path).parts:
                    tar.add(f, arcname=str(Path("store") / f.relative_to(self.store_path)))
        self.log(f"done: {self.out}" + (f" (incomplete: {results['incomplete']})" if missing else ""))
        self.log_file.close()
        files = [f for f in self.out.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        if len(files) > MAX_FILES or size > MAX_BYTES:
            raise SystemExit(f"{self.out}: {len(files)} files, {size / 2**20:.1f} MB (limits {MAX_FILES}, 64 MB)")
        if remove_work:
            shutil.rmtree(self.work, ignore_errors=True)
        if missing:
            raise SystemExit(f"{self.name}: incomplete, {results['incomplete']} (see {self.out / 'results.json'})")


def _incomplete_figure(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{results['family']}: {results['incomplete']}", ha="center", va="center", wrap=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None  # (strict JSON has no NaN)
    return x


def summary(values) -> dict:
    """Mean, standard deviation over seeds (None, undefined, for one seed) and the values."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None, "values": v.tolist()}
