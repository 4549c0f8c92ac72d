"""Sweeps: a grid of training runs (tasks x methods x seeds x architectures x hyperparameters), run in this
process or as Ray tasks, each writing its own store shard, then merged into one store.

A sweep file (YAML or JSON)::

    data: {data: digits}                  # taskgeom.data.DataConfig fields
    tasks: [all, 0-4]
    methods: [supervised]
    seeds: [0, 1, 2]
    archs: [small-cnn]
    grid: {lr: [0.05, 0.1]}               # TrainConfig fields, every combination
    fixed: {epochs: 15, checkpoints: 20}  # TrainConfig fields for every run
    resources: {num_cpus: 1, num_gpus: 0} # per run (Ray; fractional GPUs share one device)

A ``preset`` in ``fixed`` (e.g. ``imagenet-resnet50``, with ``data: {data: imagefolder, data_path: ...}``)
sets the fields the sweep does not give (``methods`` and ``archs`` count as given only when listed).

Each run writes ``OUT/shards/<run>/`` (its own PredictionStore: no SQLite file is written by two
machines) and is resumable: a retried or repeated run continues from its saved state. When the runs
end, their shards are merged into ``OUT/store`` in the sweep's order (:func:`taskgeom.shards.merge_stores`).
Runs use as many torch threads as CPUs they asked for (or the ``threads`` their settings give), so a run
computes the same on either engine. The runs are scheduled
by :class:`taskgeom.train.schedule.Scheduler`, the experiments' scheduler too.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
from dataclasses import fields, replace
from pathlib import Path

from .. import config as _config
from ..data import datasets
from .config import TrainConfig, apply_preset
from .loop import check_config

__all__ = ["load_sweep", "check_spec", "expand", "run_sweep", "load_data", "SweepRun"]

_KEYS = {"data", "tasks", "methods", "seeds", "archs", "grid", "fixed", "resources"}
_RESOURCES = {"num_cpus", "num_gpus"}
#: settings the sweep's own lists give (a value in ``fixed`` or ``grid`` would be overridden without a word)
_LISTED = {"seed": "seeds", "method": "methods", "arch": "archs"}


def _unknown(key: str, known, where: str) -> ValueError:
    """A one-line error for an unknown key, with the nearest known one as a suggestion."""
    close = difflib.get_close_matches(str(key), sorted(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ValueError(f"{where}unknown key {key!r} ({hint}known: {', '.join(sorted(known))})")


def _parse(path) -> object:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (a sweep file is YAML or JSON)") from None
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            what = getattr(exc, "problem", None) or type(exc).__name__
            raise ValueError(f"{path}: not valid YAML ({where}{' '.join(str(what).split())})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}; YAML files end in .yaml)"
        ) from None


def check_spec(spec, where: str = "") -> list:
    """Raise a one-line ValueError (prefixed with ``where``) for anything wrong in a sweep: unknown keys (with
    a suggestion), values of the wrong kind, data settings or training settings outside the rules every route
    shares (:func:`taskgeom.config.check_fields`, :meth:`TrainConfig.validate`); returns the runs
    (:func:`expand`)."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}expected a mapping with keys {', '.join(sorted(_KEYS))}, got {type(spec).__name__}")
    for key in spec:
        if key not in _KEYS:
            raise _unknown(key, _KEYS, where)
    for key, kind in (("tasks", str), ("methods", str), ("archs", str), ("seeds", int)):
        v = spec.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or not v:
            raise ValueError(f"{where}{key} must be a non-empty list, e.g. {key}: [{'0' if kind is int else 'all'}]")
        for x in v:
            if not isinstance(x, kind) or isinstance(x, bool):
                raise ValueError(f"{where}{key}: {x!r} is not a {'whole number' if kind is int else 'name'}")
    for key in ("data", "grid", "fixed", "resources"):
        if spec.get(key) is not None and not isinstance(spec[key], dict):
            raise ValueError(f"{where}{key} must be a mapping, e.g. {key}: {{...}}, got {spec[key]!r}")
    names = {f.name for f in fields(TrainConfig)}
    for key in ("grid", "fixed"):
        for name, value in (spec.get(key) or {}).items():
            if name in _LISTED:
                raise ValueError(f"{where}{key}: {name} is set by the sweep's {_LISTED[name]} list; give it there")
            if name not in names:
                raise _unknown(name, names, f"{where}{key}: ")
            if key == "grid" and (not isinstance(value, list) or not value):
                raise ValueError(f"{where}grid: {name} must be a non-empty list of values, got {value!r}")
    data = spec.get("data") or {}
    data_names = {f.name for f in fields(datasets.DataConfig)}
    for name in data:
        if name not in data_names:
            raise _unknown(name, data_names, f"{where}data: ")
    try:
        _config.check_fields(datasets.DataConfig(**data))
    except ValueError as exc:
        raise ValueError(f"{where}data: {exc}") from None
    res = spec.get("resources") or {}
    for name, value in res.items():
        if name not in _RESOURCES:
            raise _unknown(name, _RESOURCES, f"{where}resources: ")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{where}resources: {name} must be a finite number >= 0, got {value!r}")
    if "num_cpus" in res and res["num_cpus"] < 1:
        raise ValueError(f"{where}resources: num_cpus must be at least 1 (threads of a run), got {res['num_cpus']!r}")
    try:
        return expand(spec)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from None


def load_sweep(path) -> dict:
    """A sweep file (YAML or JSON), checked whole (:func:`check_spec`): every error is one line naming the
    file."""
    spec = _parse(path)
    check_spec(spec, f"{path}: ")
    return spec


SweepRun = dict  # {"id", "task", "config": TrainConfig}


def expand(spec: dict) -> list[SweepRun]:
    """Every run of the grid, each with a stable id from its task and settings."""
    grid = spec.get("grid") or {}
    keys = sorted(grid)
    runs = []
    for task, method, seed, arch, values in itertools.product(
        spec.get("tasks") or ["all"],
        spec.get("methods") or ["supervised"],
        spec.get("seeds") or [0],
        spec.get("archs") or ["small-cnn"],
        itertools.product(*(grid[k] for k in keys)),
    ):
        settings = {**(spec.get("fixed") or {}), **dict(zip(keys, values))}
        cfg = TrainConfig(**{**settings, "method": method, "seed": seed, "arch": arch})
        given = {"seed"} | {k for k in ("method", "arch") if spec.get(k + "s")}
        cfg = apply_preset(cfg, keep=given | set(spec.get("fixed") or {}) | set(keys))  # a `preset` fills the rest
        try:
            check_config(cfg)  # the rules of every route (API, command line, presets)
        except ValueError as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in dict(zip(keys, values)).items())
            run = f"run task={task!r} method={method!r} seed={seed!r} arch={arch!r}" + (f" {shown}" if shown else "")
            raise ValueError(f"{run}: {exc}") from None
        settings_id = _config.to_dict(cfg)
        if cfg.threads == 1:  # the ids of runs recorded before threads were a setting (their count: 1)
            del settings_id["threads"]
        ident = json.dumps([task, settings_id], sort_keys=True)
        rid = f"{task}-{cfg.method}-{cfg.arch}-s{seed}-" + hashlib.blake2b(ident.encode(), digest_size=4).hexdigest()
        runs.append({"id": rid.replace("/", "_"), "task": task, "config": cfg})
    return runs


def load_data(**spec):
    """A sweep's data (its ``data`` mapping: :class:`taskgeom.data.DataConfig` fields); the scheduler's loader."""
    return datasets.load(datasets.DataConfig(**spec))


def run_sweep(
    spec: dict,
    out,
    engine: str = "local",
    address: str | None = None,
    progress_bar: bool = False,
    max_retries: int = 3,
    workers: int = 1,
) -> dict:
    """Run every run of ``spec`` into ``out/shards/`` and merge each into ``out/store`` as it finishes
    (:class:`taskgeom.train.schedule.Scheduler`); returns counts.

    ``workers`` (local engine): how many runs train at once, each in its own spawned process; on a GPU they
    share the device, which keeps it busy when one small model alone would leave it idle."""
    from tqdm.auto import tqdm

    from .schedule import Job, Scheduler, _load

    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    runs = check_spec(spec)  # every run's settings checked before anything is written
    data_spec = dict(spec.get("data") or {})
    res = dict(spec.get("resources") or {})
    threads = int(res.get("num_cpus", 1) or 1)  # the threads of a run, unless its settings give them
    given = "threads" in (spec.get("fixed") or {}) or "threads" in (spec.get("grid") or {})
    jobs = [Job(r["id"], r["task"], r["config"] if given else replace(r["config"], threads=threads)) for r in runs]
    if engine == "local" and workers == 1:
        data = _load((load_data, data_spec))  # loaded once: the runs in this process use it too
        for run in runs:  # an unknown task fails before any run is trained
            data.task(run["task"])
    executor = "ray" if engine == "ray" else "processes" if workers > 1 else "inline"
    sched = Scheduler(
        (load_data, data_spec),
        out,
        executor=executor,
        workers=len(jobs) if engine == "ray" else workers,  # Ray places runs by their resources
        address=address,
        resources=res,
        max_retries=max_retries,
        in_order=True,  # the store in the sweep's order, as many workers as there are
    )

    def finished(job, info) -> None:
        bar.update(1)

    with tqdm(total=len(jobs), desc="sweep runs", unit="run", disable=not progress_bar) as bar:
        try:
            sched.run(jobs, then=finished)
        finally:
            sched.close()
    return {"runs": len(runs), **sched.merged}
