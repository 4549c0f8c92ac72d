"""Producing trajectories (Appendix A): train a network on a task with one of the registered methods and
record each checkpoint's predictions, after imprinting onto the evaluation (union) task, into a
PredictionStore.

Methods (:mod:`taskgeom.train.methods`): ``supervised`` (SGD + Nesterov 0.9, cosine schedule, weight
decay excluding normalisation parameters and biases, optional label smoothing, mixed precision on GPU),
``finetune`` (supervised from a saved checkpoint's backbone), ``protonet`` (episodic meta-learning with
the prototypical loss), ``simclr`` (NT-Xent on two views), ``barlow`` (Barlow Twins) and ``fixmatch``
(a labelled subset plus confident pseudo-labels of weakly augmented images on strongly augmented ones).
On CUDA runs use bfloat16 autocast, channels-last convolutions and fused optimisers by default; the
``triangle`` schedule with warm-up and the ``fast-resnet`` network are the fast recipes' (bench/bench_train.py),
as are frozen BatchNorm scales, identity-initialised convolutions and lookahead (:mod:`taskgeom.train.recipe`).
The loop (schedule, recording, resume) is in :mod:`taskgeom.train.loop`.
"""

from .._lazy import lazy

_EXPORTS = {
    "PRESETS": ".config",
    "TrainConfig": ".config",
    "apply_preset": ".config",
    "check_config": ".loop",
    "checkpoint_steps": ".loop",
    "identity": ".loop",
    "lr_factor": ".loop",
    "resolve_device": ".loop",
    "train": ".loop",
    "METHODS": ".methods",
    "Method": ".methods",
    "get_method": ".methods",
    "register_method": ".methods",
}
__getattr__, __dir__ = lazy(__name__, globals(), _EXPORTS)

__all__ = [
    "METHODS",
    "Method",
    "PRESETS",
    "TrainConfig",
    "apply_preset",
    "checkpoint_steps",
    "get_method",
    "identity",
    "lr_factor",
    "check_config",
    "register_method",
    "resolve_device",
    "train",
]
