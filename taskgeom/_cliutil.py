"""Small helpers for the command line: argparse types that reject bad numbers with one line, a parser
whose errors are one line, the one-line rendering of exceptions, and the command line's exit statuses.

Exit statuses: 0 done; 1 (``EXIT_FAILED``) the run failed on its input or environment (a file, a model, a
sample; one line naming it); 2 (``EXIT_USAGE``) a usage error (argparse's, and options that contradict each
other); 70 (``EXIT_INTERNAL``, sysexits' EX_SOFTWARE) a bug in taskgeom; 130 interrupted.

``positive_int`` / ``nonnegative_int`` / ``positive_float`` are meant for options such as ``--epochs``,
``--batch-size`` or ``--lr``: ``p.add_argument("--epochs", type=positive_int)``.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re

__all__ = [
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "finite_float",
    "fraction",
    "OneLineParser",
    "one_line",
    "CLIError",
    "UsageError",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_INTERNAL",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70


class CLIError(Exception):
    """The run failed on its input or environment: one line naming the file, model or sample, exit status 1."""


class UsageError(Exception):
    """A bad command line found after parsing (options that contradict each other, a setting out of its range
    found by the settings' own checks): one line, exit status 2, as argparse's usage errors."""


#: the largest integer an option takes (what SQLite, NumPy and torch store as a 64-bit integer)
INT_MAX = 2**63 - 1


def _int(text: str) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if abs(v) > INT_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer of at most 2**63 - 1 in magnitude, got {text!r}")
    return v


def _float(text: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def finite_float(text: str) -> float:
    """argparse type: any finite number (no NaN or infinity)."""
    return _float(text)


def _bounded(name: str, parse, ok, must: str, doc: str):
    """An argparse type ``name`` (docstring ``doc``): ``parse`` the text (:func:`_int` or :func:`_float`),
    then refuse a value that is not ``ok`` with "must be ``must``"."""

    def check(text: str):
        v = parse(text)
        if not ok(v):
            raise argparse.ArgumentTypeError(
                f"must be {must}, got {v:g}" if isinstance(v, float) else f"must be {must}, got {v}"
            )
        return v

    check.__name__ = check.__qualname__ = name
    check.__doc__ = doc
    return check


fraction = _bounded(
    "fraction",
    _float,
    lambda v: 0 < v < 1,
    "a fraction in (0, 1)",
    "argparse type: a number in the open interval (0, 1).",
)
positive_int = _bounded(
    "positive_int", _int, lambda v: v >= 1, "a positive integer (>= 1)", "argparse type: an integer >= 1."
)
nonnegative_int = _bounded(
    "nonnegative_int", _int, lambda v: v >= 0, "a non-negative integer (>= 0)", "argparse type: an integer >= 0."
)
positive_float = _bounded(
    "positive_float", _float, lambda v: v > 0, "a positive number (> 0)", "argparse type: a finite number > 0."
)
nonnegative_float = _bounded(
    "nonnegative_float",
    _float,
    lambda v: v >= 0,
    "a non-negative number (>= 0)",
    "argparse type: a finite number >= 0.",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``prog: error: ...``, exit status 2) instead of
    the usage text followed by the error. Subparsers made from it inherit this."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")

    def format_help(self) -> str:
        """As argparse's, with the docstrings' markup read as plain text (``x`` and :mod:`x` -> x)."""
        return re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", super().format_help()).replace("``", "")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown option is reported by the subcommand it was given to, with the
        closest of that subcommand's options (``--epcohs``: did you mean --epochs?)."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self
            while True:  # the innermost subcommand that was chosen
                subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
                chosen = subs and getattr(ns, subs[0].dest, None)
                if not chosen or chosen not in subs[0].choices:
                    break
                parser = subs[0].choices[chosen]
            options = [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]
            close = difflib.get_close_matches(extras[0].split("=")[0], options, n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close and extras[0].startswith("-") else ""
            parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return ns


def one_line(exc) -> str:
    """An exception (or text) as one line: KeyError's quotes dropped, whitespace runs collapsed."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    elif isinstance(exc, BaseException):
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
    else:
        text = str(exc)
    return " ".join(text.split())
