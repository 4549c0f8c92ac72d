"""Configuration dataclasses as command-line options, and their JSON form.

A config field declares its help text (and optionally choices, a range, a metavar) once, with
:func:`option`; :func:`add_options` turns the dataclass into argparse options with that help and the
default shown, and :func:`from_args` builds the dataclass back from the parsed namespace. The command
line therefore never copies a config field by hand, and every option is documented with its default.
:func:`check_fields` applies the same declared rules (type, finiteness, range, choices) to a config however
it was made (the Python API, a sweep file, a preset), so every route is checked alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import types
import typing
from typing import Any

from . import _cliutil
from ._cliutil import nonnegative_int, positive_float, positive_int  # noqa: F401  (re-exported)

__all__ = [
    "option",
    "add_options",
    "from_args",
    "to_dict",
    "check_fields",
    "positive_int",
    "nonnegative_int",
    "positive_float",
]


def option(
    default: Any,
    help: str,
    *,
    choices=None,
    minimum=None,
    maximum=None,
    below=None,
    above=None,
    metavar=None,
    flag=None,
    open_prefix=None,
) -> Any:
    """A dataclass field with command-line metadata: ``help`` (required), ``choices``, a range (``minimum`` /
    ``maximum`` inclusive, ``above`` / ``below`` exclusive; values outside it are rejected with a one-line
    error, as are non-finite numbers), ``metavar`` and ``flag`` (the option's name when it is not
    ``--field-name``). ``open_prefix``: values starting with it are accepted besides ``choices`` (``timm:``
    for any timm architecture), checked where they are used."""
    meta = {
        "help": help,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "below": below,
        "above": above,
        "metavar": metavar,
        "flag": flag,
        "open_prefix": open_prefix,
    }
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _range_error(meta: dict, value) -> str | None:
    """What is wrong with the number ``value`` under the range of ``meta`` (None: nothing)."""
    lo, hi, above, below = (meta.get(k) for k in ("minimum", "maximum", "above", "below"))
    ok = (
        (lo is None or value >= lo)
        and (hi is None or value <= hi)
        and (above is None or value > above)
        and (below is None or value < below)
    )
    if ok:
        return None
    left = f"[{lo:g}" if lo is not None else (f"({above:g}" if above is not None else None)
    right = f"{hi:g}]" if hi is not None else (f"{below:g})" if below is not None else None)
    if left and right:
        return f"in {left}, {right}"
    if left:
        return f"at least {lo:g}" if lo is not None else f"greater than {above:g}"
    return f"at most {hi:g}" if hi is not None else f"less than {below:g}"


def _bounded(kind, meta):
    convert = {int: _cliutil._int, float: _cliutil._float}.get(kind, kind)  # one-line errors for bad numbers

    def parse(text: str):
        value = convert(text)
        if kind in (int, float):
            what = _range_error(meta, value)
            if what:
                raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _flag(f) -> str:
    return (f.metadata or {}).get("flag") or "--" + f.name.replace("_", "-")


def _check_value(f, value, kind, meta, choices=True) -> str | None:
    """What is wrong with one value of field ``f`` (None: nothing)."""
    if kind is bool:
        return None if isinstance(value, bool) else "true or false"
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            return "an integer"
        if abs(int(value)) > _cliutil.INT_MAX:
            return "an integer of at most 2**63 - 1 in magnitude"
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return "a number"
        if not math.isfinite(value):
            return "a finite number"
    elif kind is str:
        if not isinstance(value, str):
            return "a string"
    if choices and meta.get("choices") and value not in meta["choices"]:
        return f"one of {', '.join(map(str, meta['choices']))}"
    if kind in (int, float):
        return _range_error(meta, value)
    return None


def check_fields(cfg, open_choices=()) -> None:
    """Raise a one-line ValueError, naming the field and its option, for the first value of the config
    dataclass ``cfg`` of the wrong type (a string, a bool or a float for an integer; NaN or infinity for a
    number), out of its declared range, or not one of its choices: the rules :func:`add_options` gives the
    command line, applied to a config made any other way. ``open_choices``: fields whose choices are only
    the command line's list (a registry the caller checks itself may hold more)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        meta = f.metadata or {}
        value = getattr(cfg, f.name)
        base, optional, elem = _unwrap(hints[f.name])

        def bad(what, shown=value):
            return ValueError(f"{f.name} ({_flag(f)}) must be {what}, got {shown!r}")

        if value is None:
            if optional:
                continue
            raise bad("set (it has no 'none')")
        if base in (tuple, list):
            if not isinstance(value, (tuple, list)):
                raise bad("a list")
            length = _length(hints[f.name])
            if length is not None and len(value) != length:
                raise bad(f"{length} values")
            items, kind = list(value), elem
        else:
            items, kind = [value], base
        if kind not in (bool, int, float, str):
            continue
        for x in items:
            what = _check_value(f, x, kind, meta, choices=f.name not in open_choices)
            if what:
                raise bad(what, x)


def _length(tp):
    """The fixed length of a tuple annotation (``tuple[float, float]``: 2), or None."""
    for t in (tp, *typing.get_args(tp)):
        if typing.get_origin(t) is tuple:
            args = typing.get_args(t)
            return None if Ellipsis in args else len(args)
    return None


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
        return " ".join(_show(v) for v in value)
    if isinstance(value, float):
        return f"{value:.10g}"  # 0.95**5 shows as 0.7737809375, not 0.7737809374999998
    return str(value)


def add_options(parser: argparse.ArgumentParser, cls, exclude=(), group=None, order=()) -> None:
    """Add one option per field of the dataclass ``cls`` (except ``exclude``), with its help and default.
    ``group``: the title of one help section for them all, or a function of the field name giving each its
    section's title (sections in the order of ``order``'s titles, then of the fields' first appearance)."""
    hints = typing.get_type_hints(cls)
    sections: dict = {title: parser.add_argument_group(title) for title in order}

    def target_of(name: str):
        if not group:
            return parser
        title = group(name) if callable(group) else group
        if title not in sections:
            sections[title] = parser.add_argument_group(title)
        return sections[title]

    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        target = target_of(f.name)
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
            if kind in (int, float):  # finite numbers in the declared range, with one-line errors
                kind = _bounded(kind, meta)
            kw["type"] = kind
            if meta.get("choices") and meta.get("open_prefix"):
                kw["type"] = _choice_or_prefix(meta["choices"], meta["open_prefix"])
                kw["metavar"] = "{" + ",".join(meta["choices"]) + f",{meta['open_prefix']}<name>}}"
            elif meta.get("choices"):
                kw["choices"] = list(meta["choices"])
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
            help_text += f" (default: {_show(default)})"
        target.add_argument(flag, help=help_text.replace("%", "%%"), **kw)


def _choice_or_prefix(choices, prefix: str):
    def parse(text: str) -> str:
        if text in choices or (text.startswith(prefix) and len(text) > len(prefix)):
            return text
        raise argparse.ArgumentTypeError(
            f"invalid choice: {text!r} (choose from {', '.join(choices)}, or {prefix}<name>)"
        )

    return parse


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
