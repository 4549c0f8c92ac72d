"""The divergences between models, in one registry: name -> kernel code, float64 reference, docs.

Every layer reads this table: :mod:`taskgeom.reference` (the oracle), :mod:`taskgeom.kernels` (the
code passed to the C++ and CUDA kernels), :func:`taskgeom.pairwise_distances` and the command line.
The kernel codes are not written here: they come from the native enum ``taskgeom._C.Divergence``
(``csrc/divergence.h``), and a test checks that the two lists agree.

Conventions shared with the kernels: stored rows are renormalised to sum to one in float64 before any
computation; per-sample Bhattacharyya coefficients are floored at :data:`BC_FLOOR` (disjoint supports
give the finite per-sample distance ``-log(BC_FLOOR)``, about 69.08); probabilities are floored at
:data:`PROB_FLOOR` inside logarithms.

Adding a divergence: its per-sample reference function and an entry in :data:`REGISTRY` here, one line
in ``csrc/divergence.h``, one traits struct in each of ``csrc/cpu/pairwise_cpu.cpp`` and
``csrc/cuda/pairwise_cuda.cu``, and tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # torch is imported where the maths runs: the registry's names serve `taskgeom --help`
    import torch


__all__ = [
    "BC_FLOOR",
    "PROB_FLOOR",
    "Divergence",
    "REGISTRY",
    "names",
    "get",
    "normalized",
    "bhattacharyya_per_sample",
    "hellinger_per_sample",
    "symmetric_kl_per_sample",
]

BC_FLOOR = 1e-30
PROB_FLOOR = 1e-30


def normalized(p: torch.Tensor) -> torch.Tensor:
    """Rows in float64, negatives clipped, renormalised to sum to one (stored float16 rows are off by
    up to ~1e-3, and the equivalent forms of d_B agree only on normalised rows)."""
    import torch

    p = p.to(torch.float64).clamp_min(0)
    s = p.sum(-1, keepdim=True)
    return p / torch.where(s > 0, s, torch.ones_like(s))


def bhattacharyya_per_sample(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-sample d_B (eq. 2 before the mean) without cancellation, shape ``broadcast(p, q)[..., N]``.

    ``1 - BC = h = 1/2 sum_c (sqrt p - sqrt q)^2``; ``d = -log1p(-h)`` for h <= 1/2, else ``-log(BC)``.
    """
    import torch

    sp, sq = normalized(p).sqrt(), normalized(q).sqrt()
    h = 0.5 * ((sp - sq) ** 2).sum(-1)
    bc = (sp * sq).sum(-1)
    return torch.where(h <= 0.5, -torch.log1p(-h.clamp(max=0.5)), -torch.log(bc.clamp_min(BC_FLOOR)))


def hellinger_per_sample(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-sample squared Hellinger distance ``1 - BC = 1/2 sum_c (sqrt p - sqrt q)^2`` (in [0, 1])."""
    sp, sq = normalized(p).sqrt(), normalized(q).sqrt()
    return 0.5 * ((sp - sq) ** 2).sum(-1)


def symmetric_kl_per_sample(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-sample ``sum_c (p - q)(log p - log q)`` (Appendix C), shape ``broadcast(p, q)[..., N]``."""
    p, q = normalized(p), normalized(q)
    return ((p - q) * (p.clamp_min(PROB_FLOOR).log() - q.clamp_min(PROB_FLOOR).log())).sum(-1)


@dataclass(frozen=True)
class Divergence:
    """One divergence: its name, its float64 per-sample reference and a one-line description. The
    divergence between two models is the mean of the per-sample values over samples."""

    name: str
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    doc: str

    @property
    def code(self) -> int:
        """The native kernels' code (from ``taskgeom._C.Divergence``, else ``taskgeom._cuda``)."""
        from ._native import native_module

        mod = native_module()
        try:
            return int(mod.Divergence.__members__[self.name])
        except KeyError:
            raise RuntimeError(
                f"the compiled kernels do not know the divergence {self.name!r}; rebuild taskgeom (pip install .)"
            ) from None


REGISTRY: dict[str, Divergence] = {
    d.name: d
    for d in (
        Divergence(
            "bhattacharyya",
            bhattacharyya_per_sample,
            "Bhattacharyya distance -log sum_c sqrt(p q) (eq. 2), averaged over samples",
        ),
        Divergence(
            "symmetric_kl",
            symmetric_kl_per_sample,
            "Jeffreys' divergence KL(p||q) + KL(q||p) (Appendix C), averaged over samples",
        ),
        Divergence(
            "hellinger", hellinger_per_sample, "squared Hellinger distance 1 - sum_c sqrt(p q), averaged over samples"
        ),
    )
}


def names() -> list[str]:
    """The registered divergence names."""
    return list(REGISTRY)


def get(name) -> Divergence:
    """The registry entry of ``name`` (a :class:`Divergence` passes through); a ValueError lists the
    known names otherwise."""
    if isinstance(name, Divergence):
        return name
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"divergence must be one of {names()}, got {name!r}") from None
