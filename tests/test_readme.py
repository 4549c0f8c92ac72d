"""Every code block of the README runs as written (issue 12, item 5).

The ```bash and ```python blocks run in order in one temporary folder (later blocks use the files earlier
ones make), ``taskgeom`` being this checkout's command line. A block preceded by
``<!-- skip-test: why -->`` is not run (it installs packages, or needs CIFAR-10 or a GPU); one preceded
by ``<!-- slow-test: why -->`` runs only with ``TASKGEOM_README_SLOW=1`` (the whole main job).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import taskgeom

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(?:<!--\s*(skip-test|slow-test):\s*(.*?)-->\s*\n)?```(bash|python)\n(.*?)```", re.S)


def blocks(text: str) -> list:
    return [(m.group(1), m.group(2), m.group(3), m.group(4)) for m in BLOCK.finditer(text)]


def test_block_parser_sees_every_block_and_its_marker():
    text = (ROOT / "README.md").read_text()
    found = blocks(text)
    assert len(found) == text.count("```bash") + text.count("```python")
    assert any(kind == "skip-test" for kind, *_ in found) and any(kind is None for kind, *_ in found)
    assert all(reason.strip() for kind, reason, *_ in found if kind)  # every skip says why


def test_readme_code_blocks_run_as_written(tmp_path):
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md not beside the tests")
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "taskgeom").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m taskgeom.cli "$@"\n')
    (shim / "taskgeom").chmod(0o755)
    (shim / "python").symlink_to(sys.executable)
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
        # the taskgeom these tests import: the checkout when built in place, else the installed copy
        "PYTHONPATH": os.pathsep.join(
            [str(Path(taskgeom.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
        "TASKGEOM_CACHE": str(tmp_path / "cache"),
    }
    work = tmp_path / "work"
    work.mkdir()
    ran, outputs = 0, []
    for i, (kind, reason, lang, code) in enumerate(blocks(readme.read_text())):
        if kind == "skip-test" or (kind == "slow-test" and not os.environ.get("TASKGEOM_README_SLOW")):
            continue
        cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
        for attempt in range(2):  # twice: running a block again must work too (resume, no duplicates)
            run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, f"README block {i} ({lang}), run {attempt + 1}:\n{code}\n{run.stderr[-3000:]}"
            outputs.append(run.stdout)
            if lang == "bash":
                break
        ran += 1
    assert ran >= 4
    # the store example appended each checkpoint once although it ran twice
    assert any("(6, 6) [3, 3]" in out for out in outputs[-4:])
