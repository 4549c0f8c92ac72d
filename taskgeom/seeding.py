"""Seed derivation, in one place: every random draw of a training run is a pure function of the run's
seed and where it happens (epoch, batch, step), so a resumed run sees exactly the draws an uninterrupted
one would. Each purpose has its own multiplier so that streams do not collide for small seeds."""

from __future__ import annotations

__all__ = ["epoch_seed", "batch_seed", "step_seed", "episode_seed", "flip_seed", "init_seed"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The data order of ``epoch`` (``randperm``)."""
    return int(seed) * 1_000_003 + int(epoch)


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The crop-and-flip augmentation of batch ``index`` of ``epoch``."""
    return epoch_seed(seed, epoch) * 100_003 + int(index)


def step_seed(seed: int, step: int) -> int:
    """Every other draw of optimisation step ``step``: views, jitter, cutout, labelled batches."""
    return int(seed) * 7_919_993 + int(step)


def episode_seed(seed: int, step: int) -> int:
    """The classes and samples of the episode of step ``step`` (episodic methods)."""
    return int(seed) * 100_003 + int(step)


def flip_seed(seed: int) -> int:
    """Which images an alternating flip mirrors in the even epochs (each is mirrored in every other epoch)."""
    return int(seed) * 3_000_017 + 0xF11


def init_seed(seed: int, method: str, classes=None) -> int:
    """The network's initialisation: a function of the seed, the method and the task's classes, so that
    different families never share an initialisation by accident (FixMatch seed s and supervised seed s
    would otherwise start from the same weights, as would supervised seed s on two different tasks:
    distance 0 at t = 0 by construction; the paper initialises the models of each task afresh). Runs
    that should share one set ``TrainConfig.init_seed``. ``classes``: the task's class ids (None: no
    task part, the derivation of runs recorded before tasks took part in it)."""
    import hashlib

    key = f"{method}:{int(seed)}"
    if classes is not None:
        key += ":" + ",".join(str(int(c)) for c in sorted(classes))
    digest = hashlib.blake2b(key.encode(), digest_size=6).digest()
    return int.from_bytes(digest, "little")
