"""The picture's analysis of a store of trajectories, as a typed result.

For every trajectory recorded on an evaluation set: progress (eq. 4), re-indexing onto a common progress
grid (Remark 4), Riemann length (eq. 6) and per-class progress; for all of them together: the pairwise
distances of the re-indexed points, the InPCA embedding and explained stress (eqs. 9-11); per task: mean
trajectories, tube radii and normalised distances (Remark 5, App. G), and distances between every pair
of tasks. The grid spans only the progress the trajectories reach, and two tasks are compared only over
the progress every seed of both reaches. Bootstrap intervals (:mod:`taskgeom.bootstrap`) come from
reweighting per-sample terms. :class:`PictureResult` is what the plots, the report and the command line
consume.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _validate, geometry, reference, trajectories
from . import bootstrap as _bootstrap
from . import embedding as _embedding
from ._validate import host_array, tensor_of
from .pairwise import pairwise_distances
from .train.config import IDENTITY_EXCLUDED

__all__ = [
    "PictureResult",
    "Family",
    "Estimate",
    "Curve",
    "EmbeddingView",
    "Line",
    "analyse",
    "place",
    "task_distances",
    "reached_mask",
    "TrajectoryGroups",
    "embed_reached",
]


@dataclass(frozen=True)
class Line:
    """One curve of the 3-D view: a seed's re-indexed trajectory or a task's mean (``mean=True``).
    ``points``: dicts with ``xyz``, ``progress`` (the grid value), ``epoch`` and ``accuracy`` (None where
    undefined), ``reached`` (whether the run reached this grid value: False where re-indexing clamps to
    its first or last checkpoint) and ``true_progress`` (the grid value where reached, else the real
    progress of the checkpoint it is a copy of; for a mean, the grid value where every seed reached it)."""

    task: str
    seed: int | None
    method: str
    mean: bool
    points: list


@dataclass(frozen=True)
class EmbeddingView:
    """The embedding as drawn: 3-D coordinates of every embedded point, signed eigenvalues and signature,
    the curves and the marked models (P0, P*), and per-trajectory series. Only re-indexed points a run
    reached are embedded (never a copy of a first or last checkpoint standing in for a progress it did not
    reach): ``embedded[i][g]`` says whether trajectory ``i``'s grid point ``g`` is, and ``coords`` holds
    the embedded points trajectory-major."""

    coords: np.ndarray  # (embedded points, 3)
    signature: list
    eigenvalues: list
    keys: list  # per trajectory: (task, seed, progress per checkpoint, accuracy per checkpoint)
    grid: int
    lines: list  # of Line
    marks: list  # of {"name", "xyz"}
    epochs: list  # per trajectory: epoch of each checkpoint
    per_class: dict  # task -> (seeds, C) per-class progress of the final checkpoints
    trained: dict  # task -> class indices it was trained on
    embedded: list = field(default_factory=list)  # (K, G) booleans: which re-indexed points are embedded
    per_class_init: dict = field(default_factory=dict)  # task -> (seeds, C) per-class progress at initialisation

    def trajectory_coords(self, i: int) -> np.ndarray:
        """(reached grid points, 3) coordinates of trajectory ``i``'s embedded points."""
        counts = np.asarray(self.embedded, dtype=bool).sum(1)
        start = int(counts[:i].sum())
        return np.asarray(self.coords)[start : start + int(counts[i])]


@dataclass(frozen=True)
class Estimate:
    """A statistic of a family: ``value`` (the mean over its seeds), each seed's ``seeds`` where it has them,
    and its bootstrap interval: ``low``, ``high`` (None without replicates, or where unbounded), the share of
    replicates ``above_estimate`` and what the replicates resample (``over``). The interval is the
    bias-corrected percentile interval (:func:`taskgeom.bootstrap.percentile_interval`): the percentiles
    shifted by the share of replicates below the estimate, so it need not be centred on ``value``."""

    value: float
    seeds: tuple = ()
    low: float | None = None
    high: float | None = None
    above_estimate: float | None = None
    over: str | None = None


@dataclass(frozen=True)
class Curve:
    """Values over the progress ``grid``: None where undefined (beyond the progress every seed reached), with
    the bootstrap interval's ``low`` and ``high`` curves (None without replicates)."""

    grid: tuple
    values: tuple
    low: tuple | None = None
    high: tuple | None = None


@dataclass(frozen=True)
class Family:
    """One group of trajectories (a task, a method, ...) as the analysis measured it (see :func:`analyse`).
    ``seeds``: how many trajectories it holds (its seeds when grouped by task; whatever the grouping, the
    runs whose spread makes its tube)."""

    name: str
    seeds: int
    progress_at_init: Estimate
    final_progress: Estimate
    progress_gain: Estimate
    riemann_length: Estimate
    tube_radius: Curve
    #: normalised distance (Remark 5) to the reference family over the grid; None for the reference itself
    distance_to_reference: Curve | None
    #: per grid value, whether every seed of the family reached it
    reached: tuple


def _estimate(point: dict, interval: dict | None, value_key: str = "mean") -> Estimate:
    iv = interval or {}
    return Estimate(
        float(point[value_key]),
        tuple(point.get("seeds", ())),
        iv.get("low"),
        iv.get("high"),
        iv.get("above_estimate"),
        iv.get("over"),
    )


@dataclass(frozen=True)
class PictureResult:
    """Everything :func:`analyse` computes. Its fields cannot be reassigned, and presenting it
    (:func:`taskgeom.publish`, the report, the figures) reads it and never writes into it; a changed copy is
    ``dataclasses.replace(res, ...)``. The dicts, lists and arrays the fields hold are the result's own, not
    copies: treat them as read-only. Most fields are in the form written to ``results.json``
    (:meth:`to_json`): keyed by group name, explained stress by the number of dimensions as a string."""

    eval_set: str
    n: int
    c: int
    trajectories: int
    checkpoints: int
    explained_stress: dict
    progress_on_union_task: dict
    progress_at_init: dict  # task -> {"mean", "seeds"}: progress of the untrained networks (checkpoint 0)
    progress_gain: dict  # task -> {"mean", "seeds"}: final progress minus progress at initialisation
    riemann_length: dict
    geodesic_length_P0_Pstar: float
    reference_task: str
    normalized_distance: dict  # task -> curve over the grid, to the reference task
    normalized_distance_spread: dict  # task -> {"low", "high"}: min and max over its seeds (one seed each)
    normalized_distance_interval: dict  # task -> {"low", "high", "level", "replicates", "over"}: bootstrap
    tube_radius: dict  # task -> radius over the grid (None where not every seed reached it)
    grid: list  # progress values, all reached by some trajectory
    reached: dict  # task -> per grid value, whether every seed of the task reached it
    task_distances: dict
    per_class_progress: dict
    per_class_progress_at_init: dict
    embedding: EmbeddingView
    uncertainty: dict = field(default_factory=dict)  # bootstrap intervals (see :func:`analyse`)
    seconds: dict = field(default_factory=dict)
    #: what :func:`place` needs (the fitted embedding, its points, each task's mean trajectory and tube
    #: radii on the grid); not written to results.json
    fit: dict | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        chi = self.explained_stress.get("3", self.explained_stress.get(str(len(self.explained_stress)), math.nan))
        return (
            f"PictureResult({self.trajectories} trajectories, {self.checkpoints} checkpoints on {self.eval_set!r} "
            f"(N = {self.n}, C = {self.c}); groups {list(self.progress_on_union_task)}, reference "
            f"{self.reference_task!r}; explained stress {100 * chi:.1f}% in 3 dimensions; "
            f"{'bootstrap intervals' if self.uncertainty else 'no intervals'})"
        )

    # ---- typed views of the result (its stored form is results.json's, above) ----
    @property
    def families(self) -> tuple:
        """Every family as a :class:`Family`, in the analysis's order."""
        return tuple(self.family(name) for name in self.progress_on_union_task)

    def family(self, name) -> Family:
        """The :class:`Family` ``name``: a family's name (a string; a number is taken as its text, as
        ``group_by="seed"`` names families ``"0"``, ``"1"``, ...), or a :class:`Family` itself (a KeyError
        lists the families)."""
        if isinstance(name, Family):
            name = name.name
        elif isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            name = str(name)
        if not isinstance(name, str) or name not in self.progress_on_union_task:
            shown = repr(name) if isinstance(name, (str, int, float)) else f"of type {type(name).__name__}"
            raise KeyError(f"no family {shown}; families: {', '.join(map(repr, self.progress_on_union_task))}")
        unc = self.uncertainty or {}

        def est(field: str) -> Estimate:
            return _estimate(getattr(self, field)[name], (unc.get(field) or {}).get(name))

        grid = tuple(self.grid)
        radius_iv = (unc.get("tube_radius") or {}).get(name) or {}
        distance = None
        if name in self.normalized_distance:
            iv = self.normalized_distance_interval.get(name) or {}
            distance = Curve(grid, tuple(self.normalized_distance[name]), _tuple(iv.get("low")), _tuple(iv.get("high")))
        length = self.riemann_length[name]
        return Family(
            name=name,
            seeds=len(self.progress_on_union_task[name].get("seeds", ())),
            progress_at_init=est("progress_at_init"),
            final_progress=est("progress_on_union_task"),
            progress_gain=est("progress_gain"),
            riemann_length=_estimate(length, None),
            tube_radius=Curve(
                grid, tuple(self.tube_radius[name]), _tuple(radius_iv.get("low")), _tuple(radius_iv.get("high"))
            ),
            distance_to_reference=distance,
            reached=tuple(bool(r) for r in self.reached[name]),
        )

    @property
    def stress(self) -> tuple:
        """Explained stress (eq. 11) of the top 1, 2, ... dimensions, each an :class:`Estimate`."""
        unc = (self.uncertainty or {}).get("explained_stress") or {}
        return tuple(
            _estimate({"mean": self.explained_stress[k]}, unc.get(k)) for k in sorted(self.explained_stress, key=int)
        )

    def to_json(self) -> dict:
        out = {
            "eval_set": self.eval_set,
            "n": self.n,
            "c": self.c,
            "trajectories": self.trajectories,
            "checkpoints": self.checkpoints,
            "explained_stress": self.explained_stress,
            "progress_on_union_task": self.progress_on_union_task,
            "progress_at_init": self.progress_at_init,
            "progress_gain": self.progress_gain,
            "riemann_length": self.riemann_length,
            "geodesic_length_P0_Pstar": self.geodesic_length_P0_Pstar,
            f"normalized_distance_to_{self.reference_task}": self.normalized_distance,
            f"normalized_distance_to_{self.reference_task}_seed_spread": self.normalized_distance_spread,
            f"normalized_distance_to_{self.reference_task}_interval": self.normalized_distance_interval,
            "tube_radius": self.tube_radius,
            "grid": self.grid,
            "reached": self.reached,
            "task_distances": self.task_distances,
            "per_class_progress": self.per_class_progress,
            "per_class_progress_at_init": self.per_class_progress_at_init,
            "embedded_points": int(np.asarray(self.embedding.embedded, dtype=bool).sum()),
        }
        if self.uncertainty:
            out["uncertainty"] = self.uncertainty
        if self.seconds:
            out["seconds"] = self.seconds
        return out


def _tuple(x):
    return None if x is None else tuple(x)


def _load(t, device: torch.device):
    """A trajectory's probabilities: the memory map itself on the host, a tensor on a GPU."""
    if device.type == "cpu":
        return np.asarray(t.probs)
    return tensor_of(np.array(t.probs), device)  # a copy: the map is read-only


def _interpolate_checkpoints(info: dict, checkpoints: list[dict]):
    """Epoch, accuracy, whether reached, and true progress at each re-indexed point: interpolated
    between the two checkpoints whose geodesic it lies on, or the checkpoint itself (and its own progress)
    where the grid value lies outside the reached range."""
    epochs = np.array([c["epoch"] if c["epoch"] is not None else np.nan for c in checkpoints], dtype=float)
    accs = np.array([c["accuracy"] if c["accuracy"] is not None else np.nan for c in checkpoints], dtype=float)
    tk = np.asarray(info["checkpoint_progress"], dtype=float)
    ep, ac, reached, true = [], [], [], []
    for g, seg in enumerate(info["segment"]):
        if seg >= 0:
            lam = info["lam"][g]
            e = epochs[seg] + lam * (epochs[seg + 1] - epochs[seg])
            a = accs[seg] + lam * (accs[seg + 1] - accs[seg])
            t = float(info["grid"][g])
        else:
            k = int(np.argmin(tk)) if info["grid"][g] < tk.min() else int(np.argmax(tk))
            e, a, t = epochs[k], accs[k], float(tk[k])
        ep.append(None if np.isnan(e) else float(e))
        ac.append(None if np.isnan(a) else float(a))
        reached.append(bool(seg >= 0))
        true.append(t)
    return ep, ac, reached, true


def _progress_all(trajs, lab, device, backend: str) -> list:
    """Progress (eq. 4) of every checkpoint of every trajectory."""
    return [host_array(geometry.progress(_load(t, device), lab, backend=backend)) for t in trajs]


def _per_trajectory(trajs, groups: list, labels, grid: int, c: int, device, backend: str) -> dict:
    """Progress, re-indexing onto a grid over the progress the trajectories reach
    (:func:`taskgeom.trajectories.progress_grid`), lengths and per-class progress of each trajectory."""
    acc = {
        "init": {},
        "per_class_init": {},
        "final": {},
        "reindexed": [],
        "inside": [],
        "keys": [],
        "along": [],
        "epochs": [],
        "per_class": {},
        "trained": {},
        "lengths": {},
        "thinned": {},
        "methods": [],
    }
    from ._progress import bar

    lab = labels if device.type == "cpu" else tensor_of(labels, device)
    progs = _progress_all(trajs, lab, device, backend)
    acc["grid"] = trajectories.progress_grid(progs, grid)
    for t, key, prog in zip(
        bar(trajs, desc="analysing trajectories (re-indexing, lengths)", unit="traj"), groups, progs
    ):
        probs = _load(t, device)
        acc["final"].setdefault(key, []).append(float(prog[-1]))
        acc["init"].setdefault(key, []).append(float(prog[0]))
        r, info = trajectories.reindex(probs, lab, grid=acc["grid"], return_info=True, progress=prog)
        acc["reindexed"].append(host_array(r).astype(np.float32))
        acc["inside"].append(trajectories.reached([prog], acc["grid"]))
        cps = t.checkpoints
        acc["keys"].append((key, t.seed, prog.tolist(), [cp["accuracy"] for cp in cps]))
        acc["methods"].append(t.method)
        acc["epochs"].append([cp["epoch"] for cp in cps])
        density = trajectories.riemann_length_density(probs, validate=False)
        acc["lengths"].setdefault(key, []).append(density[1])
        acc["thinned"].setdefault(key, []).append([density[2], density[3]])
        acc["per_class"].setdefault(key, []).append(host_array(geometry.per_class_progress(probs[-1], lab)).tolist())
        acc["per_class_init"].setdefault(key, []).append(
            host_array(geometry.per_class_progress(probs[0], lab)).tolist()
        )
        acc["trained"].setdefault(key, list(t.extra.get("classes", range(c))))
        acc["along"].append(_interpolate_checkpoints(info, cps))
    return acc


def _lines(emb, placed, keys, methods, along, task_names, grid_t, keep: np.ndarray, all_reached: dict) -> list:
    """The curves: each seed over the grid values it reached, each task's mean over those every seed of
    the task reached (``placed``: the means' coordinates, task after task, at those values)."""
    lines, row = [], 0
    for i, (task, seed, _p, _a) in enumerate(keys):
        ep, ac, reached, true = along[i]
        pts = []
        for g in np.flatnonzero(keep[i]):
            pts.append(
                {
                    "xyz": emb.coords[row, :3].tolist(),
                    "progress": float(grid_t[g]),
                    "epoch": ep[g],
                    "accuracy": ac[g],
                    "reached": True,
                    "true_progress": true[g],
                }
            )
            row += 1
        lines.append(Line(task, None if seed is None else int(seed), methods[i] or "", False, pts))
    start = 0
    for task in task_names:
        gs = np.flatnonzero(all_reached[task])
        pts = [
            {
                "xyz": placed[start + j].tolist(),
                "progress": float(grid_t[g]),
                "epoch": None,
                "accuracy": None,
                "reached": True,
                "true_progress": float(grid_t[g]),
            }
            for j, g in enumerate(gs)
        ]
        start += len(gs)
        kinds = {methods[i] or "" for i, k in enumerate(keys) if k[0] == task}
        lines.append(Line(task, None, kinds.pop() if len(kinds) == 1 else "mixed", True, pts))
    return lines


def _device(device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def embed_reached(R: np.ndarray, keep: np.ndarray, k: int = 10, device="cpu", backend: str = "auto") -> tuple:
    """The InPCA embedding (top ``k`` components, at most one per point) of re-indexed runs ``R`` (K, G, N, C)
    at the grid values each reached (``keep`` (K, G)), and those points (points, N, C), run after run. A
    grid value outside a run's progress would be a copy of its first or last checkpoint, and copies would
    weigh those models twice. The one embedding of runs on a grid: :func:`analyse`'s and
    :meth:`TrajectoryGroups.embedding`'s."""
    device = _device(device)
    flat = R[keep]  # (points, N, C), trajectory-major
    flat_dev = flat if device.type == "cpu" else tensor_of(flat, device)
    D = host_array(pairwise_distances(flat_dev, backend=backend))
    return _embedding.inpca(D, k=min(k, D.shape[0])), flat


def _view(emb, flat, families: dict, reached: dict, acc: dict, keep: np.ndarray, labels, c: int) -> EmbeddingView:
    """The embedding as drawn, with the task means (over the grid values every seed of the task reached)
    and the two ends of the task placed out of sample."""
    n = int(labels.size)
    names = list(families)
    means = np.concatenate([families[t][:, reached[t]].astype(np.float64).mean(0) for t in names])
    ends = np.stack([np.full((n, c), 1.0 / c), np.eye(c)[labels]])
    placed = emb.transform(pairwise_distances(np.concatenate([means, ends]), flat))[:, :3]
    return EmbeddingView(
        coords=emb.coords[:, :3],
        signature=emb.signature[:3].tolist(),
        eigenvalues=emb.eigenvalues.tolist(),
        keys=acc["keys"],
        grid=len(acc["grid"]),
        lines=_lines(emb, placed, acc["keys"], acc["methods"], acc["along"], names, acc["grid"], keep, reached),
        marks=[
            {"name": "P0 (ignorance)", "xyz": placed[-2].tolist()},
            {"name": "P* (truth)", "xyz": placed[-1].tolist()},
        ],
        epochs=acc["epochs"],
        per_class=acc["per_class"],
        trained=acc["trained"],
        embedded=keep.tolist(),
        per_class_init=acc["per_class_init"],
    )


def _masked(values, keep) -> list:
    """A curve over the grid with None where it is not a measurement (outside the progress compared)."""
    return [float(v) if k else None for v, k in zip(np.asarray(values, dtype=float), keep)]


def group_key(traj, group_by: str) -> str:
    """The group a trajectory belongs to: one of its fields (``task``, ``method``, ``architecture``,
    ``seed``, ``eval_set``, ``name``), a free-form field recorded with it (``extra``), or a field of its
    recorded configuration (``lr``; dotted for nested ones: ``a.b``). A trajectory without it is in group
    ``"<none>"``."""
    if group_by in ("task", "method", "architecture", "seed", "eval_set", "name"):
        value = getattr(traj, group_by)
    elif group_by in traj.extra:
        value = traj.extra[group_by]
    else:
        value = traj.config or {}
        for part in group_by.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    return "<none>" if value is None else str(value)


def analyse(
    store,
    eval_set: str | None = None,
    tasks=None,
    grid: int = 50,
    backend: str = "auto",
    device="cpu",
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    *,
    group_by: str = "task",
    method: str | None = None,
    reference: str | None = None,
) -> PictureResult:
    """Analyse the trajectories of a store (a :class:`~taskgeom.store.PredictionStore` or its folder) on one
    evaluation set, grouped (see the module docstring).

    ``group_by``: what makes a family (:func:`group_key`: ``task``, ``method``, ``architecture``, a
    recorded extra field or a config field such as ``lr``); ``tasks``: the groups to keep, in the
    order wanted (None: every group, sorted); ``method``: keep only trajectories of this method (the main
    job analyses ``"supervised"``); ``reference``: the group the others' normalised distances are measured
    to (default ``"all"`` where there is one, else the first group). ``eval_set``: None where the store
    holds one. Trajectories with fewer than two checkpoints are left out.

    ``grid``: the number of progress values; they span the progress the trajectories reach (never
    beyond: :func:`taskgeom.trajectories.progress_grid`), and comparisons between two groups use only
    the values every seed of both reaches (:func:`reached_mask`). ``device``: where the geometry runs
    (``"cpu"``, ``"cuda"``, or ``"auto"`` for a GPU when there is one); ``backend`` as in
    :func:`taskgeom.pairwise_distances`.

    Uncertainty: ``n_boot`` bootstrap replicates (0: none) over evaluation samples and, where a group has
    two or more seeds, over seeds (mean trajectories, tube radii and embedded points recomputed per
    replicate), by reweighting per-sample terms (:mod:`taskgeom.bootstrap`) with one generator seeded by
    ``seed``; ``level`` percentile intervals of progress, explained stress, tube radii, normalised
    distance curves and distances between groups (``uncertainty``).
    """
    if isinstance(store, (str, os.PathLike)):  # a store's folder, as on the command line
        from .store import PredictionStore

        store = PredictionStore(store, readonly=True)
    eval_set = _eval_set(store, eval_set)
    device = _device(device)
    labels = store.eval_set(eval_set).labels
    c = int(store.eval_set(eval_set).c)
    groups, trajs = _grouped(store, eval_set, tasks, method, group_by, reference)
    acc = _per_trajectory(trajs, groups, labels, grid, c, device, backend)
    R = np.stack(acc["reindexed"])  # (K, G, N, C)
    keep = np.stack(acc["inside"])  # (K, G): the grid values each run reached
    emb, flat = embed_reached(R, keep, 10, device, backend)
    members = {}  # group -> its trajectories' indices
    for i, k in enumerate(acc["keys"]):
        members.setdefault(k[0], []).append(i)
    families = {task: R[idx] for task, idx in members.items()}  # (seeds, G, N, C)
    reached = {  # (G,): every seed reached it
        task: trajectories.reached([acc["keys"][i][2] for i in idx], acc["grid"]) for task, idx in members.items()
    }
    ref = reference if reference is not None else ("all" if "all" in families else next(iter(families)))
    if ref not in families:
        raise ValueError(f"reference group {ref!r} is not among the groups {list(families)}")
    word = "task" if group_by == "task" else "group"  # how intervals name the families they resample
    boot = _bootstrap.Resampling(
        int(labels.size), n_boot, {t: len(idx) for t, idx in members.items()}, seed, level, word
    )
    grouped = _groups(trajs, members, acc, labels, grid, device, backend)
    shared = grouped.pairs_on_shared_grid(list(members))
    radii = {t: np.asarray(trajectories.tube_radius(fam)) for t, fam in families.items()}  # also kept for place()
    view = _view(emb, flat, families, reached, acc, keep, labels, c)
    means = {t: fam.astype(np.float64).mean(0) for t, fam in families.items()}
    fit = {"embedding": emb, "points": flat, "labels": labels, "means": means, "radii": radii}
    res = _picture_result(eval_set, labels, c, trajs, acc, emb, families, reached, ref, boot, shared, radii, view, fit)
    if boot.n_boot:  # the intervals read the estimates
        uncertainty = _uncertainty(boot, grouped, members, families, reached, flat, keep, res)
        res = dataclasses.replace(res, uncertainty=uncertainty)
    return res


def _groups(trajs, members: dict, acc: dict, labels, grid: int, device, backend: str) -> "TrajectoryGroups":
    """The analysis's groups of runs for comparing them (their progress as computed already)."""
    progress = {t: [np.asarray(acc["keys"][i][2]) for i in idx] for t, idx in members.items()}
    lab = labels if device.type == "cpu" else tensor_of(labels, device)
    return TrajectoryGroups(
        {t: [trajs[i] for i in idx] for t, idx in members.items()},
        lab,
        load=lambda t: _load(t, device),
        progress=progress,
        points=grid,
        backend=backend,
        keep=device.type == "cpu",  # memory maps; on a GPU each use copies again rather than hold them all
    )


def _eval_set(store, eval_set: str | None) -> str:
    """``eval_set``, or the store's only one."""
    if eval_set is None:
        sets = store.eval_sets()
        if len(sets) != 1:
            raise ValueError(f"{store.root} holds {len(sets)} evaluation sets {sets}: pass eval_set=")
        eval_set = sets[0]
    return eval_set


def _grouped(store, eval_set: str, tasks, method, group_by: str, reference) -> tuple:
    """(groups, trajectories): the store's trajectories on ``eval_set`` with two or more checkpoints (of
    ``method`` only, if given), each with its group (:func:`group_key`), ordered by group (``tasks``' order,
    or sorted), seed and id."""
    found = store.select(eval_set=eval_set, **({} if method is None else {"method": method}))
    if not isinstance(group_by, str) or not group_by:
        raise ValueError(
            f"group_by must be a field name (task, method, architecture, seed, or a config field), got {group_by!r}"
        )
    keyed = [(group_key(t, group_by), t) for t in found if len(t) > 1]
    if keyed and all(k == "<none>" for k, _ in keyed):
        cfg = sorted({k for _, t in keyed for k in (t.config or {})})
        raise ValueError(
            f"no trajectory records {group_by!r}: group by task, method, architecture, seed, a recorded extra field "
            f"or a config field ({', '.join(cfg[:12]) + (', ...' if len(cfg) > 12 else '') if cfg else 'none recorded'})"
        )
    order = sorted({k for k, _ in keyed}) if tasks is None else list(tasks)
    keyed = sorted(
        ((k, t) for k, t in keyed if k in order), key=lambda kt: (order.index(kt[0]), kt[1].seed or 0, kt[1].id)
    )
    if not keyed:
        raise RuntimeError(
            f"no trajectories with at least two checkpoints on {eval_set!r} in {store.root}"
            + (f" in the groups {order} of {group_by!r}" if tasks is not None else "")
        )
    groups, trajs = [k for k, _ in keyed], [t for _, t in keyed]
    _warn_pooled(groups, trajs, group_by)
    if reference is not None and reference not in groups:
        raise ValueError(f"reference group {reference!r} is not among the groups {list(dict.fromkeys(groups))}")
    return groups, trajs


def _warn_pooled(groups, trajs, group_by: str) -> None:
    """Warn (one line) where a group pools runs trained differently (methods, architectures, or recorded
    settings other than the seed and where a run ran) as if they were seeds of one family: grouping by task
    a store of one task trained two ways averages the two ways."""
    for g in dict.fromkeys(groups):
        members = [t for k, t in zip(groups, trajs) if k == g]
        differ = {}
        for attr in ("method", "architecture"):
            kinds = sorted({str(getattr(t, attr)) for t in members} - {"None"})
            if attr != group_by and len(kinds) > 1:
                differ[attr] = kinds
        configs = [_flat(t.config or {}) for t in members]
        for key in sorted({k for c in configs for k in c} - _NOT_A_RECIPE - set(differ) - {group_by}):
            values = sorted({json.dumps(c.get(key), sort_keys=True, default=str) for c in configs})
            if len(values) > 1:
                differ[key] = values
        if differ:
            shown = "; ".join(f"{k}: {', '.join(map(str, v[:4]))}" for k, v in list(differ.items())[:3])
            warnings.warn(
                f"group {g!r} (by {group_by}) pools runs trained differently ({shown}) as if they were seeds of one "
                f"family: group by {next(iter(differ))} (or another field) to compare them",
                stacklevel=4,
            )
            return


#: recorded settings that do not make another recipe: the seeds, a run's name, and where and how it ran
_NOT_A_RECIPE = {"seed", "init_seed", "name", *IDENTITY_EXCLUDED}


def _flat(config: dict, prefix: str = "") -> dict:
    """A recorded config with nested mappings as dotted keys (``optim.lr``)."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _seeds(values: dict) -> dict:
    """group -> {"mean", "seeds"} of per-seed values."""
    return {t: {"mean": float(np.mean(v)), "seeds": v} for t, v in values.items()}


def _picture_result(eval_set, labels, c, trajs, acc, emb, families, reached, ref, boot, shared, radii, view, fit):
    """The :class:`PictureResult` of one analysis, without its intervals."""
    chi = emb.explained_stress()
    others = [t for t in families if t != ref]
    both = {t: reached[t] & reached[ref] for t in others}
    # each task against the reference once: the curve and, with a bootstrap, its replicates
    curves = {t: trajectories.compare_families(families[t], families[ref], boot, t, ref) for t in others}
    nds = {t: curves[t].normalized for t in others}
    gain = {t: [f - i for f, i in zip(acc["final"][t], acc["init"][t])] for t in acc["final"]}
    lengths = {
        t: {
            **_seeds(acc["lengths"])[t],
            # every 2nd and every 3rd checkpoint kept: how far the length is from converged in density
            "every_2nd_checkpoint": float(np.mean([v[0] for v in acc["thinned"][t]])),
            "every_3rd_checkpoint": float(np.mean([v[1] for v in acc["thinned"][t]])),
        }
        for t in acc["lengths"]
    }
    return PictureResult(
        eval_set=eval_set,
        n=int(labels.size),
        c=c,
        trajectories=len(trajs),
        checkpoints=int(sum(len(t) for t in trajs)),
        explained_stress={str(k + 1): float(chi[k]) for k in range(min(5, len(chi)))},
        progress_on_union_task=_seeds(acc["final"]),
        progress_at_init=_seeds(acc["init"]),
        progress_gain=_seeds(gain),
        riemann_length=lengths,
        geodesic_length_P0_Pstar=math.sqrt(2) * math.acos(1 / math.sqrt(c)),
        reference_task=ref,
        normalized_distance={t: _masked(nds[t], both[t]) for t in others},
        normalized_distance_spread={
            t: _seed_spread(families[t], families[ref], radii[t] + radii[ref], both[t]) for t in others
        },
        normalized_distance_interval={t: _interval(curves[t], both[t], boot, t, ref) for t in others},
        tube_radius={t: _masked(radii[t], reached[t]) for t in families},
        grid=acc["grid"].tolist(),
        reached={t: m.tolist() for t, m in reached.items()},
        task_distances=task_distances(families, acc["final"], acc["grid"], shared=shared, boot=boot),
        per_class_progress={t: np.mean(v, axis=0).tolist() for t, v in acc["per_class"].items()},
        per_class_progress_at_init={t: np.mean(v, axis=0).tolist() for t, v in acc["per_class_init"].items()},
        embedding=view,
        fit=fit,
    )


def place(res: PictureResult, models, name: str = "placed") -> dict:
    """Put new models (a run's checkpoints, or any models on the same evaluation set) into a picture.

    ``models`` (M, N, C) (or one (N, C) model, or a ``.npy`` file of them). Each gets its InPCA coordinates
    in the fitted embedding (out of sample: :meth:`taskgeom.embedding.Embedding.transform`, the double-centred
    extension, exact for an embedded model), its progress (eq. 4), and for every task of the picture its
    distance to that task's mean trajectory in tube radii at the grid value nearest its progress,
    ``d_B(model, mean(t)) / r(t)`` (Remark 5's unit with the model as a tube of radius 0). The tube radius is
    the *mean* distance of the task's seeds from their mean, so the task's own seeds lie about 1 from it, half
    of them beyond: read a value against 1 (typical of a seed), not as inside/outside. None where the model's
    progress lies outside the progress every seed of the task reached (the tube exists only there), or more
    than one grid step from it. Returns a JSON-ready dict with
    ``points`` (one dict per model) and a :class:`Line` (``line``) for the figures."""
    mods = _placeable(res, models)
    fit = res.fit
    coords = fit["embedding"].transform(host_array(pairwise_distances(mods, fit["points"])))[:, :3]
    prog = np.atleast_1d(host_array(geometry.progress(mods, fit["labels"])))
    points = [
        {"xyz": xyz.tolist(), "progress": float(t), "tube_radii": _tube_distances(res, model, float(t))}
        for model, xyz, t in zip(mods, coords, prog)
    ]
    rows = [
        {"xyz": q["xyz"], "progress": q["progress"], "epoch": None, "accuracy": None, "reached": True,
         "true_progress": q["progress"]}
        for q in points
    ]  # fmt: skip
    return {"name": name, "points": points, "line": Line(name, None, name, False, rows)}


def _placeable(res, models) -> np.ndarray:
    """``models`` as (M, N, C) float32 (as the embedded points), checked against the picture ``res``."""
    if not isinstance(res, PictureResult):
        raise TypeError(
            f"place() takes the result of taskgeom.analyse(), got {type(res).__name__} (for a folder written by "
            "taskgeom analyse or picture, use the command line: taskgeom place DIR models.npy)"
        )
    if res.fit is None:
        raise ValueError("this result holds no fitted embedding (it was read from results.json): run analyse() again")
    if isinstance(models, (str, os.PathLike)):  # a .npy file, as on the command line (never unpickled)
        models = np.load(models, mmap_mode="r", allow_pickle=False)
    m, _ = _validate.as_tensor(models, "models")
    if m.dim() == 2:
        m = m.unsqueeze(0)
    n, c = res.fit["points"].shape[1:]
    if m.dim() != 3 or tuple(m.shape[1:]) != (n, c):
        raise ValueError(
            f"models must be (M, {n}, {c}) probabilities on the picture's evaluation set, got {tuple(m.shape)}"
        )
    _validate.check_probabilities(m, "models")  # at the tolerance of the dtype given (float16 as stored)
    return host_array(m.to(torch.float32))  # as the embedded points (float32, re-indexed from the store)


def _tube_distances(res, model: np.ndarray, t: float) -> dict:
    """task -> ``d_B(model, mean(g)) / r(g)`` at the grid value g nearest the model's progress ``t`` (None
    where not every seed of the task reached g, or g is more than one grid step from ``t``)."""
    grid = np.asarray(res.grid)
    step = float(np.diff(grid).max()) if grid.size > 1 else 0.0
    g = int(np.argmin(np.abs(grid - t)))
    tubes = {}
    for task, mean in res.fit["means"].items():
        if not (res.reached[task][g] and abs(grid[g] - t) <= step + 1e-12):
            tubes[task] = None
            continue
        d = float(geometry.bhattacharyya(model, mean[g]))
        r = float(res.fit["radii"][task][g])
        tubes[task] = d / r if r > 0 else (0.0 if d == 0 else math.inf)
    return tubes


def _uncertainty(boot: _bootstrap.Resampling, grouped, members, families, reached, flat, keep, res) -> dict:
    """Bootstrap intervals of progress (final, at initialisation, gained), explained stress and tube radii
    (see :func:`analyse`)."""
    prog, init, gain = {}, {}, {}
    for task in members:
        first, last = grouped.progress_replicates(task, boot)
        over = {"over": boot.over(task)}
        est = res.progress_at_init[task]["mean"], res.progress_on_union_task[task]["mean"]
        prog[task] = {**_bootstrap.summary(last, boot.level, estimate=est[1]), **over}
        init[task] = {**_bootstrap.summary(first, boot.level, estimate=est[0]), **over}
        gain[task] = {**_bootstrap.summary(last - first, boot.level, estimate=est[1] - est[0]), **over}
    ks = [int(k) for k in res.explained_stress]
    chi = _bootstrap.stress_replicates(flat, boot.w, k=max(ks), index=boot.point_index(members, keep.sum(1)))
    radius = {
        t: {
            **_bootstrap.summary(
                trajectories.tube_radius_replicates(fam, boot.w, boot.seeds[t]),
                boot.level,
                reached[t],
                estimate=res.fit["radii"][t],
            ),
            "over": boot.over(t),
        }
        for t, fam in families.items()
    }
    return {
        "level": boot.level,
        "replicates": boot.n_boot,
        "seed": boot.seed,
        "method": "bias-corrected percentile bootstrap (Efron 1981: the percentiles shifted by the share of "
        "replicates below the estimate) over evaluation samples (multinomial counts reweighting per-sample terms) "
        "and over seeds (multinomial counts within each task; mean trajectories, tube radii and the embedded "
        "points recomputed from the seeds each replicate draws); above_estimate: the share of replicates above "
        "the estimate (1/2 where resampling leaves a statistic median-unbiased)",
        "over": boot.over(),
        "progress_on_union_task": prog,
        "progress_at_init": init,
        "progress_gain": gain,
        "explained_stress": {
            str(k): {
                # above_estimate: the share of replicates above the estimate (a seed drawn twice embeds its
                # points twice)
                **_bootstrap.summary(chi[:, k - 1], boot.level, estimate=res.explained_stress[str(k)]),
                "over": boot.over(),
            }
            for k in ks
        },
        "tube_radius": radius,
    }


def reached_mask(res, task: str) -> np.ndarray:
    """Grid points every seed of both ``task`` and the reference task reaches: elsewhere re-indexing
    repeats a run's first or last model, so curves there are not measurements. Results without
    ``reached`` (older ones) fall back to the grid values up to both tasks' final progress."""
    reached = getattr(res, "reached", None) or {}
    if task in reached and res.reference_task in reached:
        return np.asarray(reached[task], dtype=bool) & np.asarray(reached[res.reference_task], dtype=bool)
    reach = (res.task_distances or {}).get("progress_reached") or {}
    limit = min(reach.get(task, 1.0), reach.get(res.reference_task, 1.0))
    return np.asarray(res.grid) <= limit + 1e-12


def _interval(curve, keep, boot: _bootstrap.Resampling, task: str, ref_task: str):
    """Bootstrap interval of the normalised distance curve of ``curve`` (a
    :class:`taskgeom.trajectories.PairCurve` with its replicates), None outside ``keep``; {} without
    replicates."""
    if curve.replicates is None:
        return {}
    over = boot.over(task, ref_task)
    interval = _bootstrap.summary(curve.replicates, boot.level, keep, estimate=curve.normalized)
    return {**interval, "level": boot.level, "replicates": boot.n_boot, "over": over}


def _seed_spread(fam: np.ndarray, ref: np.ndarray, r: np.ndarray, keep) -> dict:
    """Where the individual seeds lie: for each seed of ``fam``, ``2 d_B(seed(t), mean_ref(t)) / (r_fam(t) +
    r_ref(t))``, the Remark 5 ratio with the seed's trajectory in place of its family's mean (same tube
    radii, whose sum is ``r``); ``low`` and ``high`` are the min and max over seeds. A seed spread, not a
    confidence interval."""
    mean_ref = np.asarray(trajectories.mean_trajectory(ref.astype(np.float64)))
    d = np.stack([np.asarray(geometry.bhattacharyya(f.astype(np.float64), mean_ref)) for f in fam])  # (K, G)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(r > 0, 2 * d / np.where(r > 0, r, 1.0), np.where(d > 0, np.inf, 0.0))
    return {"low": _masked(ratio.min(0), keep), "high": _masked(ratio.max(0), keep)}


def _pair_families(families, grid, reach, shared, a, b):
    """The two families compared on the progress both reach: re-indexed afresh on a grid over their shared
    range (``shared(a, b)``), or the common grid's values both reach; None where they share none."""
    if shared is not None:
        return shared(a, b)
    mask = np.asarray(grid) <= min(reach[a], reach[b])
    return (families[a][:, mask], families[b][:, mask]) if mask.any() else None


class TrajectoryGroups:
    """Trajectories by group and what comparing groups needs, each computed once: every run's progress at
    every checkpoint, grids over the progress runs reach, the grid values every run of some groups reaches,
    and a group's runs re-indexed on a grid. The one place for these: :func:`analyse` compares its groups
    through it, and so do the family scripts (``experiments/_family.py``).

    ``runs[group]``: the group's trajectories (seed order); ``labels``: the evaluation labels (a tensor on
    the device where the geometry runs); ``load(trajectory)``: its probabilities (T, N, C) (default: the
    trajectory's ``probs`` as stored); ``progress``: each group's per-checkpoint progress where already
    computed; ``points``: the default grid size; ``keep``: keep loaded probabilities (else each use loads
    them again; a store's memory maps cost nothing to keep, copies on a GPU do).
    """

    def __init__(self, runs: dict, labels, load=None, progress: dict | None = None, points: int = 50, backend="auto",
                 keep: bool = True):  # fmt: skip
        self.runs = {g: list(ts) for g, ts in runs.items()}
        self.labels = labels
        self.load = load if load is not None else (lambda t: np.asarray(t.probs))
        self.points, self.backend, self.keep = int(points), backend, keep
        self._progress = {g: [np.asarray(p, dtype=np.float64) for p in ps] for g, ps in (progress or {}).items()}
        self._probs: dict = {}
        self._reindexed: dict = {}

    def probs(self, group: str) -> list:
        """Each run's checkpoints (T, N, C), as ``load`` reads them."""
        if group in self._probs:
            return self._probs[group]
        out = [self.load(t) for t in self.runs[group]]
        if self.keep:
            self._probs[group] = out
        return out

    def progress(self, group: str) -> list:
        """Each run's progress (eq. 4) at every checkpoint, float64."""
        if group not in self._progress:
            self._progress[group] = [
                host_array(geometry.progress(p, self.labels, backend=self.backend)).astype(np.float64, copy=False)
                for p in self.probs(group)
            ]
        return self._progress[group]

    def _all_progress(self, groups) -> list:
        """Every run's progress at every checkpoint, over ``groups``."""
        return [p for g in groups for p in self.progress(g)]

    def final_progress(self, group: str) -> np.ndarray:
        """Each run's progress at its last checkpoint."""
        return np.array([p[-1] for p in self.progress(group)])

    def grid(self, groups, points: int | None = None) -> np.ndarray:
        """``points`` progress values over the range the runs of ``groups`` reach together, from the lowest
        start to the highest end (:func:`taskgeom.trajectories.progress_grid`)."""
        return trajectories.progress_grid(self._all_progress(groups), self.points if points is None else points)

    def shared_grid(self, groups, points: int | None = None) -> np.ndarray | None:
        """``points`` progress values over the range every run of ``groups`` reaches; None where they share
        none."""
        try:
            return trajectories.progress_grid(
                self._all_progress(groups), self.points if points is None else points, shared=True
            )
        except ValueError:
            return None

    def reached(self, groups, grid) -> np.ndarray:
        """The values of ``grid`` every run of ``groups`` reaches (:func:`taskgeom.trajectories.reached`)."""
        return trajectories.reached(self._all_progress(groups), grid)

    def inside(self, group: str, grid) -> np.ndarray:
        """(seeds, G) bool: the values of ``grid`` each of ``group``'s runs reaches."""
        return np.stack([trajectories.reached([p], grid) for p in self.progress(group)])

    def embedding(self, groups, grid, k: int = 10) -> tuple:
        """The InPCA embedding of the runs of ``groups``, re-indexed on ``grid``, at the values each run reaches
        (:func:`embed_reached`), and (runs, G) bool: those values, run after run in group order."""
        R = np.concatenate([self.reindexed(g, grid) for g in groups])
        keep = np.concatenate([self.inside(g, grid) for g in groups])
        device = self.labels.device if isinstance(self.labels, torch.Tensor) else "cpu"
        emb, _ = embed_reached(R, keep, k, device, self.backend)
        return emb, keep

    def reindexed(self, group: str, grid) -> np.ndarray:
        """(seeds, G, N, C) float32: the group's runs re-indexed on ``grid`` (Remark 4); outside a run's range
        its first or last checkpoint (compare only where :meth:`reached`)."""
        grid = np.asarray(grid, dtype=np.float64)
        key = (group, grid.tobytes())
        if key not in self._reindexed:
            self._reindexed[key] = np.stack(
                [
                    host_array(trajectories.reindex(p, self.labels, grid=grid, progress=tk)).astype(np.float32)
                    for p, tk in zip(self.probs(group), self.progress(group))
                ]
            )
        return self._reindexed[key]

    def progress_replicates(self, group: str, boot) -> tuple:
        """Bootstrap replicates (B,) of the mean progress over ``group``'s seeds at initialisation (its runs'
        first checkpoints) and at their last, under ``boot``'s sample and seed counts
        (:class:`taskgeom.bootstrap.Resampling`): the intervals of progress and of its gain."""
        out = []
        for k in (0, -1):
            ends = [p[k] for p in self.probs(group)]  # K models (N, C), stacked by progress_replicates
            out.append(boot.seed_mean(group, host_array(_bootstrap.progress_replicates(ends, self.labels, boot.w))))
        return out[0], out[1]

    def pairs_on_shared_grid(self, groups):
        """``shared(a, b)`` for :func:`task_distances`: groups a and b re-indexed on one grid over the range
        every run of every one of ``groups`` reaches (:meth:`shared_grid`), so that every pair is compared
        over the same progress; None where there is no such range. ``shared.grid``: that range's values
        (empty without one)."""
        g = self.shared_grid(groups)
        g = np.zeros(0) if g is None else g

        def shared(a, b):
            return (self.reindexed(a, g), self.reindexed(b, g)) if g.size else None

        shared.grid = g
        return shared


def _compare_pair(pair, boot, a: str, b: str) -> tuple:
    """Normalised and Bhattacharyya distance of two families over their shared grid (means over it), and
    their bootstrap replicates (B,) over evaluation samples and seeds (None without a bootstrap)."""
    if pair is None:
        return math.nan, math.nan, None, None
    means = [tensor_of(f.astype(np.float64).mean(0)) for f in pair]
    curve = trajectories.compare_families(*pair, boot, a, b)
    nd = float(np.mean(curve.normalized))
    db = float(reference.bhattacharyya(*means).mean())
    if curve.replicates is None:
        return nd, db, None, None
    return nd, db, curve.replicates.mean(0), curve.bhattacharyya_replicates.mean(0)


def _matrix_intervals(reps: dict, names: list, boot, estimate: np.ndarray) -> dict:
    """``{"low", "high"}`` matrices from the replicates of each pair ``(i, j)`` (0 on the diagonal), bias-corrected
    by the ``estimate`` matrix (:func:`taskgeom.bootstrap.percentile_interval`)."""
    k = len(names)
    lo, hi = np.zeros((k, k)), np.zeros((k, k))
    for (i, j), r in reps.items():
        if r is None:
            lo[i, j] = lo[j, i] = hi[i, j] = hi[j, i] = math.nan
            continue
        lo[i, j], hi[i, j] = _bootstrap.percentile_interval(r, boot.level, estimate=estimate[i, j])
        lo[j, i], hi[j, i] = lo[i, j], hi[i, j]
    return {"low": lo.tolist(), "high": hi.tolist(), "level": boot.level, "over": boot.over(*names)}


def task_distances(families: dict, final_progress: dict, grid: np.ndarray, shared=None, boot=None) -> dict:
    """Distances between every pair of task families, over progress they all reach.

    ``families[task]`` is (seeds, G, N, C) re-indexed trajectories. Pairs are compared over progress that
    every seed reaches, never beyond (where re-indexing would clamp a trajectory to its first or last
    model): ``shared(a, b)`` (as :func:`analyse` passes) returns the two families re-indexed on one grid
    over the range every seed of every task reaches (``shared.grid``), so that all pairs are compared over
    the same progress (a pair's own range would make a task that reaches little progress look close to
    every other by construction); without it, the common grid's values up to the smaller of the two
    tasks' final progress are used. Where there is no shared progress the trajectory comparisons are NaN
    (``points_compared`` 0). Reported: ``normalized``, the mean over that range of
    the Remark 5 ratio at each progress (distance between mean trajectories over the mean of the two tube
    radii at that progress), and ``bhattacharyya``, the mean Bhattacharyya distance between the mean
    trajectories; with a bootstrap (``boot``, from :func:`analyse`) also their intervals over evaluation
    samples (``normalized_interval``, ``bhattacharyya_interval``). ``normalized_final`` and
    ``bhattacharyya_final`` compare the final models (the last checkpoints) the same way: the comparison
    that still says something when a task reaches little progress on the union task.
    """
    names = list(families)
    k = len(names)
    nd, db, nd_end, db_end = (np.zeros((k, k)) for _ in range(4))
    reach = {t: float(min(final_progress[t])) for t in names}
    means = {t: families[t].astype(np.float64).mean(0) for t in names}
    points, nd_reps, db_reps = {}, {}, {}
    for i, a in enumerate(names):
        for j in range(i + 1, k):
            b = names[j]
            pair = _pair_families(families, grid, reach, shared, a, b)
            points[f"{a}|{b}"] = 0 if pair is None else int(pair[0].shape[1])
            nd[i, j], db[i, j], nd_reps[i, j], db_reps[i, j] = _compare_pair(pair, boot, a, b)
            nd[j, i], db[j, i] = nd[i, j], db[i, j]
            # the final models (the re-indexed trajectories end at each run's last checkpoint)
            nd_end[i, j] = nd_end[j, i] = float(
                trajectories.compare_families(families[a][:, -1:], families[b][:, -1:]).normalized[0]
            )
            db_end[i, j] = db_end[j, i] = float(geometry.bhattacharyya(means[a][-1], means[b][-1]))
    out = {
        "tasks": names,
        "normalized": nd.tolist(),
        "bhattacharyya": db.tolist(),
        "normalized_final": nd_end.tolist(),
        "bhattacharyya_final": db_end.tolist(),
        "progress_reached": reach,
        "points_compared": points,
    }
    g = getattr(shared, "grid", None)
    if g is not None:
        out["progress_compared"] = [float(g[0]), float(g[-1])] if len(g) else None
    if boot is not None and boot.n_boot:
        out["normalized_interval"] = _matrix_intervals(nd_reps, names, boot, nd)
        out["bhattacharyya_interval"] = _matrix_intervals(db_reps, names, boot, db)
    return out
