"""Input conversion and checks shared by every public function.

Models are probability arrays of shape ``(N, C)`` (one model) or ``(..., N, C)`` (many), as numpy
arrays (memory maps included) or torch tensors, in float16, bfloat16 (torch only), float32 or float64.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

# the scalar rules live in _checks (free of torch); their names stay importable from here
from ._checks import ArgumentTypeError, _real, check_choice, check_float, check_int  # noqa: F401

#: Largest accepted ``|sum_c p_c - 1|`` per sample, by storage dtype (rounding of stored values).
DEFAULT_TOL = {
    torch.float64: 1e-6,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 3e-2,
}

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def as_tensor(x, name: str = "models") -> tuple[torch.Tensor, bool]:
    """Return ``(tensor, was_numpy)`` without copying where possible.

    Complex and boolean inputs are refused (probabilities are real numbers; nothing is dropped with a
    warning). Non-native byte order (a big-endian ``.npy`` on a little-endian machine) is converted here,
    at the edge (a copy), since torch and the native kernels read native floats only."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise ArgumentTypeError(f"{name}: probabilities must be real, got a complex tensor ({x.dtype})")
        if x.dtype == torch.bool:
            raise TypeError(f"{name}: expected a numeric tensor, got dtype {x.dtype}")
        t = x
        was_numpy = False
    elif isinstance(x, np.ndarray):
        if x.dtype.kind == "c":
            raise ArgumentTypeError(f"{name}: probabilities must be real, got a complex array ({x.dtype})")
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{name}: expected a numeric array, got dtype {x.dtype}")
        if not x.dtype.isnative:
            x = x.astype(x.dtype.newbyteorder("="))
        if any(st < 0 for st in x.strides):
            x = np.ascontiguousarray(x)
        with warnings.catch_warnings():  # read-only memory maps: taskgeom never writes to inputs
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(x if x.dtype.kind == "f" else x.astype(np.float64))
        was_numpy = True
    elif isinstance(x, (list, tuple)) and len(x) and all(isinstance(e, (np.ndarray, torch.Tensor)) for e in x):
        parts = [as_tensor(e, name)[0] for e in x]
        shapes = {tuple(p.shape) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"{name}: the models in the sequence have different shapes {sorted(shapes)}")
        t = torch.stack(parts)
        was_numpy = isinstance(x[0], np.ndarray)
    else:
        if np.iscomplexobj(x) if isinstance(x, (list, tuple, complex)) else False:
            raise ArgumentTypeError(f"{name}: probabilities must be real, got complex numbers")
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except Exception as exc:  # noqa: BLE001
            raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}") from exc
        was_numpy = True
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name}: unsupported dtype {t.dtype}")
    return t, was_numpy


def as_float64_array(x, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array on the host, refused as :func:`as_tensor` refuses (complex, boolean,
    not numeric): a numeric numpy array is converted once, without a round trip through torch."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "fiu":
        return np.asarray(x, dtype=np.float64)
    t, _ = as_tensor(x, name)
    return t.detach().to(torch.float64).cpu().numpy()


def float64_tensor(x, device=None) -> torch.Tensor:
    """``x`` (numbers: weights, counts, a grid) as a float64 tensor on ``device`` (default: where a tensor
    ``x`` is, else the CPU): a tensor is cast, anything else converted once, through numpy."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=x.device if device is None else device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


def host_array(x) -> np.ndarray:
    """``x`` as a numpy array on the host: a tensor is detached and brought off its device (a CPU tensor's
    memory is shared, not copied), anything else is taken by ``np.asarray`` (no copy where none is needed)."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def tensor_of(x, device=None, dtype=None) -> torch.Tensor:
    """``x`` (labels, indices, images) as a tensor: a tensor as it is, anything else converted once through
    numpy; its dtype kept (checked by the caller) unless ``dtype`` is given, on ``device`` when given."""
    if isinstance(x, torch.Tensor):
        return x if device is None and dtype is None else x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def label_count(labels: torch.Tensor) -> int:
    """``max(labels) + 1``, the classes labels imply (any integer dtype: torch cannot reduce uint16-64)."""
    if labels.numel() == 0:
        raise ValueError("labels: empty; at least one labelled sample is needed")
    return int(labels.to(torch.int64).max()) + 1


def default_tol(dtype: torch.dtype) -> float:
    return DEFAULT_TOL.get(dtype, 1e-4)


def check_tol(tol) -> float | None:
    """``tol`` as a float, or None; NaN, infinite or negative tolerances are refused."""
    if tol is None:
        return None
    t = _real(tol, "tol")
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    return t


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def exactly_representable(p: torch.Tensor, narrow: torch.dtype, budget: int = 1 << 24) -> bool:
    """Whether every value of ``p`` survives a round trip through ``narrow`` unchanged (checked in blocks)."""
    flat = p.reshape(-1)
    for i in range(0, flat.numel(), budget):
        blk = flat[i : i + budget]
        if not bool((blk.to(narrow).to(blk.dtype) == blk).all()):
            return False
    return True


def implied_tol(p: torch.Tensor) -> tuple[float, str]:
    """The default tolerance for ``p`` from the precision its values came in, and a note saying why.

    float32/float64 values that are all exactly float16 (or bfloat16) were almost certainly stored in that
    precision and cast up: their sums carry float16's rounding, so they get float16's tolerance."""
    tol = default_tol(p.dtype)
    if p.dtype in (torch.float32, torch.float64) and p.numel():
        for narrow in (torch.float16, torch.bfloat16):
            if exactly_representable(p, narrow):
                return DEFAULT_TOL[narrow], (
                    f"; the {_dtype_name(p.dtype)} values are all exactly representable in "
                    f"{_dtype_name(narrow)}, so they are checked as {_dtype_name(narrow)} data"
                )
    return tol, ""


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    flat = int(torch.nonzero(mask.reshape(-1), as_tuple=False)[0, 0])
    return tuple(int(i) for i in np.unravel_index(flat, tuple(mask.shape)))


def _where(name: str, idx: tuple[int, ...], offset: int = 0) -> str:
    """'models: model 3, sample 17' for an index (..., sample) into an array of models."""
    if len(idx) == 0:
        return name
    lead = idx[:-1]
    model = "" if not lead else f"model {lead[0] if len(lead) == 1 else tuple(lead)}, "
    return f"{name}: {model}sample {idx[-1] + offset}"


def check_probabilities(
    p: torch.Tensor, name: str = "models", tol: float | None = None, sample_offset: int = 0, budget: int = 1 << 26
) -> None:
    """Raise ``ValueError`` naming the first offending model and sample unless ``p`` holds
    finite, non-negative probability vectors along its last axis (sums within ``tol`` of 1).
    ``sample_offset`` is added to reported sample indices (for chunks of a larger array). Works in
    blocks of models, so checking a large array never makes a full-size temporary.

    The default tolerance follows the precision the data came in (:func:`implied_tol`): float32 values
    that are all exactly float16 (predictions stored in float16 and cast up) get float16's tolerance,
    which the error message then says."""
    if p.dim() < 2:
        raise ValueError(f"{name}: expected shape (N, C) or (..., N, C), got {tuple(p.shape)}")
    if p.numel() == 0:
        raise ValueError(f"{name}: empty array of shape {tuple(p.shape)}")
    tol = check_tol(tol)
    implied = tol is None  # the dtype's tolerance, widened below if the values came in a narrower precision
    note = ""
    tol = default_tol(p.dtype) if tol is None else tol
    lead = tuple(p.shape[:-2])
    flat = p.reshape((-1,) + tuple(p.shape[-2:]))
    n, c = flat.shape[1:]
    step = max(1, budget // max(1, n * c))

    def where(i: int, rest: tuple[int, ...]) -> tuple[int, ...]:
        model = tuple(int(x) for x in np.unravel_index(i, lead)) if lead else ()
        return model + rest

    for i0 in range(0, flat.shape[0], step):
        blk = flat[i0 : i0 + step]
        bad = ~torch.isfinite(blk)
        if bool(bad.any()):
            j, s_, k = _first_index(bad)
            idx = where(i0 + j, (s_,))
            raise ValueError(
                f"{_where(name, idx, sample_offset)}: probability is not finite ({float(blk[j, s_, k])}) at class {k}"
            )
        neg = blk < 0
        if bool(neg.any()):
            j, s_, k = _first_index(neg)
            idx = where(i0 + j, (s_,))
            raise ValueError(
                f"{_where(name, idx, sample_offset)}: probability is negative ({float(blk[j, s_, k])}) at class {k} "
                "(logits? probabilities are softmax(logits))"
            )
        s = blk.sum(-1, dtype=torch.float64)
        off = (s - 1).abs() > tol
        if bool(off.any()) and implied:
            implied = False
            wider, why = implied_tol(p)
            if wider > tol:
                tol, note = wider, why
                off = (s - 1).abs() > tol
        if bool(off.any()):
            j, s_ = _first_index(off)
            idx = where(i0 + j, (s_,))
            raise ValueError(
                f"{_where(name, idx, sample_offset)}: probabilities sum to {float(s[j, s_]):.6g}, not 1 "
                f"(tolerance {tol:g}{note}); pass normalised probabilities (softmax of the logits)"
            )


def check_labels(labels, n: int, c: int, name: str = "labels") -> torch.Tensor:
    """Labels as an int64 tensor of shape (N,), each in [0, C)."""
    lab = tensor_of(labels)
    if lab.dim() != 1:
        raise ValueError(f"{name}: expected shape (N,), got {tuple(lab.shape)}")
    if lab.dtype == torch.bool:
        raise ValueError(f"{name}: labels must be class indices (integers), got booleans")
    if lab.is_floating_point():
        if not bool((lab == lab.round()).all()):
            raise ValueError(f"{name}: labels must be integers")
    lab = lab.to(torch.int64)
    if lab.numel() != n:
        hint = " (models transposed? they must be (..., N samples, C classes))" if lab.numel() == c != n else ""
        raise ValueError(f"{name}: {lab.numel()} labels for {n} samples{hint}")
    if n and (int(lab.min()) < 0 or int(lab.max()) >= c):
        bad = _first_index((lab < 0) | (lab >= c))
        raise ValueError(f"{name}: sample {bad[0]}: label {int(lab[bad])} is outside [0, {c})")
    return lab


def check_nonempty(t: torch.Tensor, name: str) -> None:
    if t.numel() == 0:
        raise ValueError(f"{name}: empty array of shape {tuple(t.shape)}; every dimension must be at least 1")


def recheck_sums(exc: ValueError, tol, checks) -> None:
    """After a kernel's validation failed with the dtype's tolerance: re-raise unless the tolerance was
    the default and the precision-aware Python check (which names the precision) passes every input."""
    if tol is not None or "sum to" not in str(exc):
        raise exc
    for t, name in checks:
        if t is not None:
            check_probabilities(t, name, None)  # raises the precision-aware message if really unnormalised


def same_events(a: torch.Tensor, b: torch.Tensor, names=("models", "others")) -> None:
    if a.shape[-2] != b.shape[-2]:
        raise ValueError(
            f"{names[0]} and {names[1]} have different numbers of samples ({a.shape[-2]} vs {b.shape[-2]})"
        )
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{names[0]} and {names[1]} have different numbers of classes ({a.shape[-1]} vs {b.shape[-1]})"
        )


def to_output(t: torch.Tensor, was_numpy: bool):
    return t.detach().cpu().numpy() if was_numpy else t
