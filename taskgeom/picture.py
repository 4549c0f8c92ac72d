"""``taskgeom picture``: the main job, end to end on built-in data.

Trains a small CNN (:mod:`taskgeom.train`) on several tasks (class subsets of scikit-learn's digits,
shipped inside scikit-learn, so nothing is downloaded; or of CIFAR-10 with ``--data cifar10``) with a few
seeds each (the sweeps' scheduler: each run in its own shard, one run per CPU core at once, each on one
torch thread), maps every checkpoint onto the union task by imprinting (eq. 7) and records its predictions
in a PredictionStore; then analyses them (:mod:`taskgeom.analysis`): progress (eq. 4), re-indexed
trajectories (Remark 4), their pairwise Bhattacharyya distances, the InPCA embedding and explained stress
(eqs. 9-11), mean trajectories, tube radii and normalised distances between every pair of tasks (Remark
5) and Riemann lengths (eq. 6); prints the headline numbers and writes a report folder (``results.json``,
``config.json``, figures, ``report.html``). An existing store is re-analysed without retraining.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as _config
from .choices import HEADS
from .data import datasets

if TYPE_CHECKING:  # the analysis (and torch) are imported where a picture runs, not for --help
    from .analysis import PictureResult

__all__ = ["PictureConfig", "run", "print_headline", "configure_parser"]


@dataclass(frozen=True)
class PictureConfig:
    """Configuration of ``taskgeom picture`` (its data options are a :class:`taskgeom.data.DataConfig`); run it
    with :func:`run`, in a script under ``if __name__ == "__main__":`` (runs train in spawned workers)."""

    out: str = _config.option("taskgeom-picture", "report folder", metavar="PATH")
    store: str | None = _config.option(None, "PredictionStore folder (none: <out>/store)", metavar="PATH")
    tasks: tuple[str, ...] | None = _config.option(
        None,
        "task names (none: digits: all 0-4 5-9 even odd; cifar10: all vehicles animals mammals pets; also "
        "airplane-automobile bird-cat ship-truck)",
    )
    seeds: list[int] = _config.option([0, 1, 2], "the seeds of each task's runs, as in taskgeom train", minimum=0)
    arch: str = _config.option("small-cnn", "network", choices=("small-cnn", "wrn-16-4", "resnet18", "resnet50"))
    epochs: int = _config.option(15, "training epochs per run", minimum=1)
    batch_size: int = _config.option(64, "samples per batch", minimum=1)
    lr: float = _config.option(
        0.1, "peak learning rate of SGD with Nesterov momentum 0.9, cosine schedule", minimum=0.0
    )
    weight_decay: float = _config.option(
        1e-5, "weight decay, excluding normalisation parameters and biases", minimum=0.0
    )
    checkpoints: int = _config.option(20, "recorded checkpoints per run, dense early (geometric in steps)", minimum=2)
    grid: int = _config.option(50, "progress values of the re-indexed trajectories", minimum=2)
    imprint_samples: int = _config.option(
        5000, "training images used to imprint each checkpoint onto the union task", minimum=1
    )
    imprint_head: str = _config.option(
        "cosine-ml",
        "imprinted head mapping each checkpoint onto the union task: cosine (eq. 7 as printed), cosine-ml (eq. 7 "
        "with a maximum-likelihood temperature per checkpoint) or euclidean (the authors' code)",
        choices=HEADS,
    )
    n_boot: int = _config.option(
        200,
        "bootstrap replicates over evaluation samples (and seeds, where a task has 2 or more); 0: no intervals",
        minimum=0,
    )
    device: str = _config.option("auto", "where training and analysis run: auto (a GPU when there is one), cpu or cuda")
    workers: int = _config.option(
        0,
        "runs trained at once, at most the runs to train; more than one: each in a spawned worker process (a "
        "script calling taskgeom.picture.run does so under if __name__ == '__main__':). On a CPU each run trains "
        "on one torch thread, so it computes the same whatever the core count or the workers; 0: one per usable CPU "
        "core, one on a GPU",
        minimum=0,
    )

    def task_names(self, data: str) -> tuple:
        if self.tasks:
            return tuple(self.tasks)
        if data not in datasets.DEFAULT_TASKS:
            raise ValueError(f"--data {data} has no default tasks; name them with --tasks (e.g. all random333-s0)")
        return datasets.DEFAULT_TASKS[data]


def _recorded(store, eval_set: str, task: str, seed: int, cfg: PictureConfig):
    """This run's trajectory in ``store`` (under the name train() records it with), None where there is none."""
    from .store import trajectory_name

    found = [t for t in store.select(name=trajectory_name(task, "supervised", cfg.arch, seed, eval_set)) if len(t)]
    return found[0] if found else None


def _finished(store, eval_set: str, task: str, seed: int, cfg: PictureConfig) -> bool:
    """Whether this run's trajectory is already recorded to its last epoch (then nothing is trained)."""
    return _reaches(_recorded(store, eval_set, task, seed, cfg), cfg.epochs)


def _reaches(t, epochs: int) -> bool:
    """Whether the recorded trajectory ``t`` (or None) holds its run to epoch ``epochs``."""
    last = t.checkpoints[-1] if t is not None else None
    return last is not None and last["epoch"] is not None and last["epoch"] >= epochs - 1e-9


def _unchanged(t, tcfg, imprint_available: int, where: str) -> None:
    """A recorded run is reused only with the settings it was run with: else a one-line error naming them."""
    from .train.loop import settings_differ

    diff = settings_differ(tcfg, imprint_available, t.config)
    if diff:
        shown = "; ".join(f"{k}: {old!r} recorded, {new!r} now" for k, old, new in diff[:3])
        raise ValueError(
            f"{where} holds run {t.task!r} seed {t.seed} with other settings ({shown}"
            f"{'; ...' if len(diff) > 3 else ''}): give another --out (or --store), or the settings it was run with"
        )


def _data_source(data_cfg) -> tuple:
    """The scheduler's ``(loader, arguments)`` of the data (loaded once per process)."""
    return (datasets.load, {"cfg": data_cfg})


def _train_all(cfg: PictureConfig, data_cfg, data, store, tasks, out: Path) -> None:
    """Train the runs not yet recorded in ``store`` with the sweeps' scheduler: each into its shard under
    ``out/shards`` (resumable), merged into ``store`` in the order task by task, seed by seed. Each run trains
    on one torch thread, so that it computes the same whatever the core count (torch's reductions depend on
    the thread count), and ``cfg.workers`` runs train at once (0: one per usable core on a CPU): no run's
    threads wait at barriers for each other, which keeps training at its share of a machine other jobs use."""
    from ._native import usable_cores
    from ._progress import bar
    from .train.loop import imprinting_samples, resolve_device
    from .train.schedule import Job, Scheduler, job_id

    runs = [(task, seed) for task in tasks for seed in dict.fromkeys(cfg.seeds)]
    available = imprinting_samples(data.train_labels, len(data.classes))
    jobs = []
    for task, seed in runs:
        job = Job(job_id(task, seed), task, _run_config(cfg, data, seed))
        t = _recorded(store, data.eval_set, task, seed, cfg)
        if t is not None:
            _unchanged(t, job.config, available, str(store.root))
            if _reaches(t, cfg.epochs):
                continue
            if not (out / "shards" / job.id).exists():
                raise ValueError(
                    f"{store.root} holds run {task!r} seed {seed} unfinished, as an earlier taskgeom trained it "
                    "(into the store, not a shard): finish it with that version, or give another --store"
                )
        jobs.append(job)
    store.close()  # the scheduler writes the store; the caller reopens it
    if not jobs:
        print(f"{len(runs)} runs already recorded in {store.root}: nothing to train", file=sys.stderr, flush=True)
        return
    cuda = resolve_device(cfg.device).type == "cuda"
    workers = min(len(jobs), cfg.workers or (1 if cuda else usable_cores()))
    sched = Scheduler(
        _data_source(data_cfg),
        out,
        executor="processes" if workers > 1 else "inline",
        workers=workers,
        store=store.root,
        in_order=True,  # the store's order is the runs' order, whichever finished first
    )
    desc = f"training {len(jobs)} runs" + (
        f" ({len(runs) - len(jobs)} already recorded)" if len(jobs) < len(runs) else ""
    )
    if not sys.stderr.isatty():  # a log: one line now (the heartbeat lines come only every 30 s)
        print(f"{desc}, {workers} at once, into {out / 'shards'}", file=sys.stderr, flush=True)
    with bar(total=len(jobs), desc=f"{desc}, {workers} at once", unit="run") as shown:

        def finished(job, info) -> None:  # no more jobs
            shown.update(1)

        try:
            sched.run(jobs, then=finished)
        finally:
            sched.close()


def _run_config(cfg: PictureConfig, data, seed: int):
    from .train import TrainConfig

    return TrainConfig(
        method="supervised",
        arch=cfg.arch,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        checkpoints=cfg.checkpoints,
        seed=seed,
        device=cfg.device,
        imprint_samples=min(cfg.imprint_samples, len(data.train_labels)),
        imprint_head=cfg.imprint_head,
        threads=1,  # on any device: a run's bytes do not depend on the machine's cores or the workers
    )


def run(cfg: PictureConfig, data_cfg: datasets.DataConfig | None = None) -> PictureResult:
    """Train what is missing, analyse, and write the report folder; returns the analysis. Runs train in
    spawned worker processes (``cfg.workers``): a script that calls this does so under
    ``if __name__ == "__main__":``."""
    from .analysis import analyse
    from .store import PredictionStore
    from .train.schedule import refuse_in_spawned_import

    refuse_in_spawned_import()  # before anything is written

    data_cfg = data_cfg or datasets.DataConfig()
    _config.check_fields(cfg)  # the command line's rules, on every route: before anything is written
    _config.check_fields(data_cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = PredictionStore(cfg.store or out / "store", create=True)
    tasks = cfg.task_names(data_cfg.data)
    t0 = time.perf_counter()
    from .train.schedule import _load

    data = _load(_data_source(data_cfg))  # the scheduler's runs in this process use it too
    for t in tasks:
        data.task(t)  # an unknown task fails here, before training
    store.add_eval_set(data.eval_set, data.test_labels, class_names=data.classes)
    _train_all(cfg, data_cfg, data, store, tasks, out)
    store = PredictionStore(store.root)  # reopened: the scheduler merged the runs into it
    t_train = time.perf_counter() - t0
    res = analyse(store, data.eval_set, tasks, cfg.grid, device=cfg.device, n_boot=cfg.n_boot, method="supervised")
    res = dataclasses.replace(res, seconds={"training": t_train, "total": time.perf_counter() - t0})
    from ._build import build_info
    from ._provenance import code_version
    from .report import publish

    publish(res, out, _settings(cfg, data_cfg, data, tasks))  # figures, report.html, results.json
    (out / "config.json").write_text(
        json.dumps(
            {
                **_config.to_dict(cfg),
                "data": _config.to_dict(data_cfg),
                "tasks": list(tasks),
                "code": code_version(),
                "build": build_info(),
            },
            indent=2,
            default=str,
        )
    )
    return res


def _settings(cfg: PictureConfig, data_cfg, data, tasks) -> dict:
    """What the report's header lists about the run, in order."""
    from ._provenance import code_version

    code = code_version()
    commit = code.get("commit")
    return {
        "data": f"{data_cfg.data} ({data.eval_set}: {len(data.test_labels)} evaluation samples, "
        f"{len(data.train_labels)} training samples)",
        "tasks": ", ".join(tasks),
        "architecture": cfg.arch,
        "method": "supervised",
        "epochs": cfg.epochs,
        "seeds": f"{len(set(cfg.seeds))} per task ({', '.join(str(k) for k in dict.fromkeys(cfg.seeds))})",
        "batch size / peak learning rate / weight decay": f"{cfg.batch_size} / {cfg.lr:g} / {cfg.weight_decay:g}",
        "checkpoints per run / progress grid": f"{cfg.checkpoints} / {cfg.grid}",
        "imprinting head": f"{cfg.imprint_head} (from {min(cfg.imprint_samples, len(data.train_labels))} training images)",
        "code": f"taskgeom {code.get('taskgeom', '?')}, commit "
        + (f"{commit[:12]}{' (uncommitted changes)' if code.get('dirty') else ''}" if commit else "unknown"),
    }


def print_headline(res: PictureResult, out: str, title: str = "taskgeom picture", word: str = "task") -> None:
    print(
        f"\n{title}: {res.trajectories} trajectories, {res.checkpoints} checkpoints, "
        f"evaluated on {res.n} samples x {res.c} classes ({res.eval_set})"
    )
    head = getattr(res, "settings", {}).get("imprinting head")
    if head:
        print(f"imprinting head: {head}")
    unc = res.uncertainty or {}

    def ci(block, key, scale=1.0, fmt=".3f"):  # " [low, high]" of a bootstrap interval, where there is one
        iv = (unc.get(block) or {}).get(key)
        return f" [{scale * iv['low']:{fmt}}, {scale * iv['high']:{fmt}}]" if iv else ""

    if unc:
        print(f"(brackets: {100 * unc.get('level', 0.95):.0f}% bootstrap intervals, {unc.get('over', '')})")
    print(
        "explained stress: "
        + ", ".join(
            f"{k} dims {100 * v:.2f}%{ci('explained_stress', k, 100, '.1f')}" for k, v in res.explained_stress.items()
        )
    )
    print("progress on the union task (mean over seeds): at initialisation -> final checkpoint, and the gain:")
    for task, v in res.progress_on_union_task.items():
        init, gain = res.progress_at_init[task]["mean"], res.progress_gain[task]["mean"]
        print(
            f"  {task:>6}: {init:.3f}{ci('progress_at_init', task)} -> {v['mean']:.3f}"
            f"{ci('progress_on_union_task', task)}, gain {gain:+.3f}{ci('progress_gain', task)}"
        )
    print(
        f"Riemann length (eq. 6; geodesic P0 -> P* is {res.geodesic_length_P0_Pstar:.4f}), and with every 2nd / "
        "3rd checkpoint (shorter where the recorded density has not converged):"
    )
    for task, v in res.riemann_length.items():
        print(f"  {task:>6}: {v['mean']:.3f} ({v['every_2nd_checkpoint']:.3f} / {v['every_3rd_checkpoint']:.3f})")
    _print_task_distances(res, word)
    written = json.loads((Path(out) / "results.json").read_text())  # what taskgeom.publish wrote there
    print(
        f"report: {out}/{written['report']} (open in a browser), {out}/results.json, figures "
        f"{', '.join(written.get('figures', []))}; took {res.seconds['total']:.1f} s"
    )


def _print_task_distances(res: PictureResult, word: str) -> None:
    """The table of normalised distances between groups over their one shared range, and what limits it."""
    from . import figures

    td = res.task_distances
    if not td or len(td["tasks"]) < 2:
        return
    names = td["tasks"]
    print(
        f"normalised distance between {word}s (Remark 5: distance over the mean of the two tube radii), over the "
        f"progress every seed of every {word} reaches"
        + (" ({:.3f}-{:.3f}):".format(*td["progress_compared"]) if td.get("progress_compared") else ":")
    )
    print("  " + " " * 10 + "".join(f"{n[:9]:>10}" for n in names))
    for n, row in zip(names, td["normalized"]):
        print(f"  {n[:10]:>10}" + "".join(f"{v:10.2f}" for v in row))
    window = figures.compared_range(res)
    if window and window["narrow"]:
        print(
            f"  (a narrow range: {100 * window['share']:.1f}% of the progress the runs reach, from the highest start "
            f"to the lowest end of any run, so the table compares every pair near one value of progress; the report's "
            f"curves compare each {word} with '{res.reference_task}' over the progress both reach)"
        )
    values = [v for row in td["normalized"] for v in row]
    if any(math.isinf(v) for v in values):
        print("  (inf: a group with a single seed has no tube, radius 0, so any distance is infinitely many radii)")
    if any(math.isnan(v) for v in values):
        print("  (nan: no progress is reached by every seed of every group, so nothing is compared)")


def configure_parser(p) -> None:
    """``taskgeom picture``'s options (the parser itself comes from :mod:`taskgeom.cli`)."""
    p.description = __doc__.split("\n\n")[0]
    _config.add_options(p, datasets.DataConfig, group="data")
    _config.add_options(p, PictureConfig, group="picture")
    p.set_defaults(fn=_cmd)


def _cmd(args) -> int:
    cfg = _config.from_args(PictureConfig, args)
    res = run(cfg, _config.from_args(datasets.DataConfig, args))
    print_headline(res, cfg.out)
    return 0
