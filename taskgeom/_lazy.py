"""Public names of a package imported on first use (PEP 562), so that importing the package, reading settings
and printing ``--help`` do not import torch and the modules that need it."""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec


def lazy(package: str, namespace: dict, exports: dict) -> tuple:
    """``(__getattr__, __dir__)`` for ``package`` whose public names are ``exports`` (name -> relative module).

    A name is imported from its module on first use and then kept in ``namespace`` (later lookups skip
    ``__getattr__``); a submodule's name gives the submodule, as when every module was imported eagerly."""

    def __getattr__(name: str):
        module = exports.get(name)
        if module is None:
            if not name.startswith("_") and find_spec(f"{package}.{name}") is not None:
                return import_module(f".{name}", package)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
