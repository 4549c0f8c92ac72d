"""The one rule set for scalar arguments (counts, sizes, seeds, tolerances, choices) of every public function
and of the command line's parsers. Free of torch, so that building a parser does not import it."""

from __future__ import annotations

import math
import sys

import numpy as np


def _is_tensor(value) -> bool:
    """Whether ``value`` is a torch tensor (never one when torch was not imported: nothing made it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (``k=2.5``, ``tile=True``): a ``TypeError`` that is also a
    ``ValueError``, so that callers catching either (the command line catches ValueError) see one line."""


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int, or a one-line ``TypeError``/``ValueError`` naming ``name``.

    Accepted: Python and numpy integers (and 0-d integer tensors). Refused, never coerced: bools (``True``
    is not a count), floats even when integral (``k=2.0``: say ``k=2``), strings, NaN and infinities, and
    values outside ``[minimum, maximum]``. The one rule for every count, size, seed and index argument."""
    if _is_tensor(value) and value.dim() == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def _real(value, name: str) -> float:
    if _is_tensor(value) and value.dim() == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_float(
    value,
    name: str,
    finite: bool = True,
    positive: bool = False,
    nonnegative: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """``value`` as a Python float, or a one-line ``TypeError``/``ValueError`` naming ``name``.

    Accepted: real numbers (ints included; bools, complex numbers and strings are refused). ``finite``:
    NaN and infinities are refused; ``positive``: > 0; ``nonnegative``: >= 0; ``minimum``/``maximum``:
    inclusive bounds. The one rule for every tolerance, budget, fraction and rate argument."""
    v = _real(value, name)
    if math.isnan(v) or (finite and math.isinf(v)):
        raise ValueError(f"{name} must be a finite number, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_choice(value, name: str, choices) -> str:
    """``value`` if it is one of ``choices`` (strings), else a one-line ``ValueError`` naming ``name``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value
