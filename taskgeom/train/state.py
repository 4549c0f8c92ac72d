"""Resumable training state: weights, optimiser, schedule and counters saved as plain tensors after each
recorded checkpoint (loaded with ``weights_only=True``: nothing in a state file is executed)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["save_state", "load_state", "copy_state"]


def save_state(path: Path, model, opt, sched, step: int, recorded: int, lookahead=None) -> None:
    """Write the state atomically: a kill leaves the previous state intact. ``lookahead``: the run's
    :class:`~taskgeom.train.recipe.Lookahead`, whose slow weights are saved beside the network's."""
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "step": torch.tensor(step),
        "recorded": torch.tensor(recorded),
    }
    if lookahead is not None:
        state["lookahead"] = lookahead.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def copy_state(src: Path, dst: Path) -> None:
    """An atomic copy of a saved state (the weights of one recorded checkpoint, for fine-tuning from it)."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)
