"""Merging store shards: runs on many machines each write their own PredictionStore (no SQLite writes
shared across machines), and :func:`merge_stores` gathers them into one.

The merge verifies every shard's checksums first and refuses a damaged shard. It is idempotent: a
trajectory already in the target with the same checkpoints is left alone, one with a prefix of them is
completed, and one whose checkpoints differ is a conflict (an error naming it). Each trajectory is added
whole (one write, one transaction); a new target store is built beside its final path and renamed into
place, so it appears complete or not at all.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from .store import ConfigMismatchError, PredictionStore, StoreError

__all__ = ["merge_stores"]


def _copy_trajectory(src, dst_store: PredictionStore) -> int:
    """Add ``src``'s checkpoints missing from its namesake in ``dst_store``; returns how many were added."""
    try:
        t = dst_store.create_trajectory(
            src.eval_set,
            task=src.task,
            method=src.method,
            seed=src.seed,
            architecture=src.architecture,
            dtype=src.dtype,
            name=src.name,
            config=src.config,
            code=src.code,
            **src.extra,
        )
    except ConfigMismatchError as exc:
        raise StoreError(
            f"{src.store.root}: {exc}".split("; rerun")[0] + "; the target holds a different run under "
            "this name: merge into another store"
        ) from None
    have, sums = len(t), src.checksums
    if have > len(src) or t.checksums[:have] != sums[:have]:
        raise StoreError(
            f"trajectory {src.name!r}: the target holds {have} checkpoints that differ from the "
            f"shard's {len(src)}; not merged"
        )
    if have == len(src):
        return 0
    cps = src.checkpoints[have:]
    fields = ("idx", "epoch", "step", "accuracy")
    dst_store.extend(
        t,
        np.asarray(src.probs[have:]),
        epochs=[c["epoch"] for c in cps],
        steps=[c["step"] for c in cps],
        accuracies=[c["accuracy"] for c in cps],
        extras=[{k: v for k, v in c.items() if k not in fields} for c in cps],
        validate=False,
    )
    if t.checksums[have:] != sums[have:]:  # the bytes written are the shard's bytes
        raise StoreError(f"trajectory {src.name!r}: checksums differ after copying (dtype changed?)")
    return len(src) - have


def merge_stores(shards, out) -> dict:
    """Merge the stores ``shards`` into the store ``out`` (created when missing); returns counts."""
    out = Path(out)
    sources = [PredictionStore(p, readonly=True) for p in shards]
    for s in sources:
        problems = s.verify()
        if problems:
            raise StoreError(f"{s.root}: {len(problems)} problem(s), first: {problems[0]}; not merged")
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out} is a file, not a store folder: merge into a new or existing store folder")
    if out.is_dir() and not (out / "manifest.sqlite").exists() and any(out.iterdir()):
        raise StoreError(f"{out} is a folder that is not a store (no manifest.sqlite) and not empty; not merged")
    fresh = not (out / "manifest.sqlite").exists()
    target_path = out.with_name(out.name + ".merging") if fresh else out
    if fresh:
        shutil.rmtree(target_path, ignore_errors=True)
    target = PredictionStore(target_path, create=True)
    added = trajectories = 0
    for s in sources:
        for name in s.eval_sets():
            es = s.eval_set(name)
            target.add_eval_set(name, es.labels, class_names=es.class_names, c=es.c, **es.extra)
        for t in s.select():
            added += _copy_trajectory(t, target)
            trajectories += 1
    target.close()
    for s in sources:
        s.close()
    if fresh:
        if out.is_dir():  # an empty folder named as the target
            out.rmdir()
        os.replace(target_path, out)
    return {"shards": len(sources), "trajectories": trajectories, "checkpoints_added": added}
