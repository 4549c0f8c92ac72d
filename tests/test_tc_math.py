"""The host/device arithmetic of the fp64 tensor-core kernel (csrc/tc_math.h: running product of BC,
exponent split, one logarithm per product), run on the CPU through taskgeom._C, against float64 NumPy."""

import math

import numpy as np
import pytest
import torch

from taskgeom import kernels
from taskgeom import reference as R

from testing import nearby

FLOOR = 1e-30


def product_log(bc: np.ndarray, split_every: int | None = None) -> np.ndarray:
    """Per column of bc (n, lanes): sum_n -log(max(bc, BC_FLOOR)) as the kernel computes it."""
    mod = kernels.cpu_module()
    bc = np.ascontiguousarray(bc, dtype=np.float64)
    if bc.ndim == 1:
        bc = bc[:, None]
    out = np.empty(bc.shape[1])
    mod.tc_product_log(bc.ctypes.data, bc.shape[0], bc.shape[1], out.ctypes.data, split_every or mod.tc_split_every)
    return out


def exact(bc: np.ndarray) -> np.ndarray:
    """float64 reference: per sample -log1p(bc - 1) (bc - 1 is exact for bc in [1/2, 2]) or -log(bc),
    summed with fsum."""
    bc = np.maximum(np.asarray(bc, dtype=np.float64), FLOOR)
    if bc.ndim == 1:
        bc = bc[:, None]
    with np.errstate(divide="ignore"):  # (np.where evaluates both branches)
        per = np.where(bc > 0.5, -np.log1p(bc - 1.0), -np.log(bc))
    return np.array([math.fsum(col) for col in per.T])


def test_bc_one_exactly_gives_zero():
    got = product_log(np.ones((1001, 3)))
    assert np.all(got == 0.0)


def test_bc_at_and_below_the_floor_over_many_samples():
    # 10,000 factors of 1e-30 are 1e-300000: without the exponent split the product is 0 after 11 samples
    bc = np.full((10_000, 4), FLOOR)
    bc[:, 1] = 0.0  # disjoint supports
    bc[:, 2] = 1e-45  # below the floor
    bc[::3, 3] = 1e-300
    assert np.prod(bc[:20, 0]) == 0.0  # (what the split avoids)
    got = product_log(bc)
    np.testing.assert_allclose(got, 10_000 * -math.log(FLOOR), rtol=1e-13)


@pytest.mark.parametrize("split_every", [1, 3, 8])
def test_random_coefficients_match_float64(split_every):
    rng = np.random.default_rng(0)
    n = 10_007  # not a multiple of the split interval
    bc = np.exp(-rng.uniform(0, 70, size=(n, 5)))  # down to the floor
    bc[:, 1] = 1 - rng.uniform(0, 1e-6, n)  # near 1
    bc[:, 2] = rng.uniform(0.5, 1.0, n)
    bc[::7, 3] = 0.0
    bc[:, 4] = np.minimum(1.0, bc[:, 4] * 1e10)
    got = product_log(bc, split_every)
    ref = exact(bc)
    # each multiplication rounds by at most 2^-53 relative: the sum's absolute error is below n 2^-52
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=n * 2.0**-52)


def test_bc_one_minus_1e_12():
    # BC = 1 - 1e-12 (as stored in float64): d = 1e-12 per sample. Each product rounding adds up to
    # 2^-53 absolute (1.1e-4 relative at this d), the same order as the float64 Gram sum's own error
    # (a few 1e-16): relative accuracy 1e-5 holds from d ~ 1e-11 per sample on, 1e-7 at d = 1e-9.
    n = 4096
    x = 1.0 - 1e-12
    got = product_log(np.full(n, x))[0]
    ref = -n * math.log1p(x - 1.0)
    assert abs(got - ref) <= n * 2.0**-53
    assert abs(got - ref) / ref < 2e-4


@pytest.mark.parametrize("d", [1e-9, 1e-7])
def test_small_d_per_sample_keeps_1e_5(d):
    # BC = exp(-d) exactly as stored; d = 1e-9 per sample is the accuracy corner
    n = 10_000
    bc = np.full((n, 2), math.exp(-d))
    bc[:, 1] = np.exp(-d * np.linspace(0.5, 1.5, n))
    got = product_log(bc)
    ref = exact(bc)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_gram_then_product_on_nearby_models_matches_reference():
    """The kernel's whole arithmetic on the CPU: float64 Gram BC of sqrt(p / sum p), the product with
    exponent splits and one logarithm, against the cancellation-free float64 reference. noise 1e-4
    gives d near 6e-10 per sample."""
    for noise in (1e-3, 1e-4):
        p = nearby(10_000, 10, noise, seed=5).float()  # stored values, as a kernel sees them
        s = torch.sqrt(p.double() / p.double().sum(-1, keepdim=True)).numpy()
        bc = np.einsum("nc,nc->n", s[0], s[1])
        d = product_log(bc)[0] / p.shape[1]
        ref = float(R.bhattacharyya(p[0], p[1]))
        assert abs(d - ref) <= 1e-5 * ref, (noise, d, ref)


def test_split_every_is_checked():
    mod = kernels.cpu_module()
    out = np.empty(1)
    bc = np.ones(4)
    with pytest.raises(ValueError, match="split_every"):
        mod.tc_product_log(bc.ctypes.data, 4, 1, out.ctypes.data, mod.tc_split_every + 1)
