"""The public ``pairwise_distances``: in memory (:func:`taskgeom.geometry.pairwise_distances`) or, with
``out=PATH``, out of core (:mod:`taskgeom.tiled`), locally or on Ray (:mod:`taskgeom.engines`)."""

from __future__ import annotations

from . import divergences, engines, tiled
from . import geometry as _geometry
from ._checks import check_choice, check_int
from .modelsets import open_models
from .tiled import DEFAULT_BUDGET

__all__ = ["pairwise_distances"]

_RUN_OPTIONS = {"backend", "threads", "num_cpus", "num_gpus", "max_retries", "connect_timeout"}


def pairwise_distances(
    models,
    others=None,
    *,
    out=None,
    engine: str = "local",
    address: str | None = None,
    budget: int = DEFAULT_BUDGET,
    tile: int | None = None,
    progress_bar: bool = False,
    **kwargs,
):
    """:func:`taskgeom.geometry.pairwise_distances`, or, with ``out=PATH``, the out-of-core version.

    With ``out``, ``models`` is anything :func:`taskgeom.modelsets.open_models` opens (an ``(m, N, C)``
    ``.npy`` path, an array, a store folder or :class:`~taskgeom.store.PredictionStore`); the matrix is
    computed tile by tile into the folder ``out`` (see the module docstring) and returned as a read-only
    memory map. A run killed halfway resumes without recomputing finished tiles; models appended to the
    source later add only their rows and columns. ``engine="ray"`` runs the tiles as Ray tasks
    (:mod:`taskgeom.engines`; ``address`` of the cluster, default a local Ray, reached within
    ``connect_timeout`` seconds or refused with one line). ``budget``: bytes of models and output held at
    once (a positive integer; sets the tile size of a new folder). ``tile``: models per tile side (a
    positive integer; an existing folder keeps its own, and another explicit size is refused). Other
    keyword arguments (``divergence``, ``backend``, ``threads``, and Ray's ``num_cpus``, ``num_gpus``,
    ``max_retries``, ``connect_timeout``) are passed to the tile computations. A folder that is unfinished
    after the run (or was written for other models) is refused with one line, never returned.
    """
    budget = check_int(budget, "budget", minimum=1)  # on every route, though only out=PATH uses it
    if out is None:
        if engine != "local":
            raise ValueError("engine='ray' needs out=PATH (the tiles are written to a folder)")
        return _geometry.pairwise_distances(models, others, **kwargs)
    if others is not None:
        raise ValueError("out=PATH computes the symmetric matrix of one model set; pass others=None")
    check_choice(engine, "engine", engines.ENGINES)
    if tile is not None:
        tile = check_int(tile, "tile", minimum=1)
    divergence = divergences.get(kwargs.pop("divergence", "bhattacharyya")).name
    unknown = set(kwargs) - _RUN_OPTIONS
    if unknown:
        raise ValueError(f"out=PATH does not take {sorted(unknown)}")
    ms = open_models(models)
    dm = tiled.open_for(out, ms, divergence, tile, budget)
    engines.run_tiles(dm, ms, divergence, engine=engine, address=address, progress_bar=progress_bar, **kwargs)
    dm = tiled.DistanceMatrix(dm.path)
    return dm.array()  # (a one-line ValueError naming the missing tiles if any are)
