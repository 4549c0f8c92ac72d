"""taskgeom: the information geometry of learnable tasks (Ramesh et al., ICML 2023).

A model is an (N, C) matrix of class probabilities on a fixed evaluation set. taskgeom computes
Bhattacharyya distances, geodesics, progress, re-indexed trajectories, trajectory distances, Riemann
lengths, tubes and InPCA embeddings of such models, on C++/OpenMP and CUDA kernels.
"""

# first: OpenMP's wait policy, settled before anything imports torch (taskgeom/_openmp.py)
from . import _openmp  # noqa: F401
from ._lazy import lazy

# What each public name is, and where it lives: imported on first use (PEP 562), so that `import taskgeom`
# and `taskgeom --help` do not import torch (about 2 s).
_EXPORTS = {
    "build_info": "._build",
    "PictureResult": ".analysis",
    "analyse": ".analysis",
    "place": ".analysis",
    "publish": ".report",
    "Comparison": ".comparison",
    "compare": ".comparison",
    "pairwise_distances": ".pairwise",
    "Embedding": ".embedding",
    "InPCA": ".embedding",
    "explained_stress": ".embedding",
    "inpca": ".embedding",
    "random_projection": ".embedding",
    "Ignorance": ".geometry",
    "Truth": ".geometry",
    "bhattacharyya": ".geometry",
    "geodesic": ".geometry",
    "geodesic_progress": ".geometry",
    "ignorance": ".geometry",
    "per_class_progress": ".geometry",
    "progress": ".geometry",
    "truth": ".geometry",
    "ImprintedHead": ".imprinting",
    "fit_temperature": ".imprinting",
    "imprint": ".imprinting",
    "LandmarkInPCA": ".large",
    "inpca_on_device": ".large",
    "inpca_out_of_core": ".large",
    "landmark_inpca": ".large",
    "ModelSet": ".modelsets",
    "open_models": ".modelsets",
    "BC_FLOOR": ".reference",
    "PROB_FLOOR": ".reference",
    "PredictionStore": ".store",
    "StoreError": ".store",
    "DistanceMatrix": ".tiled",
    "Recorder": ".train.record",
    "mean_trajectory": ".trajectories",
    "normalized_distance": ".trajectories",
    "progress_grid": ".trajectories",
    "reindex": ".trajectories",
    "riemann_length": ".trajectories",
    "trajectory_distance": ".trajectories",
    "tube_radius": ".trajectories",
}


__getattr__, __dir__ = lazy(__name__, globals(), _EXPORTS)

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
    "publish",
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
