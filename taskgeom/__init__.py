"""taskgeom: the information geometry of learnable tasks (Ramesh et al., ICML 2023).

A model is an (N, C) matrix of class probabilities on a fixed evaluation set. taskgeom computes
Bhattacharyya distances, geodesics, progress, re-indexed trajectories, trajectory distances, Riemann
lengths, tubes and InPCA embeddings of such models, on C++/OpenMP and CUDA kernels.
"""

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
