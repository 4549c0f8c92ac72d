"""Data options shared by the experiment scripts: built-in digits (default) or real CIFAR-10, through
taskgeom's one data layer (taskgeom.data.datasets), so that experiments, ``taskgeom train`` and
``taskgeom picture`` name and share evaluation sets the same way."""

from __future__ import annotations

import dataclasses
import os

from taskgeom import config
from taskgeom.data import datasets
from taskgeom.imprinting import HEADS
from taskgeom.store import PredictionStore
from taskgeom.train.schedule import Job, Scheduler, job_id
from taskgeom.train.sweep import load_data

#: the two disjoint sub-tasks used where an experiment needs them, per dataset (on CIFAR-10 the paper's
#: binary tasks of Results 6 and 7)
SUBTASKS = {"digits": ("0-4", "5-9"), "cifar10": ("airplane-automobile", "bird-cat")}


def add_data_arguments(ap) -> None:
    config.add_options(ap, datasets.DataConfig, group="data")
    ap.set_defaults(data_path="../shared/data/cifar10")
    ap.add_argument("--arch", default="small-cnn", help="network (default: %(default)s)")
    ap.add_argument("--batch-size", type=config.positive_int, default=64, help="samples per batch (default: 64)")
    ap.add_argument(
        "--imprint-samples",
        type=config.positive_int,
        default=5000,
        help="training images used to imprint each checkpoint onto the union task (default: 5000)",
    )
    ap.add_argument(
        "--imprint-head",
        choices=HEADS,
        default="cosine-ml",
        help="imprinted head: cosine (eq. 7 as printed), cosine-ml (maximum-likelihood temperature) or "
        "euclidean (the authors' code) (default: %(default)s)",
    )


def load(args):
    """(train, test, class names, tasks, evaluation set name, task-name translation) for ``args``."""
    data = datasets.load(config.from_args(datasets.DataConfig, args))
    rename = dict(zip(SUBTASKS["digits"], SUBTASKS[args.data]))
    return data.train, data.test, data.classes, data.tasks, data.eval_set, (lambda t: rename.get(t, t))


def scheduler(args, out) -> Scheduler:
    """The one scheduler of training runs (:class:`taskgeom.train.schedule.Scheduler`, as ``taskgeom sweep``
    and the family scripts use it) for an experiment's runs: in this process, each run into its own shard
    ``out/shards/<job>``, merged into ``out/store`` (the experiment's store) as it finishes."""
    spec = dataclasses.asdict(config.from_args(datasets.DataConfig, args))
    return Scheduler((load_data, spec), out, executor="inline")


def job(label: str, task: str, cfg, start_from: tuple | None = None) -> Job:
    """One run, recorded under ``label``, with this process's torch threads (what an experiment that trained
    in its own loop used): its id is the label and the seed, made safe as a folder name."""
    import torch

    cfg = dataclasses.replace(cfg, threads=torch.get_num_threads())
    return Job(job_id(label, cfg.seed), task, cfg, label=label, start_from=start_from)


def provenance(args, leave_out=("out",)) -> dict:
    """What an experiment's JSON records beside its numbers: its settings (every option but ``leave_out``,
    the output folder by default) and the code's version (:func:`taskgeom._provenance.code_version`: package, git commit, and
    whether the tree had uncommitted changes)."""
    from taskgeom._provenance import code_version

    settings = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in vars(args).items() if k not in leave_out}
    return {"settings": settings, "code": code_version()}


def trained(sched: Scheduler, jobs: dict) -> tuple[PredictionStore, dict]:
    """The experiment's store (read-only; the caller closes it) and, for each name of ``jobs`` (name -> jobs),
    the trained trajectories of its jobs in their order."""
    store = PredictionStore(sched.store, readonly=True)
    return store, {name: [store.trajectory(sched.done[j.id]["name"]) for j in js] for name, js in jobs.items()}
