"""taskgeom: the information geometry of learnable tasks (Ramesh et al., ICML 2023).

A model is an (N, C) matrix of class probabilities on a fixed evaluation set. taskgeom computes
Bhattacharyya distances, geodesics, progress, re-indexed trajectories, trajectory distances, Riemann
lengths, tubes and InPCA embeddings of such models, on C++/OpenMP and CUDA kernels.
"""

import os as _os
import sys as _sys

# OpenMP threads that wait (at a barrier, or for the next parallel region) sleep instead of spinning: on a
# machine that other jobs also use, a spinning thread burns the time slice that the thread it waits for
# needs (issue 27: the 2-thread pairwise kernel ran 3.4x slower than 1 thread beside busy processes,
# and an order of magnitude slower beside 2 to 4 of them, before its barriers were cut from ~80 to one per
# chunk). The kernels share torch's OpenMP runtime (libgomp, loaded once per process), which reads this
# when torch is first imported: it takes effect only when taskgeom is imported before torch, and a choice
# already made (OMP_WAIT_POLICY, or GOMP_SPINCOUNT) is kept.
if "torch" not in _sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ):
    _os.environ["OMP_WAIT_POLICY"] = "passive"

from ._build import build_info
from .analysis import PictureResult, analyse, place
from .compare import Comparison, compare
from .distances import pairwise_distances
from .embedding import Embedding, InPCA, explained_stress, inpca, random_projection
from .geometry import (
    Ignorance,
    Truth,
    bhattacharyya,
    geodesic,
    geodesic_progress,
    ignorance,
    per_class_progress,
    progress,
    truth,
)
from .imprint import ImprintedHead, fit_temperature, imprint
from .large import LandmarkInPCA, inpca_on_device, inpca_out_of_core, landmark_inpca
from .modelsets import ModelSet, open_models
from .reference import BC_FLOOR, PROB_FLOOR
from .store import PredictionStore, StoreError
from .tiled import DistanceMatrix
from .train.record import Recorder
from .trajectories import (
    mean_trajectory,
    normalized_distance,
    progress_grid,
    reindex,
    riemann_length,
    trajectory_distance,
    tube_radius,
)

__version__ = "0.1.0"

__all__ = [
    "BC_FLOOR",
    "PROB_FLOOR",
    "Comparison",
    "PictureResult",
    "Recorder",
    "analyse",
    "compare",
    "place",
    "PredictionStore",
    "StoreError",
    "Ignorance",
    "Embedding",
    "ImprintedHead",
    "InPCA",
    "DistanceMatrix",
    "LandmarkInPCA",
    "ModelSet",
    "inpca_on_device",
    "inpca_out_of_core",
    "landmark_inpca",
    "open_models",
    "Truth",
    "bhattacharyya",
    "build_info",
    "explained_stress",
    "fit_temperature",
    "geodesic",
    "geodesic_progress",
    "ignorance",
    "imprint",
    "inpca",
    "mean_trajectory",
    "normalized_distance",
    "pairwise_distances",
    "per_class_progress",
    "progress",
    "progress_grid",
    "random_projection",
    "reindex",
    "riemann_length",
    "trajectory_distance",
    "truth",
    "tube_radius",
]
