"""The package's layers (docs/architecture.md): no import cycle inside taskgeom/, and no lower layer
imports an upper one. Checked on the source with ast, counting every import (module level and inside
functions), so that a lazy import cannot hide a cycle."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "taskgeom"

#: layer of each top-level module or subpackage (0: core, 1: data, 2: train, 3: analysis, 4: presentation)
LAYERS = {
    "data": 1,
    "train": 2,
    "analysis": 3,
    "figures": 4,
    "plots": 4,
    "report": 4,
    "picture": 4,
    "commands": 4,
    "cli": 4,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set:
    """The taskgeom modules imported by one file."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "taskgeom")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "taskgeom":
                continue
            for a in node.names:  # `from . import x` names a module when x is one
                sub = f"{target}.{a.name}"
                out.add(sub if _exists(sub) else target)
    return {m for m in out if m != mod}


def _exists(name: str) -> bool:
    p = PKG.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _graph() -> dict:
    return {_module_name(p): _imports(p) for p in PKG.rglob("*.py")}


def _layer(mod: str) -> int:
    parts = mod.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 4  # the package facade counts as presentation


def test_no_import_cycles():
    graph = _graph()
    # the package facade (taskgeom/__init__) re-exports the library; below the top layer no module imports
    # it (the command line, at the top, may)
    importers = {m for m, deps in graph.items() if "taskgeom" in deps and m != "taskgeom" and _layer(m) < 4}
    allowed = {"taskgeom._provenance"}  # reads __version__ only
    assert importers <= allowed, f"modules importing the package facade: {importers - allowed}"
    assert "taskgeom.cli" not in graph["taskgeom"], "the facade must not import the command line"
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in graph.get(m, ()):
            if d == "taskgeom" and _layer(m) == 4:
                continue  # (the facade imports no presentation module but the plots/report helpers)
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def test_lower_layers_do_not_import_upper_ones():
    bad = [
        (m, d)
        for m, deps in _graph().items()
        if m != "taskgeom"
        for d in deps
        if d != "taskgeom" and _layer(d) > _layer(m)
    ]
    assert not bad, f"imports from a higher layer: {bad}"


def test_the_check_sees_lazy_imports(tmp_path):
    """The checker counts imports inside functions (guards the two tests above against a blind spot)."""
    f = PKG / "data" / "tasks.py"
    assert "taskgeom.data.tasks" in _graph()
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from taskgeom.picture import run\n")
    tree = ast.parse(src.read_text())
    found = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found == ["taskgeom.picture"] and f.exists()


def test_every_subpackage_is_installed():
    """A subpackage missing from pyproject's package list is absent from a non-editable install (the
    tests in the checkout would still pass): every folder of taskgeom/ with an __init__.py is listed."""
    import tomllib

    listed = set(tomllib.loads((PKG.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p) for p in PKG.rglob("__init__.py")}
    assert found == listed, f"pyproject.toml [tool.setuptools] packages: missing {sorted(found - listed)}"
