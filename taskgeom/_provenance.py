"""The code's version for results saved beside it: package version and git commit when available."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> dict:
    from . import __version__

    info = {"taskgeom": __version__}
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            info["commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info
