"""The one scheduler of training runs, for sweeps (:func:`taskgeom.train.sweep.run_sweep`) and the experiments
(the CIFAR-10 family scripts): jobs -> an executor -> each run's own store shard, merged into one store as
the run finishes.

A :class:`Job` is one run: its task, its settings, the label it is recorded under, and optionally the run
and checkpoint it fine-tunes from (``start_from``: it waits while that run trains, is skipped when that run
was not trained, and gets ``init_from`` filled in from it). Jobs are taken seed by seed (every group's first
seed before any group's second; otherwise in the order given), ``workers`` at once, by one of three
executors:

* ``"inline"``: in this process, one after the other;
* ``"processes"``: ``workers`` spawned processes (each loads the data once; on a GPU they share it), which
  can be stopped at a deadline;
* ``"ray"``: Ray tasks (``resources`` per run; a killed worker's run is retried by Ray).

With a ``deadline`` (a :func:`time.perf_counter` value) a job is skipped when its group's finished runs took
longer on average than the time left (:func:`budget_skip`), and runs still training at the deadline are
stopped (processes and Ray; their shards are never merged; an inline run ends before the deadline is seen).
A worker process that dies (killed, out of memory) fails the schedule with an error, never a hang. Every run
computes the same whatever the executor: it trains on its config's ``threads`` torch threads. ``then(job, info)``, called as each run finishes, may return
more jobs (e.g. fine-tuning from checkpoints chosen by the run's progress).
"""

from __future__ import annotations

import math
import os
import re
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .config import TrainConfig
from .loop import checkpoint_state

__all__ = ["Job", "Scheduler", "WorkerDied", "budget_skip", "checkpoint_state", "job_id"]


@dataclass(frozen=True)
class Job:
    """One training run of a schedule.

    ``id`` names its shard (unique in a schedule); ``label`` is the trajectory's name in the store (default:
    the task) and ``group`` pools runs for the budget's estimates (default: the label); ``start_from`` is
    ``(id of another job, checkpoint index)`` to fine-tune from: the scheduler fills the config's ``init_from``
    (its method is ``finetune``; the job it starts from keeps its states)."""

    id: str
    task: str
    config: TrainConfig
    label: str | None = None
    group: str | None = None
    start_from: tuple[str, int] | None = None

    @property
    def name(self) -> str:
        return self.label if self.label is not None else self.task

    @property
    def pool(self) -> str:
        return self.group if self.group is not None else self.name


def job_id(label: str, seed: int) -> str:
    """A job id from its label and seed, safe as a folder name (``"all layer-norm"``, 0 -> ``all-layer-norm-s0``)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-") + f"-s{seed}"


def budget_skip(durations: list, left: float) -> str | None:
    """Why a run is not started with ``left`` seconds to go, given how long its group's finished runs took
    (their mean is its estimate); None: start it. A group's first run always starts while time is left."""
    if left <= 0:
        return "no time was left"
    if durations and (est := sum(durations) / len(durations)) > left:
        return f"its group's runs took {est:.1f} s, {left:.1f} s were left"
    return None


# --- what runs in a worker (or in this process) -----------------------------------------------------------

_LOADED: dict = {}  # (loader, its arguments) -> the data, loaded once per process
_RUNS = [0]  # runs this process has trained (its first pays the start-up: CUDA, cuDNN's search)


def _load(data: tuple):
    loader, kwargs = data
    key = (f"{loader.__module__}.{loader.__qualname__}", repr(sorted(kwargs.items())))
    if key not in _LOADED:
        _LOADED[key] = loader(**kwargs)
    return _LOADED[key]


def _ignore_interrupts() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it stops the workers


def _train_job(data: tuple, job: Job, shard: str, fault_marker: str | None = None) -> dict:
    """Train ``job`` into its own store ``shard`` (resuming it when the shard has it); returns what it did."""
    from ..store import PredictionStore
    from .loop import train

    if fault_marker:  # fault injection for the tests: the first run to create the marker dies, once
        try:
            os.close(os.open(fault_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os._exit(1)
        except FileExistsError:
            pass
    warm = _RUNS[0] > 0
    _RUNS[0] += 1
    loaded = _load(data)
    t0 = time.perf_counter()  # the run's seconds: not the data's loading (once per process)
    classes = loaded.task(job.task)  # an unknown task fails before the shard is created
    store = PredictionStore(shard, create=True)
    try:
        store.add_eval_set(loaded.eval_set, loaded.test_labels, class_names=loaded.classes)
        before = sum(len(t) for t in store.select())
        traj = train(
            job.config, classes, loaded.train, loaded.test, store, loaded.eval_set, job.name, progress_bar=False
        )
        state_dir = job.config.state_dir or str(store.root / "state")
        return {
            "name": traj.name,
            "id": traj.id,
            "checkpoints": len(traj),
            "accuracy": traj.checkpoints[-1].get("accuracy", float("nan")),
            "seconds": time.perf_counter() - t0,
            "warm": warm,
            "resumed": before == len(traj),  # the shard held the whole run: nothing trained now
            "state_dir": str(state_dir),
        }
    finally:
        store.close()


# --- executors: submit, poll, stop ------------------------------------------------------------------------


class _Done:
    """A run finished at submission (the inline executor)."""

    def __init__(self, fn, args):
        try:
            self.value, self.error = fn(*args), None
        except Exception as exc:  # raised by get(), as the other executors do
            self.value, self.error = None, exc

    def ready(self) -> bool:
        return True

    def get(self):
        if self.error is not None:
            raise self.error
        return self.value


class _Inline:
    def submit(self, fn, args):
        return _Done(fn, args)

    def stop(self, kill: bool) -> None:
        pass


class _Future:
    def __init__(self, future):
        self.future = future

    def ready(self) -> bool:
        return self.future.done()

    def get(self):
        try:
            return self.future.result()
        except BrokenProcessPool:
            raise WorkerDied(
                "a training worker process died (killed, out of memory, or a script that starts training at its "
                "top level without if __name__ == '__main__':, which every spawned worker runs again; its own "
                "error, if any, is above)"
            ) from None


def refuse_in_spawned_import() -> None:
    """Exit with one line in a spawned worker that is still importing the caller's script (multiprocessing's
    own test for it): the script's top level, run again there, would start training again."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(
            "taskgeom: a spawned worker process ran the script's top level, which trains again: put the script's "
            "calls under if __name__ == '__main__':"
        )


class WorkerDied(BrokenProcessPool):
    """A worker process died while it trained (a BrokenProcessPool, with what to look for)."""


class _Processes:
    def __init__(self, workers: int):
        self.workers, self.pool = workers, None

    def submit(self, fn, args):
        import multiprocessing

        refuse_in_spawned_import()
        if self.pool is None:
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold a CUDA context
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_ignore_interrupts)
        return _Future(self.pool.submit(fn, *args))

    def stop(self, kill: bool) -> None:
        if self.pool is None:
            return
        procs = list((getattr(self.pool, "_processes", None) or {}).values())
        if kill:
            for p in procs:
                p.kill()
        self.pool.shutdown(wait=not kill, cancel_futures=kill)
        for p in procs:
            p.join(timeout=10)
        self.pool = None


class _RayRef:
    def __init__(self, ray, ref):
        self.ray, self.ref = ray, ref

    def ready(self) -> bool:
        done, _ = self.ray.wait([self.ref], timeout=0)
        return bool(done)

    def get(self):
        return self.ray.get(self.ref)


class _Ray:
    def __init__(self, address, resources: dict, max_retries: int):
        from ..engines import init_ray

        self.ray = init_ray(address)
        opts = {"num_cpus": resources.get("num_cpus", 1), "num_gpus": resources.get("num_gpus", 0)}
        self.remote = self.ray.remote(max_retries=max_retries, **opts)(_train_job)
        self.refs: list = []

    def submit(self, fn, args):
        fault = os.environ.get("TASKGEOM_FAULT_KILL_WORKER_ONCE")  # the tests' killed worker
        ref = _RayRef(self.ray, self.remote.remote(*args, fault))
        self.refs.append(ref.ref)
        return ref

    def stop(self, kill: bool) -> None:
        if kill:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)


EXECUTORS = ("inline", "processes", "ray")


class Scheduler:
    """Train jobs into ``out/shards/<id>/`` and merge each finished run into ``store`` (default ``out/store``).

    ``data`` is ``(loader, keyword arguments)``: a module-level function that returns a
    :class:`taskgeom.data.Data` (each worker process calls it once). After :meth:`run`, :attr:`done` maps
    each trained job's id to what its run did (name, id, checkpoints, accuracy, seconds, whether it only
    resumed, its state folder) and :attr:`skipped` lists the jobs not trained, each with why. With
    ``in_order`` the shards are merged when :meth:`run` ends, in the jobs' order (a store whose order does not
    depend on which run finished first), not as each run finishes; a schedule stopped early (interrupted, a
    run that failed) merges the finished runs up to the first that did not finish, and a rerun the rest."""

    def __init__(
        self,
        data: tuple,
        out,
        executor: str = "inline",
        workers: int = 1,
        store=None,
        deadline: float = math.inf,
        log: Callable[[str], None] | None = None,
        address: str | None = None,
        resources: dict | None = None,
        max_retries: int = 3,
        in_order: bool = False,
    ):
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
        self.data, self.out = data, Path(out).resolve()  # absolute: workers run elsewhere
        self.store = Path(store).resolve() if store is not None else self.out / "store"
        self.workers = 1 if executor == "inline" else workers
        self.deadline, self.log = deadline, log or (lambda msg: None)
        if executor == "inline":
            self._executor = _Inline()
        elif executor == "processes":
            self._executor = _Processes(workers)
        else:
            self._executor = _Ray(address, resources or {}, max_retries)
        self.done: dict[str, dict] = {}
        self.jobs: dict[str, Job] = {}
        self.skipped: list[dict] = []
        self.merged = {"shards": 0, "trajectories": 0, "checkpoints_added": 0}
        self.in_order, self._merged = in_order, set()

    def shard(self, job: Job) -> Path:
        return self.out / "shards" / job.id

    def _skip(self, job: Job, why: str) -> None:
        self.skipped.append({"id": job.id, "job": job, "why": why})
        self.log(f"skipped {job.name} seed {job.config.seed}: {why}")

    def _estimates(self, group: str) -> list:
        """Seconds of ``group``'s finished runs that say how long the next takes: those that trained, and of
        them those that were not their worker's first (which pays the start-up) when there are any."""
        runs = [d for i, d in self.done.items() if self.jobs[i].pool == group and not d["resumed"]]
        warm = [d["seconds"] for d in runs if d["warm"]]
        return warm or [d["seconds"] for d in runs]

    def _prepared(self, job: Job) -> Job:
        """``job`` with ``init_from`` filled from the run it starts from."""
        if job.start_from is None:
            return job
        src, k = job.start_from
        d = self.done[src]
        start = checkpoint_state(d["state_dir"], d["id"], k)
        return replace(job, config=replace(job.config, init_from=str(start)))

    def run(self, jobs, then: Callable | None = None, on_error: Callable | None = None) -> None:
        """Train ``jobs`` (see the module's text). A run that fails stops the others and raises its error,
        after ``on_error(job, error)`` when given (which may raise its own)."""
        pending: list[Job] = []
        running: dict = {}  # handle -> (job, start)
        (self.out / "shards").mkdir(parents=True, exist_ok=True)
        self._queue(pending, running, list(jobs))
        try:
            while pending or running:
                self._start(pending, running)
                ready = [h for h in running if h.ready()]
                if not ready:
                    time.sleep(0.02)
                for handle in ready:
                    job, _ = running.pop(handle)
                    info = self._finished(job, handle, on_error)
                    if then is not None:
                        self._queue(pending, running, self._more(then(job, info)))
                if time.perf_counter() >= self.deadline:
                    self._stop_at_deadline(pending, running)
                    return
        except BaseException:
            self._executor.stop(kill=True)
            raise
        finally:
            if self.in_order:  # the store's order is the jobs' order, whatever order they finished in
                self._merge_in_order()

    def _merge_in_order(self) -> None:
        """Merge the finished runs in the jobs' order, up to the first that did not finish (the rest wait in
        their shards, so that a rerun keeps the order); skipped jobs were never trained and do not block."""
        skipped = {s["id"] for s in self.skipped}
        for job in list(self.jobs.values()):
            if job.id in skipped:
                continue
            if job.id not in self.done:
                break
            if job.id not in self._merged:
                self._merge(job)

    @staticmethod
    def _more(jobs) -> list:
        """What ``then`` returned: None or jobs, in any iterable (anything else is the caller's bug, named here
        rather than iterated: a progress bar's ``update`` returns a bool)."""
        if jobs is None:
            return []
        try:
            out = list(jobs)
        except TypeError:
            out = None
        if out is None or not all(isinstance(j, Job) for j in out):
            raise TypeError(f"then(job, info) must return None or Jobs, got {type(jobs).__name__}")
        return out

    def _queue(self, pending: list, running: dict, more) -> None:
        """Add jobs to ``pending``, seed by seed (stable: otherwise as given), each once."""
        for job in list(more):
            if job.id in self.jobs and self.jobs[job.id] != job:
                raise ValueError(f"two different jobs with the id {job.id!r}")
            active = job.id in self.done or any(j.id == job.id for j in pending)
            if active or any(j.id == job.id for j, _ in running.values()):
                continue  # queued, training or trained already: once
            self.jobs[job.id] = job
            pending.append(job)
        pending.sort(key=lambda j: j.config.seed)

    def _start(self, pending: list, running: dict) -> None:
        """Start pending jobs while workers are free and time is left: a job whose source run is still to
        train or training waits; one whose source was not trained, or that the budget rules out, is skipped."""

        def waits(job: Job) -> bool:
            if job.start_from is None:
                return False
            src = job.start_from[0]
            return any(j.id == src for j, _ in running.values()) or any(j.id == src for j in pending)

        while len(running) < self.workers and time.perf_counter() < self.deadline:
            job = next((j for j in pending if not waits(j)), None)
            if job is None:
                if pending and not running:
                    raise ValueError(f"jobs that start from each other: {', '.join(j.id for j in pending)}")
                return
            pending.remove(job)
            if job.start_from is not None and job.start_from[0] not in self.done:
                src = self.jobs.get(job.start_from[0])
                what = f"{src.name}, seed {src.config.seed}" if src is not None else job.start_from[0]
                self._skip(job, f"the run it starts from ({what}) was not trained")
                continue
            why = budget_skip(self._estimates(job.pool), self.deadline - time.perf_counter())
            if why:
                self._skip(job, why)
                continue
            args = (self.data, self._prepared(job), str(self.shard(job)))
            running[self._executor.submit(_train_job, args)] = (job, time.perf_counter())

    def _finished(self, job: Job, handle, on_error: Callable | None) -> dict:
        """A finished run: its info (a run that failed fails the schedule), merged unless in order, logged."""
        try:
            info = handle.get()
        except Exception as exc:
            if on_error is not None:
                on_error(job, exc)
            raise
        if not self.in_order:
            self._merge(job)
        self.done[job.id] = info
        took = "already trained" if info["resumed"] else f"{info['seconds']:.1f} s"
        self.log(
            f"run {len(self.done)} {job.name} seed {job.config.seed}: {took}, imprinted accuracy {info['accuracy']:.3f}"
        )
        return info

    def _stop_at_deadline(self, pending: list, running: dict) -> None:
        """The budget's end: runs still training are stopped (their shards never merged), the rest skipped."""
        now = time.perf_counter()
        if running:
            self._executor.stop(kill=True)
        for job, start in running.values():
            self._skip(job, f"stopped at the budget's end after {now - start:.1f} s")
        for job in pending:
            self._skip(job, "the budget's end came before it started")

    def _merge(self, job: Job) -> None:
        from ..shards import merge_stores

        counts = merge_stores([self.shard(job)], self.store)
        for k in ("trajectories", "checkpoints_added"):
            self.merged[k] += counts[k]
        self.merged["shards"] += 1
        self._merged.add(job.id)

    def close(self) -> None:
        """Let the worker processes end (after their runs); this process forgets the data it loaded."""
        self._executor.stop(kill=False)
        _LOADED.clear()
