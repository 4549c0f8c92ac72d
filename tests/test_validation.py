"""Bad input gets a clear error naming what is wrong, on every path; nothing crashes."""

import numpy as np
import pytest
import torch

import taskgeom as tg

from testing import DEVICE_BACKENDS, labels, models, to_device

PATHS = ["cpu", "torch", pytest.param("cuda", marks=DEVICE_BACKENDS[1].marks)]


def _bad(kind):
    a = models(4, 20, 5, seed=1, dtype=torch.float64)
    if kind == "nan":
        a[2, 7, 3] = float("nan")
    elif kind == "inf":
        a[2, 7, 3] = float("inf")
    elif kind == "negative":  # still sums to one
        a[2, 7, 0] += a[2, 7, 3] + 0.25
        a[2, 7, 3] = -0.25
    elif kind == "unnormalised":
        a[2, 7] *= 1.5
    return a


MESSAGES = {"nan": "not finite", "inf": "not finite", "negative": "negative", "unnormalised": "sum to"}


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_pairwise_names_model_and_sample(backend, kind):
    a = to_device(_bad(kind), backend)
    with pytest.raises(ValueError, match=rf"model 2, sample 7.*{MESSAGES[kind]}|{MESSAGES[kind]}.*model 2, sample 7"):
        tg.pairwise_distances(a, backend=backend)


@pytest.mark.parametrize("backend", PATHS)
@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_progress_names_model_and_sample(backend, kind):
    a = to_device(_bad(kind), backend)
    y = to_device(labels(20, 5), backend)
    with pytest.raises(ValueError, match=r"model 2, sample 7"):
        tg.progress(a, y, backend=backend)


def test_bad_input_in_others_is_named():
    a = models(3, 10, 4, dtype=torch.float64)
    b = _bad("nan")[:, :10, :4]
    b = models(3, 10, 4, dtype=torch.float64)
    b[1, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="others: model 1, sample 4"):
        tg.pairwise_distances(a, b)


def test_single_model_functions_check_inputs():
    p = models(1, 10, 3, dtype=torch.float64)[0]
    q = p.clone()
    q[4, 1] = -1.0
    with pytest.raises(ValueError, match="q: sample 4: probability is negative"):
        tg.bhattacharyya(p, q)
    with pytest.raises(ValueError, match="sum to"):
        tg.geodesic(p, p * 2, 0.5)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_mismatched_shapes(backend):
    a = models(2, 10, 4)
    with pytest.raises(ValueError, match="different numbers of samples"):
        tg.pairwise_distances(a, models(2, 11, 4), backend=backend)
    with pytest.raises(ValueError, match="different numbers of classes"):
        tg.pairwise_distances(a, models(2, 10, 5), backend=backend)
    with pytest.raises(ValueError, match="10 labels for 11 samples|labels for 11"):
        tg.progress(models(2, 11, 4), labels(10, 4), backend=backend)
    with pytest.raises(ValueError, match="label 7 is outside"):
        tg.progress(a, torch.full((10,), 7), backend=backend)
    # (C, N) instead of (N, C): the message names the likely cause, not only the labels
    with pytest.raises(ValueError, match=r"4 labels for 10 samples \(models transposed\?"):
        tg.progress(a, labels(4, 4), backend=backend)  # as if the models were (2, 4, 10)
    with pytest.raises(ValueError, match="labels must be class indices"):
        tg.progress(a, torch.zeros(10, dtype=torch.bool), backend=backend)
    with pytest.raises(ValueError, match="expected"):
        tg.pairwise_distances(torch.ones(3), backend=backend)


def test_wrong_dtype_and_unknown_options():
    with pytest.raises(TypeError):
        tg.pairwise_distances(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="divergence"):
        tg.pairwise_distances(models(2, 3, 2), divergence="jensen_shannon")
    with pytest.raises(ValueError, match="backend"):
        tg.pairwise_distances(models(2, 3, 2), backend="gpu")
    with pytest.raises(ValueError, match="chunk"):
        tg.pairwise_distances(models(2, 3, 2), chunk=0)


def test_cuda_backend_without_cuda_is_clear():
    info = tg.build_info()
    if not info["cuda"]:
        with pytest.raises(RuntimeError, match="not compiled with CUDA support"):
            tg.pairwise_distances(models(2, 3, 2), backend="cuda")
    elif not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a visible GPU"):
            tg.pairwise_distances(models(2, 3, 2), backend="cuda")
    else:  # host data is streamed through the GPU
        a = models(2, 3, 2)
        torch.testing.assert_close(tg.pairwise_distances(a, backend="cuda").cpu(), tg.pairwise_distances(a))


def test_native_module_rejects_malformed_views():
    from taskgeom import kernels

    mod = kernels.cpu_module()
    out = np.zeros((1, 1))
    with pytest.raises(ValueError, match="null data pointer"):
        mod.pairwise((0, 0, (1, 1, 1), (1, 1, 1)), None, out.ctypes.data, 0, 0, 1, True, 1e-4)
    with pytest.raises(ValueError, match="at least 1"):
        mod.pairwise((8, 0, (1, 0, 1), (1, 1, 1)), None, out.ctypes.data, 0, 0, 1, True, 1e-4)
    with pytest.raises(ValueError, match="dtype"):
        mod.pairwise((8, 9, (1, 1, 1), (1, 1, 1)), None, out.ctypes.data, 0, 0, 1, True, 1e-4)


def test_inputs_are_never_modified(tmp_path):
    a = models(3, 50, 6, dtype=torch.float16).numpy()
    before = a.copy()
    tg.pairwise_distances(a)
    tg.progress(a, labels(50, 6).numpy())
    tg.reindex(a, labels(50, 6).numpy(), grid=5)
    np.testing.assert_array_equal(a, before)


def test_imprint_errors():
    f = torch.randn(10, 4)
    with pytest.raises(ValueError, match="no imprinting samples"):
        tg.imprint(f, [0] * 10, 3)
    f[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tg.imprint(f, [0, 1] * 5, 2)


def test_inpca_rejects_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        tg.inpca(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="symmetric"):
        tg.inpca(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        tg.inpca(np.array([[0.0, np.nan], [np.nan, 0.0]]))


def test_validation_in_blocks_reports_global_indices():
    from taskgeom._validate import check_probabilities

    a = models(12, 30, 4, dtype=torch.float64)
    a[9, 17, 2] = float("nan")
    with pytest.raises(ValueError, match="model 9, sample 17"):
        check_probabilities(a, budget=30 * 4)  # one model per block
    b = a.reshape(3, 4, 30, 4)
    with pytest.raises(ValueError, match=r"model \(2, 1\), sample 17"):
        check_probabilities(b, budget=30 * 4 * 2)
    single = models(1, 30, 4, dtype=torch.float64)[0]
    single[3] *= 2
    with pytest.raises(ValueError, match="models: sample 3: probabilities sum to"):
        check_probabilities(single)
