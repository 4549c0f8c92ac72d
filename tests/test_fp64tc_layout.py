"""A model of the fp64 tensor-core kernel's index arithmetic (csrc/cuda/pairwise_fp64tc.cu), run on the CPU:
the staging layout [sample][k-step][model][4 classes], the symmetric tile enumeration, sample splits,
the 16-byte cp.async mapping of a stage into shared memory, the fragment addresses (row_major A and
col_major B with ldm = 4), the end of a sample every KC k-steps, and the scatter of 8 x 8 results with
the j > i filter. Each index formula is written as in the kernel; the 8 x 8 x 4 products are exact
NumPy products, so this checks the addressing, not the tensor cores (the GPU run checks those). Keep in
step with the kernel."""

import math

import numpy as np
import pytest

from taskgeom import reference as R

from testing import models


def stage(p, inv, n0, nc, KC, mpad):
    """stage_fp64_kernel: one warp per (model, sample) row, lanes over the padded classes."""
    m, _, C = p.shape
    X = np.full(nc * KC * mpad * 4, np.nan)
    for row in range(mpad * nc):
        model, n = row // nc, row % nc
        real = model < m
        inv_row = inv[model, n0 + n] if real else 0.0
        dst = (n * KC * mpad + model) * 4
        for c in range(4 * KC):
            x = 0.0
            if real and c < C:
                x = math.sqrt(max(p[model, n0 + n, c], 0.0) * inv_row)
            X[dst + (c // 4) * mpad * 4 + c % 4] = x
    return X


def block(A, B, mpa, mpb, ma, mb, KC, nc, per_split, symmetric, tiles_j, inv_norm, out, cfg, bx, bz):
    T, WM, WN, KS = cfg
    WJ, WI = T // (8 * WN), T // (8 * WM)
    warps = WI * WJ
    if symmetric:
        idx, ti, row_len = bx, 0, tiles_j
        while idx >= row_len:
            idx -= row_len
            ti += 1
            row_len -= 1
        tj = ti + idx
    else:
        ti, tj = bx // tiles_j, bx % tiles_j
    i0, j0 = ti * T, tj * T
    s_begin = bz * per_split
    s_end = min(s_begin + per_split, nc)
    if s_begin >= s_end:
        return
    qb, qe = s_begin * KC, s_end * KC
    stage_sz, op = 2 * KS * T * 4, KS * T * 4
    smem = np.full(2 * stage_sz, np.nan)

    def load(buf, q0):
        for e in range(KS * T * 2):
            ks, w = e // (T * 2), e % (T * 2)
            q = q0 + ks
            if q < qe:
                sa, ga = buf * stage_sz + ks * T * 4 + w * 2, i0 * 4 + q * mpa * 4 + w * 2
                sb, gb = buf * stage_sz + op + ks * T * 4 + w * 2, j0 * 4 + q * mpb * 4 + w * 2
                smem[sa : sa + 2] = A[ga : ga + 2]
                smem[sb : sb + 2] = B[gb : gb + 2]

    bc = np.zeros((warps, WM, WN, 8, 8))
    acc = np.zeros((warps, WM, WN, 8, 8))
    kk, buf, q0 = 0, 0, qb
    load(0, qb)
    while q0 < qe:
        if q0 + KS < qe:
            load(buf ^ 1, q0 + KS)
        for ks in range(min(KS, qe - q0)):
            for wp in range(warps):
                wi, wj = wp // WJ, wp % WJ
                sA = buf * stage_sz + wi * WM * 8 * 4 + ks * T * 4
                sB = buf * stage_sz + op + wj * WN * 8 * 4 + ks * T * 4
                for f in range(WM):
                    a = smem[sA + f * 32 : sA + f * 32 + 32].reshape(8, 4)  # row_major: (r, k) at r * 4 + k
                    for g in range(WN):
                        b = smem[sB + g * 32 : sB + g * 32 + 32].reshape(8, 4).T  # col_major: (k, j) at j * 4 + k
                        assert not (np.isnan(a).any() or np.isnan(b).any()), "read a shared slot nothing wrote"
                        bc[wp, f, g] += a @ b
            kk += 1
            if kk == KC:
                kk = 0
                acc -= np.log(np.maximum(bc, 1e-30))
                bc[:] = 0
        buf ^= 1
        q0 += KS
    for wp in range(warps):
        wi, wj = wp // WJ, wp % WJ
        for f in range(WM):
            for g in range(WN):
                for e in range(64):
                    i, j = i0 + (wi * WM + f) * 8 + e // 8, j0 + (wj * WN + g) * 8 + e % 8
                    if i < ma and j < mb and (not symmetric or j > i):
                        out[i, j] += acc[wp, f, g, e // 8, e % 8] * inv_norm


def model_of_kernel(a, b, cfg, scratch_samples, sms=2, bps=1):
    """pairwise_fp64tc's host loop (chunks, splits) around the block model."""
    T = cfg[0]
    sym = b is None
    bb = a if sym else b
    (ma, N, C), mb = a.shape, bb.shape[0]
    KC = (C + 3) // 4
    mpa = (ma + T - 1) // T * T
    mpb = mpa if sym else (mb + T - 1) // T * T
    nc = min(N, scratch_samples)
    tiles_i, tiles_j = mpa // T, mpb // T
    tiles = tiles_i * (tiles_i + 1) // 2 if sym else tiles_i * tiles_j
    want = sms * bps * 8
    out = np.zeros((ma, mb))
    for n0 in range(0, N, nc):
        ln = min(nc, N - n0)
        As = stage(a, 1 / a.sum(-1), n0, ln, KC, mpa)
        Bs = As if sym else stage(bb, 1 / bb.sum(-1), n0, ln, KC, mpb)
        sp = max(1, min((want + tiles - 1) // tiles, ln))
        per = (ln + sp - 1) // sp
        sp = (ln + per - 1) // per
        for bx in range(tiles):
            for bz in range(sp):
                block(As, Bs, mpa, mpb, ma, mb, KC, ln, per, sym, tiles_j, 1 / N, out, cfg, bx, bz)
    if sym:
        out = np.triu(out, 1)
        out = out + out.T
    return out


@pytest.mark.parametrize("cfg", [(32, 2, 2, 16), (32, 4, 2, 3), (64, 4, 2, 4)], ids=str)
@pytest.mark.parametrize("ma,mb,n,c,chunk", [(37, None, 11, 6, 5), (5, 40, 9, 3, 100), (70, None, 3, 13, 2)])
def test_kernel_index_model_matches_reference(cfg, ma, mb, n, c, chunk):
    a = models(ma, n, c, seed=ma + c).double()
    b = None if mb is None else models(mb, n, c, seed=1).double()
    got = model_of_kernel(a.numpy(), None if b is None else b.numpy(), cfg, chunk)
    ref = R.pairwise_distances(a, b).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    assert np.isfinite(got).all()
