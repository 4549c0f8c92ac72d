"""Configuration dataclasses as command-line options, and their JSON form.

A config field declares its help text (and optionally choices, a minimum, a metavar) once, with
:func:`option`; :func:`add_options` turns the dataclass into argparse options with that help and the
default shown, and :func:`from_args` builds the dataclass back from the parsed namespace. The command
line therefore never copies a config field by hand, and every option is documented with its default.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from . import _cliutil
from ._cliutil import nonnegative_int, positive_float, positive_int  # noqa: F401  (re-exported)

__all__ = ["option", "add_options", "from_args", "to_dict", "positive_int", "nonnegative_int", "positive_float"]


def option(default: Any, help: str, *, choices=None, minimum=None, metavar=None, flag=None) -> Any:
    """A dataclass field with command-line metadata: ``help`` (required), ``choices``, ``minimum`` (values
    below it are rejected with a one-line error), ``metavar`` and ``flag`` (the option's name when it is
    not ``--field-name``)."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "metavar": metavar, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _bounded(kind, minimum):
    convert = {int: _cliutil._int, float: _cliutil._float}.get(kind, kind)  # one-line errors for bad numbers

    def parse(text: str):
        value = convert(text)
        if minimum is not None and not value >= minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _unwrap(tp):
    """(base type, optional?, element type for tuples) of an annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base, _, elem = _unwrap(args[0])
        return base, True, elem
    if origin is tuple or tp is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return tuple, False, (args[0] if args else str)
    if origin is list or tp is list:
        args = typing.get_args(tp)
        return list, False, (args[0] if args else str)
    return tp, False, None


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


def add_options(parser: argparse.ArgumentParser, cls, exclude=(), group: str | None = None) -> None:
    """Add one option per field of the dataclass ``cls`` (except ``exclude``), with its help and default."""
    hints = typing.get_type_hints(cls)
    target = parser.add_argument_group(group) if group else parser
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        meta = f.metadata or {}
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        base, _optional, elem = _unwrap(hints[f.name])
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kw: dict = {"dest": f.name, "default": default}
        help_text = meta.get("help") or f.name.replace("_", " ")
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
            help_text += f" (default: {'auto' if default is None else ('on' if default else 'off')})"
        else:
            if base in (tuple, list):
                kw["nargs"] = "+"
                base = elem
            kind = base if base in (int, float, str) else str
            if meta.get("minimum") is not None:
                kind = _bounded(kind, meta["minimum"])
            kw["type"] = kind
            if meta.get("choices"):
                kw["choices"] = list(meta["choices"])
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
            help_text += f" (default: {_show(default)})"
        target.add_argument(flag, help=help_text.replace("%", "%%"), **kw)


def from_args(cls, args: argparse.Namespace, **overrides):
    """The dataclass ``cls`` from parsed options (fields absent from ``args`` keep their defaults)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init or not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        if _unwrap(hints[f.name])[0] is tuple and isinstance(v, list):
            v = tuple(v)
        values[f.name] = v
    values.update(overrides)
    return cls(**values)


def to_dict(cfg) -> dict:
    """A config dataclass as a JSON-ready dict (tuples become lists, nested dataclasses dicts)."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {k: plain(x) for k, x in dataclasses.asdict(v).items()}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)
