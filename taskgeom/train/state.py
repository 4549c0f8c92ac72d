"""Resumable training state: weights, optimiser, schedule and counters saved as plain tensors after each
recorded checkpoint (loaded with ``weights_only=True``: nothing in a state file is executed)."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

__all__ = ["save_state", "load_state", "copy_state", "check_state_file"]


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
    """A saved training state (or any torch state dict of tensors), loaded with ``weights_only=True`` (a pickle
    that would run code is refused, never unpickled); a file that is not one is a one-line ValueError naming
    it, a missing one a FileNotFoundError."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(2, "no such file (expected a taskgeom/torch state dict, .pt)", str(p))
    if p.is_dir():
        raise ValueError(f"{p}: is a directory, expected a taskgeom/torch state dict (.pt)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's multi-line warnings about the file's pickle protocol
            state = torch.load(p, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        zipfile.BadZipFile,
        KeyError,
        IndexError,
        UnicodeDecodeError,
    ) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in reason or isinstance(exc, pickle.UnpicklingError):
            reason = "it holds Python objects other than tensors, which taskgeom does not unpickle"
        raise ValueError(f"{p}: not a taskgeom/torch state dict ({' '.join(reason.split())[:200]})") from None
    model = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(model, dict) or not model or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise ValueError(f"{p}: not a taskgeom/torch state dict (no mapping of parameter names to tensors)")
    return state


def check_state_file(path) -> None:
    """Raise the one-line error of :func:`load_state` for a file that is not a state dict, before a run starts."""
    load_state(path)


def copy_state(src: Path, dst: Path) -> None:
    """An atomic copy of a saved state (the weights of one recorded checkpoint, for fine-tuning from it)."""
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)
