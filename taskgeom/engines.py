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

import contextlib
import logging
import math
import os
import socket

from ._checks import check_choice, check_float, check_int

__all__ = ["ENGINES", "run_tiles", "init_ray", "EngineError", "CONNECT_TIMEOUT"]

ENGINES = ("local", "ray")

#: Seconds allowed to reach a Ray cluster named by an address (``TASKGEOM_RAY_CONNECT_TIMEOUT`` overrides).
CONNECT_TIMEOUT = 5.0

# the HTTP/2 client preface and an empty SETTINGS frame: a gRPC server (Ray's GCS, Ray client) answers
# with a SETTINGS frame at once
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


class EngineError(RuntimeError):
    """The engine could not start or reach its cluster (a one-line message)."""


def _connect_timeout(timeout) -> float:
    if timeout is None:
        env = os.environ.get("TASKGEOM_RAY_CONNECT_TIMEOUT")
        if env is None:
            return CONNECT_TIMEOUT
        try:
            timeout = float(env)
        except ValueError:
            raise EngineError(f"TASKGEOM_RAY_CONNECT_TIMEOUT={env!r}: expected a number of seconds") from None
    return check_float(timeout, "connect_timeout", positive=True)


def _probe(address: str, timeout: float) -> None:
    """Check, within ``timeout`` seconds, that ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) accepts a
    connection and answers a gRPC (HTTP/2) handshake, so that ``ray.init`` is never left retrying for
    minutes against nothing. A one-line :class:`EngineError` otherwise."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EngineError(f"address {address!r}: expected HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                got = sock.recv(9 - len(head))
                if not got:
                    break
                head += got
    except socket.timeout:
        raise EngineError(f"cannot reach a Ray cluster at {address}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise EngineError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None
    if len(head) < 9 or head[3] != 0x4:
        raise EngineError(f"{address} answers, but not as a Ray cluster (no gRPC handshake within {timeout:g} s)")


def init_ray(address: str | None = None, connect_timeout: float | None = None, **kwargs):
    """Start (or join, with ``address``) Ray unless it is running; returns the ``ray`` module.

    Joining a cluster is bounded in time: the address must accept a connection and answer a gRPC
    handshake within ``connect_timeout`` seconds (default :data:`CONNECT_TIMEOUT`, or the environment's
    ``TASKGEOM_RAY_CONNECT_TIMEOUT``), and any failure to start or join raises a one-line
    :class:`EngineError`; Ray's own logs are kept off the driver's terminal.

    Workers are given an empty working directory: otherwise Ray puts the driver's current directory first
    on their ``sys.path``, and started from a source checkout they would import its uncompiled
    ``taskgeom`` instead of the installed one. (Paths sent to workers are therefore absolute.)"""
    timeout = _connect_timeout(connect_timeout)
    if address is not None and not isinstance(address, str):
        raise EngineError(f"address must be a string (HOST:PORT), got {type(address).__name__}")
    # Ray's own retries bounded by the same time (about one attempt a second; read when Ray starts a
    # driver), unless the user set them
    os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(max(1, math.ceil(timeout))))
    os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", str(max(1, math.ceil(timeout))))
    os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", str(max(1, math.ceil(timeout))))
    try:
        import ray
    except ImportError as exc:
        raise EngineError("engine='ray' needs Ray: pip install 'taskgeom[ray]'") from exc
    if ray.is_initialized():
        return ray
    if address not in (None, "auto", "local"):
        _probe(address, timeout)
    import tempfile

    empty = tempfile.mkdtemp(prefix="taskgeom-ray-")
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    kwargs.setdefault("logging_level", logging.ERROR)
    try:
        with _quiet_stderr():  # Ray's C++ core writes its retries to file descriptor 2
            ray.init(address=address, runtime_env={"working_dir": empty}, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; the user gets one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"join the Ray cluster at {address}" if address not in (None, "local") else "start Ray"
        raise EngineError(f"cannot {where}: {detail}") from None
    return ray


@contextlib.contextmanager
def _quiet_stderr():
    """File descriptor 2 sent to a temporary file while Ray starts (its logs are not the user's error)."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


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
    connect_timeout: float | None = None,
) -> int:
    """Compute every unfinished tile of ``dm``; returns how many were computed.

    ``num_cpus`` (> 0) and ``num_gpus`` (>= 0) are Ray's resource requests per tile (fractions allowed);
    ``max_retries`` (an integer >= 0) its retries of a tile whose worker died; ``threads`` the kernel's
    OpenMP threads (an integer >= 1, default ``num_cpus`` rounded down on Ray); ``connect_timeout``: see
    :func:`init_ray`."""
    from .tiled import compute_tile

    check_choice(engine, "engine", ENGINES)
    num_cpus = check_float(num_cpus, "num_cpus", positive=True)
    num_gpus = check_float(num_gpus, "num_gpus", nonnegative=True)
    max_retries = check_int(max_retries, "max_retries", minimum=0)
    if threads is not None:
        threads = check_int(threads, "threads", minimum=1)
    if connect_timeout is not None:
        connect_timeout = check_float(connect_timeout, "connect_timeout", positive=True)
    tasks = dm.tasks()
    if not tasks:
        return 0
    if engine == "local":
        from tqdm.auto import tqdm

        for task in tqdm(tasks, desc="distance tiles", unit="tile", disable=not progress_bar):
            compute_tile(dm, models, task, divergence, backend=backend, threads=threads)
        return len(tasks)
    return _run_ray(
        dm,
        models,
        tasks,
        divergence,
        address,
        backend,
        threads,
        num_cpus,
        num_gpus,
        max_retries,
        progress_bar,
        connect_timeout,
    )


def _ray_tile(
    spec: dict, path: str, task, divergence: str, backend: str, threads: int | None, fault_marker: str | None = None
) -> tuple:
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
    dm,
    models,
    tasks,
    divergence,
    address,
    backend,
    threads,
    num_cpus,
    num_gpus,
    max_retries,
    progress_bar,
    connect_timeout=None,
) -> int:
    spec = models.spec()
    ray = init_ray(address, connect_timeout=connect_timeout)
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(_ray_tile)
    threads = threads if threads is not None else max(1, int(num_cpus))
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
