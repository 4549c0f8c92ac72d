"""Progress bars that also show off a terminal: on a terminal a tqdm bar; written to a log file or under
nohup, one plain line (``desc: 1200/4800 steps (25%), 3m10s elapsed, about 9m30s left``) every
``TASKGEOM_HEARTBEAT_S`` seconds (default 30; 0 turns the lines off), so that a long run never looks
dead."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

__all__ = ["bar", "heartbeat_seconds"]


def heartbeat_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get("TASKGEOM_HEARTBEAT_S", "30")))
    except ValueError:
        return 30.0


class _Heartbeat(tqdm):
    """A tqdm whose display is one whole line, at most every ``mininterval`` seconds and once at the end
    (when the task lasted that long)."""

    _shown = 0

    def display(self, msg=None, pos=None):
        if self.n == self._shown:
            return True
        d = self.format_dict
        total, unit = d.get("total"), d.get("unit") or "it"
        done = (
            f"{self.n}/{total} {unit}" + (f" ({100 * self.n / total:.0f}%)" if total else "")
            if total
            else f"{self.n} {unit}"
        )
        rate = (self.n - (self.initial or 0)) / d["elapsed"] if d["elapsed"] > 0 else 0
        left = f", about {tqdm.format_interval((total - self.n) / rate)} left" if total and rate > 0 else ""
        print(f"{self.desc}: {done}, {tqdm.format_interval(d['elapsed'])} elapsed{left}", file=self.fp, flush=True)
        self._shown = self.n
        return True

    def close(self):
        if self.disable:
            return
        if self.format_dict["elapsed"] >= self.mininterval:  # a short task ends without a line
            self.display()
        self.disable = True  # tqdm's own close adds nothing after the last line
        super().close()


def bar(iterable=None, *, enabled: bool = True, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal; off one, heartbeat lines (see the module docstring)."""
    stream = kwargs.get("file") or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    if tty or not enabled:
        return tqdm(iterable, disable=not enabled, **kwargs)
    every = heartbeat_seconds()
    if every == 0:
        return tqdm(iterable, disable=True, **kwargs)
    kwargs.setdefault("file", stream)
    return _Heartbeat(iterable, mininterval=every, maxinterval=every, **kwargs)
