"""Native kernels (C++/OpenMP and CUDA) against the float64 reference of the same stored values."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import taskgeom as tg
from taskgeom import reference as R

from testing import (
    DEVICE_BACKENDS,
    DTYPES,
    RTOL,
    assert_rel_close,
    labels,
    models,
    nearby,
    read_only_memmap,
    requires_cuda,
    to_device,
)

DIVERGENCES = tg.divergences.names()


def _ref(a, b=None, divergence="bhattacharyya"):
    return R.pairwise_distances(a.cpu(), None if b is None else b.cpu(), divergence)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize(
    "m,n,c", [(1, 1, 1), (2, 1, 3), (3, 999, 10), (67, 37, 10), (5, 999, 2), (4, 33, 100), (3, 5, 1000)]
)
def test_symmetric_matrix_matches_reference(backend, dtype, divergence, m, n, c):
    a = models(m, n, c, seed=m * n + c, dtype=dtype)
    d = tg.pairwise_distances(to_device(a, backend), divergence=divergence, backend=backend)
    assert d.dtype == torch.float64 and d.shape == (m, m)
    assert_rel_close(d, _ref(a, None, divergence), RTOL[dtype], atol=1e-12, what=f"{backend} {dtype}")
    assert torch.all(torch.diagonal(d.cpu()) == 0)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("ma,mb", [(1, 3), (67, 2), (5, 70)])
def test_cross_matrix_matches_reference(backend, divergence, ma, mb):
    a = models(ma, 101, 7, seed=1)
    b = models(mb, 101, 7, seed=2, scale=0.5)
    d = tg.pairwise_distances(to_device(a, backend), to_device(b, backend), divergence=divergence, backend=backend)
    assert d.shape == (ma, mb)
    assert_rel_close(d, _ref(a, b, divergence), 1e-5, atol=1e-12)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_non_contiguous_and_offset_inputs(backend):
    big = models(9, 60, 24, seed=3, dtype=torch.float32)
    base = to_device(big, backend)
    views = {
        "every_other_model": base[::2],
        "offset_samples": base[2:7, 5:55],
        "samples_major": base.transpose(0, 1).contiguous().transpose(0, 1),
        "class_strided": torch.softmax(to_device(torch.randn(3, 20, 16, dtype=torch.float64), backend), -1)
        .float()
        .repeat_interleave(2, dim=2)[:, :, ::2]
        * 1.0,
    }
    for name, v in views.items():
        if name == "class_strided":
            v = v / v.sum(-1, keepdim=True)
            v = torch.as_strided(torch.cat([v, v], -1), v.shape, (v.shape[1] * 32, 32, 1))
        assert not v.is_contiguous() or name == "class_strided"
        d = tg.pairwise_distances(v, backend=backend)
        assert_rel_close(d, _ref(v.contiguous()), 1e-5, atol=1e-12, what=name)


def test_numpy_memmap_input(tmp_path):
    a = models(6, 500, 10, seed=4, dtype=torch.float16).numpy()
    ro = read_only_memmap(tmp_path / "preds.f16", a)
    d = tg.pairwise_distances(ro)
    assert isinstance(d, np.ndarray) and d.dtype == np.float64
    assert_rel_close(d, _ref(torch.from_numpy(a)), 1e-5, atol=1e-12)


@requires_cuda
@pytest.mark.parametrize("cross", [False, True])
def test_streamed_host_data_equals_in_memory(tmp_path, cross):
    a = models(70, 1001, 12, seed=11, dtype=torch.float16).numpy()
    ro = read_only_memmap(tmp_path / "preds.f16", a)
    others = ro[2:7] if cross else None  # a view of the map, not at its start
    streamed = tg.pairwise_distances(ro, others, backend="cuda", chunk=97)
    resident = (
        tg.pairwise_distances(
            torch.from_numpy(a).cuda(), None if others is None else torch.from_numpy(np.array(others)).cuda()
        )
        .cpu()
        .numpy()
    )
    # same kernel, different sample chunking: equal up to float32 partial-sum rounding
    np.testing.assert_allclose(streamed, resident, rtol=1e-6, atol=1e-15)
    assert_rel_close(
        streamed,
        _ref(torch.from_numpy(a), None if others is None else torch.from_numpy(np.array(others))),
        1e-5,
        atol=1e-12,
    )
    bad = a.copy()
    bad[3, 500, 2] = np.nan
    with pytest.raises(ValueError, match="model 3, sample 500"):
        tg.pairwise_distances(bad, backend="cuda", chunk=97)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("noise", [1e-3, 1e-4])
def test_near_identical_models_float32_matches_float64(backend, noise):
    # logits differing by 1e-3 noise give d_B near 6e-8; 1e-4 gives about 6e-10
    p64 = nearby(10_000, 10, noise, seed=5)
    expected = float(R.bhattacharyya(p64[0], p64[1]))
    assert 1e-11 < expected < 1e-6
    p32 = p64.float()
    exact32 = float(_ref(p32)[0, 1])  # float64 reference on the float32 values
    d = tg.pairwise_distances(to_device(p32, backend), backend=backend).cpu()
    assert abs(float(d[0, 1]) - exact32) <= 1e-5 * exact32
    # the Gram formulation in float32 is off by orders of magnitude more (1-BC rounds to float32 ulps)
    gram = float(R.pairwise_gram(p32)[0, 1])
    assert abs(gram - exact32) > 1e-3 * exact32


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_pipeline_matches_float64_truth(backend, seed):
    """Logits differing by 1e-3 noise (d_B near 1e-7): softmax and distance in float32 agree with the
    all-float64 value to 1e-5 relative."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(10_000, 10, generator=g, dtype=torch.float64)
    other = base + 1e-3 * torch.randn(10_000, 10, generator=g, dtype=torch.float64)
    truth = float(R.bhattacharyya(torch.softmax(base, -1), torch.softmax(other, -1)))
    assert 3e-8 < truth < 3e-7
    p32 = torch.stack([torch.softmax(base.float(), -1), torch.softmax(other.float(), -1)])
    d = float(tg.pairwise_distances(to_device(p32, backend), backend=backend)[0, 1])
    assert abs(d - truth) <= 1e-5 * truth


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("chunk", [None, 8, 200])
def test_long_runs_of_far_and_near_samples(backend, chunk):
    """Thousands of samples mixing disjoint supports (BC at its floor), near-identical and ordinary
    predictions: per-sample terms from 1e-10 to 69, where a kernel that multiplies BC across samples
    before one logarithm must keep the product in range and exact."""
    n, c = 3000, 10
    p = nearby(n, c, 1e-4, seed=7, count=3)
    kind = torch.arange(n) % 3
    onehot = torch.nn.functional.one_hot(torch.arange(n) % c, c).double()
    shifted = torch.nn.functional.one_hot((torch.arange(n) + 1) % c, c).double()
    p[0, kind == 0] = onehot[kind == 0]
    p[1, kind == 0] = shifted[kind == 0]  # disjoint from model 0 on every third sample
    p[2, kind == 1] = p[0, kind == 1]  # identical to model 0 on every third sample
    for dtype in (torch.float64, torch.float32):
        a = p.to(dtype)
        d = tg.pairwise_distances(to_device(a, backend), backend=backend, chunk=chunk).cpu()
        assert_rel_close(d, _ref(a), 1e-5, atol=0, what=f"{dtype}")
    run = torch.stack([onehot, shifted])  # every sample at the floor
    d = tg.pairwise_distances(to_device(run, backend), backend=backend, chunk=chunk).cpu()
    assert float(d[0, 1]) == pytest.approx(-np.log(tg.BC_FLOOR), rel=1e-6)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_tiny_distances_every_pair(backend):
    # d_B down to about 1e-9 with float32 input, few samples (no averaging of rounding errors)
    p = nearby(7, 10, 1e-4, seed=6, count=5).float()
    d = tg.pairwise_distances(to_device(p, backend), backend=backend)
    assert_rel_close(d, _ref(p), 1e-5, atol=0, what="tiny distances")
    assert float(_ref(p)[0, 1]) < 1e-8


def test_disjoint_supports_use_documented_floor():
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    d = tg.pairwise_distances(a)
    assert float(d[0, 1]) == pytest.approx(-np.log(tg.BC_FLOOR), rel=1e-6)  # float32 arithmetic
    assert float(_ref(a)[0, 1]) == pytest.approx(-np.log(tg.BC_FLOOR), rel=1e-12)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_progress_kernel_matches_reference(backend, dtype):
    y = labels(999, 10, seed=7)
    g = torch.Generator().manual_seed(7)
    push = torch.linspace(0.2, 6.0, 13, dtype=torch.float64)[:, None, None]  # from early to late in training
    logits = torch.randn(13, 999, 10, generator=g, dtype=torch.float64) + push * torch.nn.functional.one_hot(y, 10)
    a = torch.softmax(logits, -1).to(dtype)
    t = tg.progress(to_device(a, backend), to_device(y, backend), backend=backend).cpu()
    ref = R.progress(a, y)
    np.testing.assert_allclose(t.numpy(), ref.numpy(), atol=1e-9)
    assert ((t > 0) & (t < 1)).all()


def _progress_case(m=23, n=1500, c=10, seed=3, dtype=torch.float16):
    y = labels(n, c, seed=seed)
    g = torch.Generator().manual_seed(seed)
    push = torch.linspace(0.2, 6.0, m, dtype=torch.float64)[:, None, None]
    logits = torch.randn(m, n, c, generator=g, dtype=torch.float64) + push * torch.nn.functional.one_hot(y, c)
    return torch.softmax(logits, -1).to(dtype), y


@pytest.mark.skipif(not tg.kernels.has_cpu(), reason="C++ kernels not built")
def test_cpu_progress_gives_the_same_bits_for_any_thread_count():
    # models are shared among the caller and helper threads, and one may be computed twice (cpu/short_jobs.h)
    a, y = _progress_case()
    one = tg.progress(a, y, backend="cpu", threads=1)
    for threads in (2, 3, 8):
        assert torch.equal(tg.progress(a, y, backend="cpu", threads=threads), one)
    assert torch.equal(tg.progress(a.transpose(0, 1).contiguous().transpose(0, 1), y, backend="cpu"), one)


@pytest.mark.skipif(not tg.kernels.has_cpu(), reason="C++ kernels not built")
def test_cpu_short_call_does_not_wait_for_a_stalled_helper():
    # a helper set aside by the scheduler (here: asleep 3 s inside its first item) must not hold the call:
    # the caller computes that item itself. 40 items of 2 ms take about 80 ms on the caller alone.
    check = tg.kernels.cpu_module()._short_jobs_check
    for _ in range(5):  # until a helper woke in time to take an item
        seconds, right, stalled = check(40, 8, 2.0, 3000.0)
        assert right
        if stalled:
            break
    assert stalled, "no helper thread ever took an item"
    assert seconds < 1.5, f"the call waited {seconds:.2f} s for a stalled helper"


@pytest.mark.skipif(not tg.kernels.has_cpu(), reason="C++ kernels not built")
def test_cpu_progress_from_many_python_threads_and_after_fork():
    import multiprocessing as mp
    from concurrent.futures import ThreadPoolExecutor

    a, y = _progress_case(m=11, n=700)
    one = tg.progress(a, y, backend="cpu", threads=1)
    # calls at once from several threads: each its own job; temporaries freed while helpers may be inside
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda k: tg.progress(a.clone(), y.clone(), backend="cpu", threads=3), range(24)))
    assert all(torch.equal(o, one) for o in outs)
    # a forked child inherits no helper thread: its calls run on the calling thread alone
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply(_progress_in_child, (a, y))
    assert torch.equal(torch.as_tensor(child), one)


def _progress_in_child(a, y):
    return tg.progress(a, y, backend="cpu", threads=2).numpy()


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 40),
    c=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    chunk=st.integers(1, 50),
    scale=st.floats(0.0, 6.0),
)
def test_properties_symmetry_diagonal_nonnegative_chunking(m, n, c, seed, chunk, scale):
    a = models(m, n, c, seed=seed, scale=scale)
    d = tg.pairwise_distances(a)
    assert torch.equal(d, d.T)
    assert torch.all(torch.diagonal(d) == 0)
    assert torch.all(d >= 0)
    d_chunked = tg.pairwise_distances(a, chunk=chunk)
    assert_rel_close(d_chunked, d, 1e-6, atol=1e-15)
    assert_rel_close(tg.pairwise_distances(a, backend="torch", chunk=chunk), d, 1e-5, atol=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("cross", [False, True])
def test_cpu_kernel_gives_the_same_bits_for_any_thread_count(divergence, cross):
    # threads share a call without barriers (ChunkFlow): each item adds its pairs' sums chunk by chunk in
    # order, whichever thread runs it and however far other threads have staged ahead (47 chunks of 64
    # samples; 37 rows: a padded group; 8 threads on fewer cores are pre-empted in the middle of items)
    a = models(37, 3001, 10, seed=5, dtype=torch.float16)
    b = models(9, 3001, 10, seed=6, dtype=torch.float16) if cross else None
    one = tg.pairwise_distances(a, b, divergence=divergence, backend="cpu", chunk=64, threads=1)
    for threads in (2, 3, 8):
        assert torch.equal(
            tg.pairwise_distances(a, b, divergence=divergence, backend="cpu", chunk=64, threads=threads), one
        )
    assert_rel_close(one, _ref(a, b, divergence), RTOL[torch.float16])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunk", [64, None])
def test_cpu_kernel_reports_bad_input_in_a_late_chunk(threads, chunk):
    # the first bad chunk's earliest model is reported, whichever thread staged it (both entries lie in one
    # chunk: the 39th of 64 samples, the 10th of 256)
    a = models(12, 3001, 10, seed=7, dtype=torch.float32)
    a[9, 2450, 3] = float("nan")
    a[4, 2470, 1] = -0.5
    with pytest.raises(ValueError, match="model 4, sample 2470"):
        tg.pairwise_distances(a, backend="cpu", chunk=chunk, threads=threads)


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_cpu_kernel_reports_the_earliest_chunks_bad_input(threads):
    # chunks are staged ahead and out of order by several threads; the message is still the one a call
    # staging chunk after chunk meets first: the earlier chunk's (here in the second model set), not the
    # later chunk's first model set
    a = models(12, 3001, 10, seed=8, dtype=torch.float32)
    b = models(5, 3001, 10, seed=9, dtype=torch.float32)
    a[0, 2900, 0] = float("nan")
    b[3, 1000, 2] = -0.5
    b[4, 1001, 2] = -0.5
    with pytest.raises(ValueError, match="model 3, sample 1000"):
        tg.pairwise_distances(a, b, backend="cpu", chunk=16, threads=threads)
    a[7, 1005, 1] = float("inf")  # the same chunk (992 .. 1007), first model set: reported first
    with pytest.raises(ValueError, match="model 7, sample 1005"):
        tg.pairwise_distances(a, b, backend="cpu", chunk=16, threads=threads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("where", ["block", "class-tail", "sample-tail"])
def test_cpu_staging_sums_rows_while_transposing(dtype, where):
    # contiguous rows are summed (and checked for negatives) in the 8 x 8 transpose: 8-sample blocks over
    # 8-class blocks, the classes past the last block, the samples past the last block (C = 21, N = 29)
    a = models(5, 29, 21, seed=11, dtype=dtype)
    one = tg.pairwise_distances(a, backend="cpu", chunk=16, threads=1)
    assert_rel_close(one, _ref(a), RTOL[dtype])
    sample, cls = {"block": (3, 2), "class-tail": (9, 19), "sample-tail": (27, 4)}[where]
    bad = a.clone()
    bad[2, sample, cls] = -0.25
    with pytest.raises(ValueError, match=f"model 2, sample {sample}: probability is negative"):
        tg.pairwise_distances(bad, backend="cpu", chunk=16)
    off = a.clone()
    off[3, sample] *= 1.5  # a sum the transpose must see
    with pytest.raises(ValueError, match=f"model 3, sample {sample}: probabilities sum to 1.5|1.49"):
        tg.pairwise_distances(off, backend="cpu", chunk=16)


@settings(max_examples=15, deadline=None)
@given(m=st.integers(2, 6), n=st.integers(1, 30), c=st.integers(2, 9), seed=st.integers(0, 10_000))
def test_properties_cross_matrix_is_block_of_full_matrix(m, n, c, seed):
    a = models(m, n, c, seed=seed)
    full = tg.pairwise_distances(a)
    cross = tg.pairwise_distances(a[:1], a[1:])
    assert_rel_close(cross, full[:1, 1:], 1e-6, atol=1e-15)


@pytest.mark.parametrize("method", ["tiled", "gram64", "fp64tc"])
@pytest.mark.parametrize("backend", DEVICE_BACKENDS)
def test_cuda_methods_match_reference(backend, method):
    if backend != "cuda":
        pytest.skip("CUDA methods")
    if method == "fp64tc" and not tg.kernels.cuda_module().fp64tc_available():
        pytest.skip("no FP64 tensor cores on this GPU")
    for m, n, c in [(3, 999, 10), (70, 50, 300), (5, 7, 1000)]:
        a = models(m, n, c, seed=m + c, dtype=torch.float16)
        d = tg.pairwise_distances(a.cuda(), cuda_method=method)
        assert_rel_close(d, _ref(a), 1e-5, atol=1e-12, what=f"{method} {m}x{n}x{c}")
        b = models(2, n, c, seed=1, dtype=torch.float32)
        assert_rel_close(tg.pairwise_distances(a.cuda(), b.cuda(), cuda_method=method), _ref(a, b), 1e-5, atol=1e-12)
    p = nearby(7, 10, 1e-4, seed=6, count=5).float()
    assert_rel_close(tg.pairwise_distances(p.cuda(), cuda_method=method), _ref(p), 1e-5, what="tiny")


@pytest.mark.parametrize("divergence", ["bhattacharyya", "hellinger"])
def test_gram64_formulation_on_host_tensors(divergence):
    from taskgeom._cuda_ops import pairwise_gram64

    a = models(9, 77, 40, seed=3, dtype=torch.float16)
    assert_rel_close(pairwise_gram64(a, None, divergence=divergence), _ref(a, None, divergence), 1e-10, atol=1e-15)
    # streamed in sample chunks into one matrix (as the GPU streaming path does), for both shapes
    for b in (None, models(4, 77, 40, seed=4)):
        out = torch.zeros(9, 9 if b is None else 4, dtype=torch.float64)
        for n0 in range(0, 77, 30):
            pairwise_gram64(
                a[:, n0 : n0 + 30], None if b is None else b[:, n0 : n0 + 30], out=out, norm=77, divergence=divergence
            )
        assert_rel_close(out, _ref(a, b, divergence), 1e-10, atol=1e-15)
    if divergence == "bhattacharyya":  # (1 - BC loses relative accuracy for nearby models in float64 Grams)
        p = nearby(7, 10, 1e-4, seed=6, count=5).float()
        assert_rel_close(pairwise_gram64(p, None), _ref(p), 1e-5)
    with pytest.raises(ValueError, match="gram64"):
        pairwise_gram64(a, None, divergence="symmetric_kl")


@requires_cuda
def test_tiled_kernel_with_small_staging_buffer_chunks_samples():
    from taskgeom import _cuda_ops, kernels

    mod = kernels.cuda_module()
    for divergence in DIVERGENCES:
        code = tg.divergences.get(divergence).code
        a = models(67, 101, 13, seed=9).cuda()
        out = torch.zeros(67, 67, dtype=torch.float64, device="cuda")
        scratch = torch.empty(mod.pairwise_scratch_floats(67, 67, False, 13, code, 3), device="cuda")
        _cuda_ops.launch_tiled(a, None, code, out, 101, True, scratch)
        assert_rel_close(out, _ref(a.cpu(), None, divergence), 1e-5, atol=1e-12, what=divergence)


def _fp64tc_or_skip():
    from taskgeom import kernels

    if not kernels.cuda_module().fp64tc_available():
        pytest.skip("no FP64 tensor cores on this GPU (or no binary for them)")
    return kernels.cuda_module()


@requires_cuda
@pytest.mark.parametrize("divergence", ["bhattacharyya", "hellinger"])
def test_fp64tc_every_instance_matches_reference(divergence):
    from taskgeom import _cuda_ops

    mod = _fp64tc_or_skip()
    code = tg.divergences.get(divergence).code
    # (200, 40, 12): several 128 x 128 tiles of the lean instances (symmetric tile enumeration, ti > 0)
    shapes = [(1, 1, 1), (3, 37, 1), (70, 50, 13), (130, 21, 100), (5, 7, 1000), (97, 333, 10), (200, 40, 12)]
    cases = [(models(m, n, c, seed=m + n + c, dtype=torch.float16), None) for m, n, c in shapes]
    cases.append((models(67, 101, 7, seed=1), models(5, 101, 7, seed=2, scale=0.5)))  # cross, float32
    cases.append((models(3, 64, 30, seed=3, dtype=torch.bfloat16), models(200, 64, 30, seed=4)))
    failures = []  # every instance is checked, so that one failing instance does not hide another
    most = dict(zip(mod.fp64tc_configs(), mod.fp64tc_config_max_classes()))
    for config in _cuda_ops.fp64tc_runnable():
        try:
            for a, b in cases:
                if 0 < most[config] < a.shape[2]:  # a lean instance: refuses, with a one-line error
                    with pytest.raises(ValueError, match="handles at most"):
                        _cuda_ops.pairwise_fp64tc(a.cuda(), None if b is None else b.cuda(), code, config=config)
                    continue
                got = _cuda_ops.pairwise_fp64tc(a.cuda(), None if b is None else b.cuda(), code, config=config)
                what = f"{config} {tuple(a.shape)} x {None if b is None else tuple(b.shape)}"
                assert_rel_close(got, _ref(a, b, divergence), 1e-5, atol=1e-12, what=what)
                if b is None:
                    assert torch.all(torch.diagonal(got) == 0), what
            # a staging buffer of 3 samples: many launches, each its own product and logarithm
            c = 13 if most[config] == 0 else most[config] - 1
            a = models(67, 101, c, seed=9).cuda()
            out = torch.zeros(67, 67, dtype=torch.float64, device="cuda")
            index = mod.fp64tc_configs().index(config)
            size = mod.fp64tc_scratch_doubles(67, 67, False, c, index, 3)
            buf = torch.empty(size, dtype=torch.float64, device="cuda")
            _cuda_ops.launch_fp64tc(a, None, code, out, 101, True, buf, config=config)
            assert_rel_close(out, _ref(a.cpu(), None, divergence), 1e-5, atol=1e-12, what=f"{config} chunked")
        except (AssertionError, pytest.fail.Exception) as e:  # (a lean instance that did not refuse)
            failures.append(f"{config}: {str(e)[:300]}")
    assert not failures, "\n".join(failures)


@requires_cuda
@pytest.mark.parametrize("noise", [1e-3, 1e-4, 3e-5])
def test_fp64tc_near_identical_models(noise):
    # d per sample near 6e-8, 6e-10 and 5e-11: 1e-5 relative down to d = 1e-9 (and below)
    from taskgeom import _cuda_ops

    _fp64tc_or_skip()
    p = nearby(20_000, 10, noise, seed=7, count=6).float()
    failures = []
    for config in _cuda_ops.fp64tc_runnable():
        for divergence in ("bhattacharyya", "hellinger"):
            got = _cuda_ops.pairwise_fp64tc(p.cuda(), None, tg.divergences.get(divergence).code, config=config)
            try:
                assert_rel_close(got, _ref(p, None, divergence), 1e-5, what=f"{config} {divergence} noise {noise}")
            except AssertionError as e:
                failures.append(str(e)[:300])
    assert not failures, "\n".join(failures)


@requires_cuda
def test_fp64tc_streamed_equals_in_memory(tmp_path):
    _fp64tc_or_skip()
    a = models(70, 1001, 12, seed=11, dtype=torch.float16).numpy()
    ro = read_only_memmap(tmp_path / "preds.f16", a)
    streamed = tg.pairwise_distances(ro, backend="cuda", chunk=97, cuda_method="fp64tc")
    resident = tg.pairwise_distances(torch.from_numpy(a).cuda(), cuda_method="fp64tc").cpu().numpy()
    np.testing.assert_allclose(streamed, resident, rtol=1e-12, atol=1e-15)
    assert_rel_close(streamed, _ref(torch.from_numpy(a)), 1e-5, atol=1e-12)


def test_auto_cuda_method_choice(monkeypatch):
    """auto: fp64tc for the Gram-form divergences where FP64 tensor cores are fast, else gram64 / tiled."""
    from taskgeom import _cuda_ops, kernels

    monkeypatch.setattr(_cuda_ops, "fp64tc_supported", lambda index: True)
    assert kernels.choose_cuda_method("bhattacharyya", 10, 0) == "fp64tc"
    assert kernels.choose_cuda_method("hellinger", 1000, 0) == "fp64tc"
    assert kernels.choose_cuda_method("symmetric_kl", 10, 0) == "tiled"
    monkeypatch.setattr(_cuda_ops, "fp64tc_supported", lambda index: False)
    assert kernels.choose_cuda_method("bhattacharyya", 10, 0) == "tiled"
    assert kernels.choose_cuda_method("bhattacharyya", 1000, 0) == "gram64"
    if kernels.has_cuda() and torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp64tc"):
            tg.pairwise_distances(models(2, 5, 3).cuda(), divergence="symmetric_kl", cuda_method="fp64tc")


def test_fp64tc_tuning_table(tmp_path):
    """The table auto reads: the nearest tuned case in (log C, log m); the default without a table or
    for instances this build does not have."""
    import json

    from taskgeom import _cuda_ops

    names = ["t64_w4x2_k8", "t32_w2x2_k16", "t96_w4x3_k8"]
    assert _cuda_ops.fp64tc_config(1000, 100, tmp_path / "missing.json", names) == _cuda_ops.DEFAULT_FP64TC_CONFIG
    table = {
        "fp64tc": {
            "cases": [
                {"m": 2430, "C": 10, "config": "t96_w4x3_k8"},
                {"m": 512, "C": 1000, "config": "t32_w2x2_k16"},
                {"m": 1000, "C": 100, "config": "t_not_compiled"},
            ]
        }
    }
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(table))
    assert _cuda_ops.fp64tc_config(2000, 12, path, names) == "t96_w4x3_k8"
    assert _cuda_ops.fp64tc_config(100, 2000, path, names) == "t32_w2x2_k16"
    assert _cuda_ops.fp64tc_config(1000, 100, path, names) in ("t96_w4x3_k8", "t32_w2x2_k16")
    # the committed table parses (and names only compiled-in instances, or none)
    committed = json.loads(_cuda_ops.TUNING_FILE.read_text())["fp64tc"]["cases"]
    assert all({"m", "C", "config"} <= set(e) for e in committed)


def test_row_normalisation_factors_in_blocks():
    from taskgeom._cuda_ops import inv_row_sums as _inv_row_sums

    a = models(7, 13, 5, seed=12, dtype=torch.float16)
    a[3, 4] = 0  # an all-zero row gets factor 0, not inf
    expected = 1.0 / a.double().sum(-1)
    expected[3, 4] = 0.0
    for budget in (13 * 5, 2 * 13 * 5, 1 << 27):  # one model per block, two, everything
        torch.testing.assert_close(_inv_row_sums(a, budget=budget), expected, rtol=1e-15, atol=0)


def test_divergence_registry_matches_the_compiled_enum():
    """The Python registry and csrc/divergence.h list the same divergences (codes come from the enum)."""
    import pathlib

    from taskgeom import kernels

    built = list(pathlib.Path(tg.__file__).parent.glob("_cuda*.so"))
    if built:  # a CUDA module that was built must import beside the CPU one (both define the enum)
        kernels.cpu_module()
        kernels.cuda_module()
    mods = [kernels.cpu_module()] + ([kernels.cuda_module()] if kernels.has_cuda() else [])
    for mod in mods:
        assert sorted(mod.Divergence.__members__) == sorted(tg.divergences.names())
    codes = [tg.divergences.get(n).code for n in tg.divergences.names()]
    assert len(set(codes)) == len(codes)
    with pytest.raises(ValueError, match="divergence must be one of"):
        tg.pairwise_distances(models(2, 5, 3), divergence="hellinger2")
    with pytest.raises(ValueError, match="unknown divergence code"):
        kernels.cpu_module().pairwise(
            kernels.view(models(2, 5, 3)), None, np.zeros((2, 2)).ctypes.data, 99, 0, 0, True, 1e-4
        )


def test_hellinger_identities():
    """Squared Hellinger = 1 - BC = 1 - exp(-d_B) per sample, in [0, 1]; 1 for disjoint supports; the
    kernels keep relative accuracy for nearby models."""
    a = models(6, 200, 7, seed=21, dtype=torch.float64)
    h = R.pairwise_distances(a, None, "hellinger")
    per_b = R.bhattacharyya_per_sample(a[:, None], a[None])
    torch.testing.assert_close(h, (1 - torch.exp(-per_b)).mean(-1).fill_diagonal_(0), rtol=1e-12, atol=1e-15)
    disjoint = torch.zeros(2, 3, 4, dtype=torch.float64)
    disjoint[0, :, 0] = 1
    disjoint[1, :, 1] = 1
    d = tg.pairwise_distances(disjoint, divergence="hellinger")
    assert float(d[0, 1]) == pytest.approx(1.0, abs=1e-15)
    p = nearby(300, 10, 1e-3, seed=3, count=3)
    assert_rel_close(
        tg.pairwise_distances(p.numpy(), divergence="hellinger"),
        R.pairwise_distances(p, None, "hellinger"),
        1e-6,
        atol=1e-18,
    )


@pytest.mark.skipif(not tg.kernels.has_cpu(), reason="needs the C++ module")
@pytest.mark.parametrize("c, concentration", [(10, 0.3), (10, 3.0), (100, 0.3), (100, 3.0)])
def test_cpu_kernel_accuracy_at_typical_distances(c, concentration):
    """What the docstring of pairwise_distances states: at typical distances (0.07-0.7) the C++ kernel's
    relative error against the float64 reference stays within a few 1e-8 (its logarithm polynomial)."""
    x = np.random.default_rng(1).dirichlet([concentration] * c, size=(30, 400))
    ref = tg.pairwise_distances(x, backend="torch")
    off = ~np.eye(len(x), dtype=bool)
    rel = np.abs(tg.pairwise_distances(x, backend="cpu") - ref)[off] / ref[off]
    assert rel.max() < 5e-8


@pytest.mark.skipif(not tg.kernels.has_cpu(), reason="needs the C++ module")
@pytest.mark.parametrize("divergence", ["bhattacharyya", "hellinger"])
@pytest.mark.parametrize("c", [191, 192, 333])
@pytest.mark.parametrize("cross", [False, True])
def test_cpu_kernel_with_many_classes(divergence, c, cross):
    """From C = 192 (with AVX-512) the Gram forms take the class-blocked wide path: equal to the float64
    reference within the kernel's stated accuracy, the same bits for any thread count, and ragged sizes
    (37 rows: a padded group, several wide items; 9 columns; 12 blocks of samples: a renormalised product)."""
    x = np.random.default_rng(c).dirichlet([0.5] * c, size=(37, 96))
    y = np.random.default_rng(c + 1).dirichlet([0.5] * c, size=(9, 96)) if cross else None
    ref = tg.pairwise_distances(x, y, divergence=divergence, backend="torch")
    one = tg.pairwise_distances(x, y, divergence=divergence, backend="cpu", threads=1)
    assert np.array_equal(tg.pairwise_distances(x, y, divergence=divergence, backend="cpu", threads=2), one)
    mask = ref > 0
    assert (np.abs(one - ref)[mask] / ref[mask]).max() < 5e-8
    assert (one[~mask] == 0).all()


def test_importing_taskgeom_first_sets_a_short_spin_and_keeps_a_choice_made():
    # libgomp: 1000 spins (about 10 us) then sleep; other runtimes: passive; a choice already made is kept
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, taskgeom; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"

    def settled(**env):
        return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True).stdout

    assert settled().split() == ["1000", "passive"]
    assert settled(OMP_WAIT_POLICY="active").split() == ["None", "active"]
    assert settled(GOMP_SPINCOUNT="5").split() == ["5", "None"]


def test_training_warns_when_torch_spins_on_a_busy_machine(monkeypatch):
    # torch imported before taskgeom (no OMP_WAIT_POLICY): its OpenMP threads spin; on a busy machine that
    # costs training several times its share, so train() says so once, naming the fix
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import {}, {}; import taskgeom._openmp as o; print(o.spins)"
    first = [
        subprocess.run([sys.executable, "-c", code.format(*order)], env=env, capture_output=True, text=True).stdout
        for order in (("torch", "taskgeom"), ("taskgeom", "torch"))
    ]
    assert [f.strip() for f in first] == ["True", "False"]
    from taskgeom import _native, _openmp

    monkeypatch.setattr(_openmp, "spins", True)
    monkeypatch.setattr(_native, "busy_machine", lambda: (6, 2))
    with pytest.warns(RuntimeWarning, match="6 tasks are runnable on 2 cores .* GOMP_SPINCOUNT=1000"):
        _native.warn_if_openmp_spins("training on the CPU")
    monkeypatch.setattr(_native, "busy_machine", lambda: None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _native.warn_if_openmp_spins("training on the CPU")  # a quiet machine: nothing to say
