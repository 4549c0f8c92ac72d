"""Pieces of the fast CIFAR-10 recipes that any network can take (``TrainConfig`` fields ``bn_scale``,
``bn_momentum``, ``conv_init``, ``lookahead``): BatchNorm with frozen scales and fast running statistics,
PyTorch's default (smaller) and identity-initialised convolutions, and lookahead of the weights (Zhang et
al., 2019, "Lookahead Optimizer: k steps forward, 1 step back"; with a decay that rises over training, as
the fastest published CIFAR-10 trainings use it). Every default leaves a network as it was built."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..choices import CONV_INITS  # noqa: F401 (the names, importable from here too)

__all__ = ["apply_recipe", "Lookahead", "CONV_INITS"]


#: Initialisations of :func:`apply_recipe` (``TrainConfig.conv_init``).


@torch.no_grad()
def apply_recipe(model: nn.Module, bn_scale: bool = True, bn_momentum: float = 0.1, conv_init: str = "kaiming"):
    """Set every BatchNorm's running-statistics momentum (PyTorch's convention: the weight of each new
    batch); with ``bn_scale=False`` freeze its scale (at the 1 it was initialised to: only the shift learns).
    ``conv_init``: ``"kaiming"`` keeps the network's initialisation; ``"torch"`` re-draws every trainable
    convolution and linear weight with PyTorch's default (uniform, std ``1/sqrt(3 fan_in)``; frozen layers,
    such as a fitted stem, and biases are left alone); ``"dirac"`` and ``"torch-dirac"`` then set the first
    ``in_channels`` filters of every trainable 3 x 3 convolution (groups 1, at least as many outputs as
    inputs) to the identity, the others keeping their random initialisation. Returns ``model``."""
    if conv_init not in CONV_INITS:
        raise ValueError(f"conv_init must be one of {', '.join(CONV_INITS)}, got {conv_init!r}")
    if not 0.0 <= bn_momentum <= 1.0:
        raise ValueError(f"bn_momentum must be in [0, 1], got {bn_momentum}")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = float(bn_momentum)
            if not bn_scale and m.weight is not None:
                m.weight.requires_grad_(False)
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad:
            w = m.weight
            if conv_init.startswith("torch"):
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # what nn.Conv2d / nn.Linear draw by default
            if conv_init.endswith("dirac") and isinstance(m, nn.Conv2d):
                if m.kernel_size == (3, 3) and m.groups == 1 and w.shape[0] >= w.shape[1]:
                    nn.init.dirac_(w[: w.shape[1]])
    return model


class Lookahead:
    """Slow weights beside the network's (Lookahead; every floating-point entry of its ``state_dict``,
    BatchNorm's running statistics included). Every ``every`` steps, and at the last one,
    :meth:`step` moves the slow weights toward the network's, ``slow <- decay * slow + (1 - decay) * fast``,
    and sets the network's to them. ``decay = final_decay * (step / total)^3``: none early in training,
    ``final_decay`` at its end. The slow weights are part of the saved training state (:meth:`state_dict`),
    so a resumed run continues exactly."""

    def __init__(self, model: nn.Module, every: int, total: int, final_decay: float):
        if every < 1:
            raise ValueError(f"lookahead needs every >= 1 step, got {every}")
        if not 0.0 <= final_decay <= 1.0:
            raise ValueError(f"lookahead_decay must be in [0, 1], got {final_decay}")
        self.model, self.every, self.total, self.final_decay = model, int(every), max(1, int(total)), final_decay
        live = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}  # views of the model's tensors
        self.slow = {k: v.detach().clone() for k, v in live.items()}
        self._live, self._slow = list(live.values()), list(self.slow.values())  # paired, for the foreach updates

    def decay(self, step: int) -> float:
        return self.final_decay * (min(step, self.total) / self.total) ** 3

    @torch.no_grad()
    def step(self, step: int) -> bool:
        """After optimisation step ``step`` (counted from 1): update when it is due; whether it was."""
        if step % self.every and step != self.total:
            return False
        torch._foreach_lerp_(self._slow, self._live, 1.0 - self.decay(step))
        torch._foreach_copy_(self._live, self._slow)
        return True

    def state_dict(self) -> dict:
        return {k: v.clone() for k, v in self.slow.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.slow) - set(state))
        if missing:
            raise ValueError(f"saved lookahead state lacks {len(missing)} entries (first: {missing[0]})")
        for k, v in self.slow.items():
            if state[k].shape != v.shape:
                raise ValueError(f"saved lookahead state: {k} has shape {tuple(state[k].shape)}, not {tuple(v.shape)}")
            v.copy_(state[k])
