"""What each figure of a picture shows, as data: one function per figure, each a pure function of an analysis
(:class:`taskgeom.analysis.PictureResult`). The interactive report (:mod:`taskgeom.report`, plotly) and the
static PNGs (:mod:`taskgeom.plots`, matplotlib) draw the same data; neither computes a series of its own."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "finite",
    "masked",
    "as_array",
    "curve_xyz",
    "stress",
    "progress_curves",
    "distance_curves",
    "compared_range",
]

#: below this share of the progress the runs reach, the task-distance table is said to compare a narrow range
NARROW = 0.1


def finite(values) -> list:
    """``values`` as a list with None for missing or non-finite entries (an unbounded interval end, a ratio
    over a zero radius)."""
    return [None if v is None or not math.isfinite(v) else v for v in values]


def curve_xyz(points) -> list:
    """``[x, y, z]`` of each point of a curve (an embedding of fewer dimensions padded with zeros)."""
    return [p["xyz"] + [0.0] * (3 - len(p["xyz"])) for p in points]


def stress(res) -> dict:
    """Explained stress by dimension (Figure 2): ``ks``; ``percent`` (chi_k in %); ``interval``: per k
    ``(low, high)`` in %, or None without bootstrap replicates."""
    ks = sorted(int(k) for k in res.explained_stress)
    iv = (res.uncertainty or {}).get("explained_stress") or {}
    return {
        "ks": ks,
        "percent": [100 * res.explained_stress[str(k)] for k in ks],
        "interval": [(100 * iv[str(k)]["low"], 100 * iv[str(k)]["high"]) for k in ks] if iv else None,
    }


def progress_curves(res) -> dict:
    """Progress of every recorded checkpoint (Figure 3), one curve per trajectory: against epochs where every
    checkpoint has one, else against the checkpoint's index. ``x_label``; ``curves``: dicts with ``task``,
    ``seed``, ``x``, ``progress``, ``accuracy``."""
    emb = res.embedding
    by_epoch = all(e is not None for ep in emb.epochs for e in ep)
    curves = [
        {"task": task, "seed": seed, "x": ep if by_epoch else list(range(len(prog))), "progress": prog, "accuracy": acc}
        for (task, seed, prog, acc), ep in zip(emb.keys, emb.epochs)
    ]
    return {"x_label": "epoch" if by_epoch else "checkpoint", "by_epoch": by_epoch, "curves": curves}


def distance_curves(res) -> dict:
    """Normalised distance of each task to the reference task over the progress grid (Figure 4, Remark 5).
    ``curves``: dicts with ``task``, ``values`` (None where undefined), ``reached`` (per grid value, whether
    every seed of both tasks reached it: beyond it runs are padded, and nothing is drawn), and the bootstrap
    ``interval`` and seed ``spread`` (dicts of ``low`` / ``high`` lists, or None); ``shown``: the grid values
    some curve is drawn at."""
    from .analysis import reached_mask

    grid = list(res.grid)
    spread = getattr(res, "normalized_distance_spread", {}) or {}
    interval = getattr(res, "normalized_distance_interval", {}) or {}
    curves = []
    for task, nd in res.normalized_distance.items():
        keep = [bool(k) for k in reached_mask(res, task)]
        iv = interval.get(task) or None  # {} without bootstrap replicates (n_boot = 0)
        curves.append(
            {
                "task": task,
                "values": finite(nd),
                "reached": keep,
                "interval": None if iv is None else {"low": finite(iv["low"]), "high": finite(iv["high"])},
                "spread": {"low": finite(spread[task]["low"]), "high": finite(spread[task]["high"])}
                if task in spread
                else None,
            }
        )
    shown = [g for c in curves for g, k in zip(grid, c["reached"]) if k]
    return {"grid": grid, "reference": res.reference_task, "curves": curves, "shown": shown}


def compared_range(res) -> dict | None:
    """The progress the task-distance table (Figure 5) compares every pair over, the range every seed of
    every group reaches: ``low``, ``high``, its ``share`` of the range the runs reach together (the picture's
    grid) and whether it is ``narrow`` (a share below :data:`NARROW`: the highest start and the lowest end of
    any run bound it, and the table compares every pair near one value of progress). None without such a
    range."""
    td = res.task_distances or {}
    if not td.get("progress_compared") or not len(res.grid):
        return None
    low, high = td["progress_compared"]
    span = float(res.grid[-1]) - float(res.grid[0])
    share = (high - low) / span if span > 0 else 1.0
    return {"low": low, "high": high, "share": share, "narrow": share < NARROW}


def masked(values, keep) -> list:
    """``values`` with None where ``keep`` is False."""
    return [v if k else None for v, k in zip(values, keep)]


def as_array(values) -> np.ndarray:
    """A float array with NaN for None."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)
