"""The one scheduler of training runs (taskgeom.train.schedule): order, fine-tuning starts, budgets, merging."""

import math
import time

import numpy as np
import pytest

from taskgeom.store import PredictionStore
from taskgeom.train import TrainConfig
from taskgeom.train.schedule import Job, Scheduler, budget_skip, checkpoint_state
from taskgeom.train.sweep import load_data

TINY = dict(epochs=1, checkpoints=3, batch_size=128, device="cpu", imprint_samples=300, lr=0.1)
DATA = (load_data, {"data": "digits"})


def _cfg(seed, **over):
    return TrainConfig(**{**TINY, "seed": seed, **over})


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A fine-tuning job given before the run it starts from, and a job added by ``then`` as a run finishes."""
    out = tmp_path_factory.mktemp("sched")
    sched = Scheduler(DATA, out)
    ft = Job("ft", "0-4", _cfg(0, method="finetune"), label="ft", start_from=("src", 1))
    src = Job("src", "all", _cfg(0, keep_states=True), label="src")
    order = []

    def then(job, info):
        order.append(job.id)
        return [Job("late", "5-9", _cfg(1), label="late")] if job.id == "src" else []

    sched.run([ft, src], then=then)
    return out, sched, order


def test_a_finetuning_job_waits_for_its_source_and_starts_from_its_checkpoint(finetuned):
    out, sched, order = finetuned
    assert order == ["src", "ft", "late"]  # seed by seed; the fine-tuning run after the run it starts from
    assert sched.skipped == [] and set(sched.done) == {"src", "ft", "late"}
    src = sched.done["src"]
    start = checkpoint_state(src["state_dir"], src["id"], 1)
    assert start.exists()
    store = PredictionStore(out / "store", readonly=True)
    try:
        ft = store.trajectory(sched.done["ft"]["name"])
        assert ft.task == "ft" and ft.method == "finetune"
        assert ft.config["init_from"] == str(start)  # filled in by the scheduler
        assert len(store.select()) == 3  # every shard merged as its run finished
    finally:
        store.close()
    assert sched.merged == {"shards": 3, "trajectories": 3, "checkpoints_added": sum(
        d["checkpoints"] for d in sched.done.values())}  # fmt: skip


def test_a_rerun_resumes_every_run_and_adds_nothing(finetuned):
    out, first, _ = finetuned
    sched = Scheduler(DATA, out)
    sched.run([Job("src", "all", _cfg(0, keep_states=True), label="src")])
    assert sched.done["src"]["resumed"] and sched.merged["checkpoints_added"] == 0
    with PredictionStore(out / "store", readonly=True) as store:
        got = store.trajectory(sched.done["src"]["name"])
        np.testing.assert_array_equal(
            np.asarray(got.probs), np.asarray(store.trajectory(first.done["src"]["name"]).probs)
        )


def test_skips_are_recorded_with_why(tmp_path):
    # the deadline already passed: nothing starts, and the fine-tuning job's source was never trained
    sched = Scheduler(DATA, tmp_path, deadline=time.perf_counter() - 1)
    src = Job("src", "all", _cfg(0, keep_states=True))
    ft = Job("ft", "0-4", _cfg(0, method="finetune"), start_from=("src", 1))
    sched.run([src, ft])
    assert sched.done == {} and [s["id"] for s in sched.skipped] == ["src", "ft"]
    assert all(s["why"] == "the budget's end came before it started" for s in sched.skipped)
    # a source that is not in the schedule at all
    sched = Scheduler(DATA, tmp_path / "b")
    sched.run([Job("orphan", "0-4", _cfg(0, method="finetune"), start_from=("nowhere", 1))])
    assert sched.skipped[0]["why"] == "the run it starts from (nowhere) was not trained"


def test_bad_schedules_are_refused(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        Scheduler(DATA, tmp_path, executor="threads")
    with pytest.raises(ValueError, match="workers"):
        Scheduler(DATA, tmp_path, executor="processes", workers=0)
    sched = Scheduler(DATA, tmp_path)
    a = Job("a", "all", _cfg(0, method="finetune"), start_from=("b", 1))
    b = Job("b", "all", _cfg(0, method="finetune"), start_from=("a", 1))
    with pytest.raises(ValueError, match="start from each other"):
        sched.run([a, b])
    with pytest.raises(ValueError, match="two different jobs"):
        Scheduler(DATA, tmp_path / "c").run([Job("x", "all", _cfg(0)), Job("x", "all", _cfg(1))])


def test_budget_skip():
    assert budget_skip([], 0.5) is None and budget_skip([], 0.0) == "no time was left"
    assert budget_skip([2.0, 4.0], 3.0) is None
    assert budget_skip([2.0, 4.0], 2.9).startswith("its group's runs took 3.0 s")
    assert budget_skip([], math.inf) is None


def _dies(**kwargs):
    import os

    os._exit(3)  # a worker killed (out of memory, a crash): the schedule fails, it does not wait forever


def test_a_dead_worker_fails_the_schedule_and_a_generator_of_jobs_is_queued(tmp_path):
    from concurrent.futures.process import BrokenProcessPool

    sched = Scheduler((_dies, {}), tmp_path, executor="processes", workers=1)
    with pytest.raises(BrokenProcessPool):
        sched.run([Job("a", "all", _cfg(0))])
    sched = Scheduler(DATA, tmp_path / "gen")
    sched.run(
        [Job("a", "0-4", _cfg(0))],
        then=lambda job, info: (Job(f"{job.id}x", "0-4", _cfg(1)) for _ in [0] if job.id == "a"),
    )
    assert set(sched.done) == {"a", "ax"}
    # anything but None or jobs from ``then`` is named, not iterated (a progress bar's update returns a bool)
    for wrong in (True, ["not a job"]):
        with pytest.raises(TypeError, match="then.*must return None or Jobs"):
            Scheduler(DATA, tmp_path / f"w{wrong!r:.4}").run([Job("a", "0-4", _cfg(0))], then=lambda j, i, w=wrong: w)


def test_in_order_merges_stop_at_the_first_run_that_did_not_finish(tmp_path, monkeypatch):
    """Stopped early (interrupted, a failed run), an in-order schedule merges its finished runs up to the
    first unfinished one: a run that finished after a gap waits in its shard, so that the rerun merges the
    store in the jobs' order; a skipped job (never trained) does not hold the others back."""
    sched = Scheduler(DATA, tmp_path, in_order=True)
    jobs = [Job(k, "all", _cfg(i)) for i, k in enumerate("abcde")]
    sched.jobs = {j.id: j for j in jobs}
    merged = []
    monkeypatch.setattr(sched, "_merge", lambda job: (merged.append(job.id), sched._merged.add(job.id)))
    sched.done = {"a": {}, "c": {}, "d": {}, "e": {}}  # b still training when it stopped
    sched._merge_in_order()
    assert merged == ["a"]
    sched.skipped = [{"id": "b", "job": jobs[1], "why": "budget"}]
    sched._merge_in_order()
    assert merged == ["a", "c", "d", "e"]
