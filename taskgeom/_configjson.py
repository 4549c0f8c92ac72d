"""Resolved configurations as canonical JSON, and the fields in which two of them differ.

A store records each trajectory's configuration as canonical JSON (sorted keys, finite numbers), so that
equal configurations compare equal as strings; :func:`config_diff` names what differs when they do not.
"""

from __future__ import annotations

import json
import math

__all__ = ["canonical", "config_diff", "strict_dumps"]


def canonical(obj) -> str:
    """JSON of a config (sorted keys), so that equal configs compare equal whatever their order."""
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config must be JSON-serialisable with finite numbers ({exc})") from exc


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":  # numpy scalars and arrays
        return _finite(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def strict_dumps(obj, **kwargs) -> str:
    """Strict JSON of a result (results.json, a comparison, placed models): a non-finite number, an unbounded
    interval end or an undefined ratio, is ``null``, as JSON has no NaN or Infinity (Python's own writer
    would emit tokens other readers refuse)."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _flatten(d, prefix=""):
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = d
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """``["lr: 0.1 -> 0.2", "epochs: 3 -> 5"]``: the fields (dotted for nested dicts) that differ."""
    a, b = _flatten(old), _flatten(new)
    missing = "<absent>"
    return [
        f"{k}: {json.dumps(a.get(k, missing))} -> {json.dumps(b.get(k, missing))}"
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    ]
