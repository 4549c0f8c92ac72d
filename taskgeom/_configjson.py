"""Resolved configurations as canonical JSON, and the fields in which two of them differ.

A store records each trajectory's configuration as canonical JSON (sorted keys, finite numbers), so that
equal configurations compare equal as strings; :func:`config_diff` names what differs when they do not.
"""

from __future__ import annotations

import json

__all__ = ["canonical", "config_diff"]


def canonical(obj) -> str:
    """JSON of a config (sorted keys), so that equal configs compare equal whatever their order."""
    try:
        return json.dumps(obj, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config must be JSON-serialisable with finite numbers ({exc})") from exc


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
