"""The store's errors and the one-line form of an exception's message."""

from __future__ import annotations

__all__ = ["StoreError", "ConfigMismatchError", "one_line"]


class StoreError(RuntimeError):
    """A store that cannot be opened, read or written as asked (corrupt, truncated, missing, tampered with,
    full disk)."""


class ConfigMismatchError(ValueError):
    """A trajectory exists under this name with a different recorded configuration."""


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
