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
machines) and is resumable: a retried or repeated run continues from its saved state. When every run is
done the shards are merged into ``OUT/store`` (:func:`taskgeom.shards.merge_stores`). Runs use as many
torch threads as CPUs they asked for, so a run computes the same on either engine.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import fields
from pathlib import Path

from .. import config as _config
from ..data import datasets
from .config import TrainConfig, apply_preset

__all__ = ["load_sweep", "expand", "run_sweep", "Run"]

_KEYS = {"data", "tasks", "methods", "seeds", "archs", "grid", "fixed", "resources"}


def load_sweep(path) -> dict:
    """A sweep file (YAML or JSON), checked for unknown keys and TrainConfig fields."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        spec = yaml.safe_load(text)
    else:
        spec = json.loads(text)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping with keys {sorted(_KEYS)}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    names = {f.name for f in fields(TrainConfig)}
    for key in ("grid", "fixed"):
        bad = set(spec.get(key) or {}) - names
        if bad:
            raise ValueError(f"{path}: {key}: {sorted(bad)} are not TrainConfig fields")
    return spec


Run = dict  # {"id", "task", "config": TrainConfig}


def expand(spec: dict) -> list[Run]:
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
        cfg = TrainConfig(
            **{**(spec.get("fixed") or {}), **dict(zip(keys, values)), "method": method, "seed": seed, "arch": arch}
        )
        given = {"seed"} | {k for k in ("method", "arch") if spec.get(k + "s")}
        cfg = apply_preset(cfg, keep=given | set(spec.get("fixed") or {}) | set(keys))  # a `preset` fills the rest
        ident = json.dumps([task, _config.to_dict(cfg)], sort_keys=True)
        rid = f"{task}-{cfg.method}-{cfg.arch}-s{seed}-" + hashlib.blake2b(ident.encode(), digest_size=4).hexdigest()
        runs.append({"id": rid.replace("/", "_"), "task": task, "config": cfg})
    return runs


def _run_one(data_spec: dict, run: Run, shard: str, threads: int, fault_marker: str | None = None) -> str:
    """Train one run into its shard (resuming it if it was started before); returns the shard path."""
    import torch

    from ..store import PredictionStore
    from .loop import train

    if fault_marker:  # fault injection for the tests: the first run to create the marker dies, once
        try:
            os.close(os.open(fault_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os._exit(1)
        except FileExistsError:
            pass
    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        data = _data(data_spec)
        data.task(run["task"])  # an unknown task fails before its store is created
        store = PredictionStore(shard, create=True)
        store.add_eval_set(data.eval_set, data.test_labels, class_names=data.classes)
        train(
            run["config"],
            data.task(run["task"]),
            data.train,
            data.test,
            store,
            data.eval_set,
            run["task"],
            progress_bar=False,
        )
        store.close()
    finally:
        torch.set_num_threads(old)
    return shard


_DATA_CACHE: dict = {}


def _data(data_spec: dict):
    key = json.dumps(data_spec, sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = datasets.load(datasets.DataConfig(**data_spec))
    return _DATA_CACHE[key]


def run_sweep(
    spec: dict,
    out,
    engine: str = "local",
    address: str | None = None,
    progress_bar: bool = False,
    max_retries: int = 3,
    workers: int = 1,
) -> dict:
    """Run every run of ``spec`` into ``out/shards/`` and merge them into ``out/store``; returns counts.

    ``workers`` (local engine): how many runs train at once, each in its own spawned process; on a GPU they
    share the device, which keeps it busy when one small model alone would leave it idle."""
    from ..shards import merge_stores

    out = Path(out).resolve()  # absolute: Ray workers run elsewhere
    (out / "shards").mkdir(parents=True, exist_ok=True)
    runs = expand(spec)
    data_spec = dict(spec.get("data") or {})
    datasets.DataConfig(**data_spec)  # unknown data fields fail here, before any run starts
    res = dict(spec.get("resources") or {})
    threads = int(res.get("num_cpus", 1) or 1)
    fault = os.environ.get("TASKGEOM_FAULT_KILL_WORKER_ONCE")
    shards = [str(out / "shards" / r["id"]) for r in runs]
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if engine == "local" and int(workers) > 1:
        _in_processes(data_spec, runs, shards, threads, int(workers), progress_bar)
    elif engine == "local":
        from tqdm.auto import tqdm

        for run, shard in tqdm(list(zip(runs, shards)), desc="sweep runs", unit="run", disable=not progress_bar):
            _run_one(data_spec, run, shard, threads)
    elif engine == "ray":
        _on_ray(data_spec, runs, shards, res, threads, address, max_retries, fault)
    else:
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    counts = merge_stores(shards, out / "store")
    return {"runs": len(runs), **counts}


def _in_processes(data_spec, runs, shards, threads, workers, progress_bar) -> None:
    """The local engine with ``workers`` spawned processes (each loads the data once, then trains runs)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold a CUDA context
    with ProcessPoolExecutor(max_workers=min(workers, len(runs)) or 1, mp_context=ctx) as pool:
        futures = [pool.submit(_run_one, data_spec, run, shard, threads) for run, shard in zip(runs, shards)]
        for f in tqdm(as_completed(futures), total=len(futures), desc="sweep runs", disable=not progress_bar):
            f.result()  # a failed run fails the sweep (its shard stays, resumable)


def _on_ray(data_spec, runs, shards, res, threads, address, max_retries, fault) -> None:
    from ..engines import init_ray

    ray = init_ray(address)
    remote = ray.remote(num_cpus=res.get("num_cpus", 1), num_gpus=res.get("num_gpus", 0), max_retries=max_retries)(
        _run_one
    )
    ray.get([remote.remote(data_spec, run, shard, threads, fault) for run, shard in zip(runs, shards)])
