"""The code's version for results saved beside it: package version and git commit.

In a git checkout the commit is read live (with whether the tree has uncommitted changes); an installed
copy reads the commit recorded when it was built (``_commit.json``, written by setup.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

__all__ = ["code_version"]


def _git(root: Path) -> dict:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        return {}


def code_version() -> dict:
    from . import __version__

    here = Path(__file__).resolve().parent
    info = {"taskgeom": __version__}
    live = _git(here.parent) if (here.parent / ".git").exists() else {}
    if live:
        return {**info, **live}
    try:
        built = json.loads((here / "_commit.json").read_text())
        if built.get("commit"):
            info.update(commit=built["commit"], dirty=bool(built.get("dirty")), source="recorded at build time")
    except (OSError, ValueError):
        pass
    return info
