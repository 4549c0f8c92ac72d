"""``taskgeom train``: train runs on a named task and record their imprinted predictions in a store."""

from __future__ import annotations

import dataclasses
import os
import time

from .. import _cliutil
from .. import config as _config
from ..data import datasets
from .config import CONCERNS, TrainConfig, apply_preset, concern_of, foreign_setting, owners

__all__ = ["configure_train", "configure_sweep"]


def configure_train(p) -> None:
    """``taskgeom train``'s options (the parser itself comes from :mod:`taskgeom.cli`)."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument(
        "--task",
        default="all",
        help="a named task (digits: all, 0-4, 5-9, even, odd; cifar10: all, "
        "vehicles, animals, mammals, pets, airplane-automobile, bird-cat, "
        "ship-truck; imagefolder, beton: all), a task of --tasks-file, or a random class subset "
        "random<k>-s<seed> (k classes drawn with the seed, e.g. random333-s0, the paper's random 333) "
        "(default: %(default)s)",
    )
    p.add_argument("--store", default="taskgeom-store", help="PredictionStore folder (default: %(default)s)")
    p.add_argument(
        "--seeds", type=_config.nonnegative_int, nargs="+", default=[0], help="one run per seed (default: 0)"
    )
    p.add_argument(
        "--new-trajectory",
        action="store_true",
        help="start a separate trajectory even if this run was recorded before with other settings "
        "(default: resume the existing one, which must have the same settings)",
    )
    _config.add_options(p, datasets.DataConfig, group="data")
    titles = {_section(f.name) for f in dataclasses.fields(TrainConfig) if f.name != "seed"}
    order = [t for t in ("training: " + c for c in CONCERNS) if t in titles]  # then the methods' own settings
    order += sorted(titles - set(order))
    _config.add_options(p, TrainConfig, exclude=("seed",), group=_section, order=order)
    _track_explicit(p, {f.name for f in dataclasses.fields(TrainConfig)})
    p.set_defaults(fn=_cmd)


def _section(name: str) -> str:
    """The help section of a training option: what it concerns (taskgeom.train.config.CONCERNS), or the
    methods it belongs to."""
    return "training: " + concern_of(name)


def _explicit_call(self, parser, namespace, values, option_string=None):
    type(self).__mro__[1].__call__(self, parser, namespace, values, option_string)
    namespace._explicit = getattr(namespace, "_explicit", frozenset()) | {self.dest}


def _track_explicit(parser, names) -> None:
    """Make the options of ``names`` record, when given, their name in ``args._explicit`` (so that a preset
    overrides defaults only, wherever ``--preset`` stands on the command line)."""
    for action in parser._actions:
        if action.dest in names:
            base = type(action)
            action.__class__ = type(f"_Explicit{base.__name__}", (base,), {"__call__": _explicit_call})


def configure_sweep(p) -> None:
    """``taskgeom sweep``'s options."""
    p.description = (
        "Run every run of a sweep file (YAML or JSON; see taskgeom.train.sweep) into "
        "OUT/shards/<run>/ and merge them into OUT/store."
    )
    p.add_argument("sweep", help="the sweep file")
    p.add_argument("--out", default="taskgeom-sweep", help="output folder (default: %(default)s)")
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="run in this process, or each run as a Ray task (default: %(default)s)",
    )
    p.add_argument("--address", default=None, help="ray: the cluster's address (default: start a local Ray)")
    p.add_argument(
        "--workers",
        type=_cliutil.positive_int,
        default=1,
        help="local: runs trained at once, each in its own process (several small models share one GPU) "
        "(default: %(default)s)",
    )
    p.set_defaults(fn=_cmd_sweep)


def _cmd_sweep(args) -> int:
    import sys

    from .sweep import load_sweep, run_sweep

    res = run_sweep(
        load_sweep(args.sweep),
        args.out,
        engine=args.engine,
        address=args.address,
        progress_bar=sys.stderr.isatty(),
        workers=args.workers,
    )
    print(
        f"{res['runs']} runs ({args.engine}) merged into {args.out}/store: {res['trajectories']} trajectories, "
        f"{res['checkpoints_added']} checkpoints added"
    )
    return 0


def settings(args) -> tuple:
    """The data settings and one TrainConfig per seed of parsed ``taskgeom train`` options, each checked with
    the rules every route shares (:meth:`TrainConfig.validate`, presets applied first); a setting out of its
    range is a usage error (exit status 2) naming the option."""
    from .loop import check_config

    try:
        data_cfg = _config.from_args(datasets.DataConfig, args)
        _config.check_fields(data_cfg)
        keep = getattr(args, "_explicit", ())
        cfgs = [apply_preset(_config.from_args(TrainConfig, args, seed=seed), keep=keep) for seed in args.seeds]
        for name in sorted(keep):  # an option given for another method, even at its default value
            if owners(name) and cfgs[0].method not in owners(name):
                raise foreign_setting(name, cfgs[0].method)
        for cfg in cfgs:
            check_config(cfg)
    except ValueError as exc:
        raise _cliutil.UsageError(_cliutil.one_line(exc)) from exc
    return data_cfg, cfgs


def _cmd(args) -> int:
    from ..store import PredictionStore
    from . import distributed
    from .loop import train
    from .state import check_state_file

    data_cfg, cfgs = settings(args)  # settings out of range fail first, before the data are read
    data = datasets.load(data_cfg)
    data.task(args.task)  # an unknown task fails here, before anything is written
    if cfgs[0].init_from:
        check_state_file(cfgs[0].init_from)  # so does a state file that is not one
    store = PredictionStore(args.store, create=True)
    store.add_eval_set(data.eval_set, data.test_labels, class_names=data.classes)
    for cfg in cfgs:
        t0 = time.perf_counter()
        traj = train(
            cfg, data.task(args.task), data.train, data.test, store, data.eval_set, args.task, new=args.new_trajectory
        )
        if int(os.environ.get("RANK", "0")) != 0:
            continue  # under torchrun, rank 0 reports
        last = traj.checkpoints[-1]
        head = f", head accuracy {last['head_accuracy']:.4f}" if "head_accuracy" in last else ""
        print(
            f"{traj.name}: {len(traj)} checkpoints, imprinted accuracy on all classes {last['accuracy']:.4f}"
            f"{head}, {time.perf_counter() - t0:.1f} s"
        )
    distributed.finish()  # every rank closes the process group before the interpreter exits
    return 0
