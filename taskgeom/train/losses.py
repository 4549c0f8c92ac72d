"""The training objectives of the self-supervised and episodic methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent", "barlow_twins", "prototypical"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy of two views' projections (B, D) each."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> torch.Tensor:
    """Barlow Twins: the cross-correlation of two views' standardised projections pushed to identity."""
    n = z1.shape[0]
    z1 = (z1 - z1.mean(0)) / (z1.std(0) + 1e-6)
    z2 = (z2 - z2.mean(0)) / (z2.std(0) + 1e-6)
    c = z1.T @ z2 / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on + lam * off


def prototypical(features_s, y_s, features_q, y_q, way: int) -> torch.Tensor:
    """Prototypical networks: cross-entropy of negative squared distances to the support class means."""
    protos = torch.stack([features_s[y_s == j].mean(0) for j in range(way)])
    return F.cross_entropy(-(torch.cdist(features_q, protos) ** 2), y_q)
