"""Where the tiles of an out-of-core matrix are computed: in this process (``engine="local"``) or as Ray
tasks over a cluster (``engine="ray"``, the ``ray`` extra).

With Ray, each unfinished tile is one task that reopens the model set from its spec (a ``.npy`` path or
a store folder on a filesystem every node sees), computes the tile's missing regions and writes them
into the shared matrix file (disjoint byte ranges) before marking the tile finished. Tasks ask for
``num_cpus`` CPUs (the kernel's OpenMP threads) and ``num_gpus`` GPUs (fractions allowed) and are
retried when their worker dies; a retried tile recomputes the same values, so the result equals the
local engine's.
"""

from __future__ import annotations

__all__ = ["ENGINES", "run_tiles", "init_ray"]

ENGINES = ("local", "ray")


def init_ray(address: str | None = None, **kwargs):
    """Start (or join, with ``address``) Ray unless it is running; returns the ``ray`` module.

    Workers are given an empty working directory: otherwise Ray puts the driver's current directory first
    on their ``sys.path``, and started from a source checkout they would import its uncompiled
    ``taskgeom`` instead of the installed one. (Paths sent to workers are therefore absolute.)"""
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("engine='ray' needs Ray: pip install 'taskgeom[ray]'") from exc
    if not ray.is_initialized():
        import tempfile

        empty = tempfile.mkdtemp(prefix="taskgeom-ray-")
        kwargs.setdefault("include_dashboard", False)
        kwargs.setdefault("log_to_driver", False)
        ray.init(address=address, runtime_env={"working_dir": empty}, **kwargs)
    return ray


def run_tiles(
    dm,
    models,
    divergence: str,
    engine: str = "local",
    address: str | None = None,
    progress_bar: bool = False,
    backend: str = "auto",
    threads: int | None = None,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_retries: int = 3,
) -> int:
    """Compute every unfinished tile of ``dm``; returns how many were computed."""
    from .tiled import compute_tile

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    tasks = dm.tasks()
    if not tasks:
        return 0
    if engine == "local":
        from tqdm.auto import tqdm

        for task in tqdm(tasks, desc="distance tiles", unit="tile", disable=not progress_bar):
            compute_tile(dm, models, task, divergence, backend=backend, threads=threads)
        return len(tasks)
    return _run_ray(
        dm, models, tasks, divergence, address, backend, threads, num_cpus, num_gpus, max_retries, progress_bar
    )


def _ray_tile(
    spec: dict, path: str, task, divergence: str, backend: str, threads: int | None, fault_marker: str | None = None
) -> tuple:
    import os

    from .modelsets import open_models
    from .tiled import DistanceMatrix, compute_tile

    # fault injection for the tests (TASKGEOM_FAULT_KILL_WORKER_ONCE in the driver's environment): the first
    # task to create the marker file kills its worker, once
    marker = fault_marker
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            os._exit(1)
        except FileExistsError:
            pass

    compute_tile(DistanceMatrix(path), open_models(spec), task, divergence, backend=backend, threads=threads)
    return task.I, task.J


def _run_ray(
    dm, models, tasks, divergence, address, backend, threads, num_cpus, num_gpus, max_retries, progress_bar
) -> int:
    spec = models.spec()
    ray = init_ray(address)
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(_ray_tile)
    threads = threads if threads is not None else max(1, int(num_cpus))
    import os

    fault = os.environ.get("TASKGEOM_FAULT_KILL_WORKER_ONCE")
    pending = [remote.remote(spec, str(dm.path), t, divergence, backend, threads, fault) for t in tasks]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(pending), desc="distance tiles (ray)", unit="tile", disable=not progress_bar)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)  # raises the task's error, if any, after its retries
        bar.update(len(done))
    bar.close()
    return len(tasks)
