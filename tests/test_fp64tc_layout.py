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

#: k-steps of 4 classes per instruction, by SHAPE: WMMA m8n8k4, mma m16n8k4, m16n8k8, m16n8k16
K_STEPS = {0: 1, 1: 1, 2: 2, 3: 4}


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


def mma_lanes(a, b, c, ki):
    """mma.sync m16n8k4 (ki = 1) / m16n8k8 (ki = 2) / m16n8k16 (ki = 4) .f64 on per-lane registers, with the
    PTX ISA's fragment layouts (g = lane / 4, t = lane % 4): a[lane][i] is A(g + 8 (i % 2), t + 4 (i // 2)),
    b[lane][u] is B(t + 4 u, g), c[lane][e] is D(g + 8 (e // 2), 2 t + e % 2) (for m16n8k16 the pattern of
    m16n8k8 extended; the GPU tests check it on the hardware)."""
    A, B = np.full((16, 4 * ki), np.nan), np.full((4 * ki, 8), np.nan)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for i in range(2 * ki):
            A[g + 8 * (i % 2), t + 4 * (i // 2)] = a[lane][i]
        for u in range(ki):
            B[t + 4 * u, g] = b[lane][u]
    D = A @ B
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for e in range(4):
            c[lane][e] += D[g + 8 * (e // 2), 2 * t + e % 2]


def block(A, B, mpa, mpb, ma, mb, KC, nc, per_split, symmetric, tiles_j, inv_norm, out, cfg, bx, bz):
    T, WM, WN, KS, shape = cfg[:5]
    nst, pf = (cfg[5], cfg[6]) if len(cfg) > 5 else (0, 0)
    lk = cfg[7] if len(cfg) > 7 else 0
    lean_epilogue = bool(pf & 2)  # a sample's first instruction adds to a zero C; BC is not zeroed after it
    FR, KI = (8 if shape == 0 else 16), K_STEPS[shape]
    WJ, WI = T // (8 * WN), T // (FR * WM)
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
    smem = np.full((nst or 2) * stage_sz, np.nan)

    def load(buf, q0, nks=KS):
        for e in range(nks * T * 2):
            ks, w = e // (T * 2), e % (T * 2)
            q = q0 + ks
            if q < qe:
                sa, ga = buf * stage_sz + ks * T * 4 + w * 2, i0 * 4 + q * mpa * 4 + w * 2
                sb, gb = buf * stage_sz + op + ks * T * 4 + w * 2, j0 * 4 + q * mpb * 4 + w * 2
                smem[sa : sa + 2] = A[ga : ga + 2]
                smem[sb : sb + 2] = B[gb : gb + 2]

    # per warp and fragment: WMMA as an 8 x 8 matrix (its layout is opaque), mma as 32 lanes x 4
    frag = (8, 8) if shape == 0 else (32, 4)
    bc = np.zeros((warps, WM, WN) + frag)
    acc = np.zeros((warps, WM, WN) + frag)

    def compute(buf, q0):
        nonlocal kk
        kn = min(KS, qe - q0)
        assert kn % KI == 0
        for ks in range(0, kn, KI):
            fresh = lean_epilogue and kk == 0
            for wp in range(warps):
                wi, wj = wp // WJ, wp % WJ
                sA = buf * stage_sz + wi * WM * FR * 4
                sB = buf * stage_sz + op + wj * WN * 8 * 4
                for f in range(WM):
                    if shape == 0:
                        pa = sA + ks * T * 4 + f * 32
                        a = smem[pa : pa + 32].reshape(8, 4)  # row_major: (r, k) at r * 4 + k
                    else:
                        a = [[0.0] * (2 * KI) for _ in range(32)]
                        for lane in range(32):
                            g, t = lane // 4, lane % 4
                            for u in range(KI):
                                pa = sA + (ks + u) * T * 4 + f * 16 * 4
                                a[lane][2 * u] = smem[pa + g * 4 + t]
                                a[lane][2 * u + 1] = smem[pa + (g + 8) * 4 + t]
                    for h in range(WN):
                        if shape == 0:
                            pb = sB + ks * T * 4 + h * 32
                            b = smem[pb : pb + 32].reshape(8, 4).T  # col_major: (k, j) at j * 4 + k
                            assert not (np.isnan(a).any() or np.isnan(b).any()), "read a slot nothing wrote"
                            bc[wp, f, h] += a @ b
                        else:
                            b = [
                                [
                                    smem[sB + (ks + u) * T * 4 + h * 8 * 4 + (lane // 4) * 4 + lane % 4]
                                    for u in range(KI)
                                ]
                                for lane in range(32)
                            ]
                            if fresh:
                                bc[wp, f, h] = 0.0  # the zero C operand
                            mma_lanes(a, b, bc[wp, f, h], KI)
                            assert not np.isnan(bc[wp, f, h]).any(), "read a slot nothing wrote"
            kk += KI
            if kk == KC:
                kk = 0
                acc[:] -= np.log(np.maximum(bc, 1e-30))
                # the lean epilogue leaves BC as it is: poisoned here, so a sample that read it would fail
                bc[:] = np.nan if lean_epilogue else 0

    def lean():
        """The lean path: whole samples per stage (KS // KC of them), per fragment one sample's KC k-steps
        with the operands read per lane as the kernel reads them (pa = sA + smp KC T 4 + g 4 + t, ...)."""
        assert KC <= lk and KC % KI == 0
        spst = KS // KC
        kq = spst * KC

        buf, q0 = 0, qb
        load(0, qb, kq)
        while q0 < qe:
            if q0 + kq < qe:
                load(buf ^ 1, q0 + kq, kq)
            ns = (qe - q0) // KC if qe - q0 < kq else spst
            for smp in range(ns):
                for wp in range(warps):
                    wi, wj = wp // WJ, wp % WJ
                    sA = buf * stage_sz + wi * WM * 16 * 4 + smp * KC * T * 4
                    sB = buf * stage_sz + op + wj * WN * 8 * 4 + smp * KC * T * 4
                    for f in range(WM):
                        for h in range(WN):
                            bc = np.zeros((32, 4))
                            for u in range(0, KC, KI):
                                a = [[0.0] * (2 * KI) for _ in range(32)]
                                b = [[0.0] * KI for _ in range(32)]
                                for lane in range(32):
                                    g, t = lane // 4, lane % 4
                                    for v in range(KI):
                                        pa = sA + (u + v) * T * 4 + f * 16 * 4 + g * 4 + t
                                        a[lane][2 * v], a[lane][2 * v + 1] = smem[pa], smem[pa + 8 * 4]
                                        b[lane][v] = smem[sB + (u + v) * T * 4 + h * 8 * 4 + g * 4 + t]
                                mma_lanes(a, b, bc, KI)
                            assert not np.isnan(bc).any(), "read a slot nothing wrote"
                            acc[wp, f, h] -= np.log(np.maximum(bc, 1e-30))
            buf ^= 1
            q0 += kq

    kk = 0
    if lk > 0:
        lean()
    elif nst == 0:  # two stages, the next one loaded before this one is computed
        buf, q0 = 0, qb
        load(0, qb)
        while q0 < qe:
            if q0 + KS < qe:
                load(buf ^ 1, q0 + KS)
            compute(buf, q0)
            buf ^= 1
            q0 += KS
    else:  # nst stages, nst - 1 in flight: stage s + nst - 1 goes into the buffer stage s - 1 used
        stages = (qe - qb + KS - 1) // KS
        for s in range(min(nst - 1, stages)):
            load(s, qb + s * KS)
        buf, nxt = 0, nst - 1
        for s in range(stages):
            assert nxt == (s - 1) % nst and buf == s % nst
            if s + nst - 1 < stages:
                load(nxt, qb + (s + nst - 1) * KS)
            nxt = 0 if nxt + 1 == nst else nxt + 1
            compute(buf, qb + s * KS)
            buf = 0 if buf + 1 == nst else buf + 1
    for wp in range(warps):
        wi, wj = wp // WJ, wp % WJ
        for f in range(WM):
            for h in range(WN):
                if shape == 0:
                    cells = [(e // 8, e % 8, acc[wp, f, h, e // 8, e % 8]) for e in range(64)]
                else:
                    cells = [
                        ((lane // 4) + 8 * (e // 2), 2 * (lane % 4) + e % 2, acc[wp, f, h, lane, e])
                        for lane in range(32)
                        for e in range(4)
                    ]
                for r, col, value in cells:
                    i, j = i0 + (wi * WM + f) * FR + r, j0 + (wj * WN + h) * 8 + col
                    if i < ma and j < mb and (not symmetric or j > i):
                        out[i, j] += value * inv_norm


def model_of_kernel(a, b, cfg, scratch_samples, sms=2, bps=1):
    """pairwise_fp64tc's host loop (chunks, splits) around the block model."""
    T, KI = cfg[0], K_STEPS[cfg[4]]  # (cfg[5:]: stages and prefetch of the pipelined path)
    sym = b is None
    bb = a if sym else b
    (ma, N, C), mb = a.shape, bb.shape[0]
    KC = (C + 4 * KI - 1) // (4 * KI) * KI  # classes padded to 4 (to 8 for m16n8k8)
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


@pytest.mark.parametrize(
    "cfg",
    [
        (32, 2, 2, 16, 0),
        (32, 4, 2, 3, 0),
        (64, 4, 2, 4, 0),
        (32, 1, 2, 4, 1),
        (32, 2, 1, 4, 2),
        (32, 1, 2, 4, 1, 3, 1),  # the pipelined path: 3 stages, 4 (> stages per block at n = 3, 11)
        (32, 2, 1, 2, 2, 4, 0),
        (32, 1, 2, 4, 1, 3, 3),  # the pipelined path with the lean epilogue ("..._s3pe", "..._s4e")
        (32, 2, 1, 2, 2, 4, 2),
        (32, 1, 1, 8, 3),  # m16n8k16
        (32, 2, 1, 4, 3, 3, 0),
        (32, 1, 2, 6, 1, 0, 0, 3),  # the lean path, m16n8k4, up to 12 classes
        (48, 3, 3, 12, 1, 0, 0, 3),
        (32, 2, 1, 8, 2, 0, 0, 4),  # the lean path, m16n8k8, up to 16 classes
    ],
    ids=str,
)
@pytest.mark.parametrize(
    "ma,mb,n,c,chunk", [(37, None, 11, 6, 5), (5, 40, 9, 3, 100), (70, None, 3, 13, 2), (40, None, 7, 11, 3)]
)
def test_kernel_index_model_matches_reference(cfg, ma, mb, n, c, chunk):
    if len(cfg) > 7 and c > 4 * cfg[7]:
        pytest.skip("a lean instance refuses more classes than it holds")
    a = models(ma, n, c, seed=ma + c).double()
    b = None if mb is None else models(mb, n, c, seed=1).double()
    got = model_of_kernel(a.numpy(), None if b is None else b.numpy(), cfg, chunk)
    ref = R.pairwise_distances(a, b).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    assert np.isfinite(got).all()


@pytest.mark.parametrize(
    "cfg",
    [
        (32, 1, 2, 4, 1, 3, 1),
        (32, 2, 1, 4, 2, 4, 0),
        (32, 1, 2, 3, 1, 3, 0),
        (32, 1, 2, 3, 1, 3, 3),  # lean epilogue: samples straddling stages
        (32, 2, 1, 4, 2, 4, 2),
        (48, 3, 3, 4, 1, 3, 1),
        (32, 1, 2, 8, 3, 3, 0),
        (32, 1, 2, 6, 1, 0, 0, 3),  # lean: 2-6 samples a stage, a partial last stage
        (32, 2, 1, 8, 2, 0, 0, 4),
    ],
    ids=str,
)
@pytest.mark.parametrize("ma,mb,n,c", [(37, None, 11, 6), (5, 40, 9, 13)])
def test_pipelined_stages_over_a_long_sample_range(cfg, ma, mb, n, c):
    """sms=0: one sample split per tile, so a block runs through many stages (the buffer rotation of the
    pipelined path, a partial last stage, samples straddling stages)."""
    if len(cfg) > 7 and c > 4 * cfg[7]:
        pytest.skip("a lean instance refuses more classes than it holds")
    a = models(ma, n, c, seed=ma + c).double()
    b = None if mb is None else models(mb, n, c, seed=2).double()
    got = model_of_kernel(a.numpy(), None if b is None else b.numpy(), cfg, 100, sms=0)
    ref = R.pairwise_distances(a, b).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)


def _instance_name(T, WM, WN, KS, SHAPE, NST, PF, LK):
    """Config::name() of the kernel, for one X(...) line."""
    shape = ["", "mma1684_", "mma1688_", "mma16816_"][SHAPE]
    name = f"{shape}t{T}_w{WM}x{WN}_k{KS}"
    if NST > 0:
        name += f"_s{NST}" + ("p" if PF & 1 else "") + ("e" if PF & 2 else "")
    return name + (f"_c{4 * LK}" if LK > 0 else "")


def test_default_build_holds_every_tuned_instance():
    """The default build compiles the instances of TG_FP64TC_TUNED only (the rest with TASKGEOM_FP64TC_ALL=1):
    every instance the committed tuning table names, and the default one, must be among them, or the tuned
    choice would silently fall back to the default."""
    import json
    import re
    from pathlib import Path

    from taskgeom import _cuda_ops

    root = Path(__file__).resolve().parents[1]
    src = (root / "csrc" / "cuda" / "pairwise_fp64tc.cu").read_text()
    tuned = src[src.index("#define TG_FP64TC_TUNED(X)") : src.index("#define TG_FP64TC_MORE(X)")]
    pattern = r"X\((\d+), (\d+), (\d+), (\d+), (\d+), (\d+), (\d+), (\d+)\)"
    built = {_instance_name(*map(int, m.groups())) for m in re.finditer(pattern, tuned)}
    table = json.loads((root / "taskgeom" / "_tuning.json").read_text())
    wanted = {e["config"] for e in table["fp64tc"]["cases"]} | {_cuda_ops.DEFAULT_FP64TC_CONFIG}
    assert wanted <= built, f"tuned instances missing from TG_FP64TC_TUNED: {sorted(wanted - built)}"
    assert len(built) == 3
