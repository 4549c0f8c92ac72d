"""Analysis commands for any store: ``taskgeom analyse`` (the main job's report for any store, grouped by
any recorded field), ``taskgeom place`` (new models in an analysed picture) and ``taskgeom compare``
(two groups of trajectories: normalised distance with intervals and a permutation test over seeds).

    taskgeom analyse my-store --group-by method --out my-picture
    taskgeom place my-picture new-run.npy
    taskgeom compare my-store --a method=sgd --b method=adam
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np

from ._cliutil import CLIError, UsageError, nonnegative_int, positive_int
from ._configjson import strict_dumps

__all__ = ["configure_analyse", "configure_compare", "configure_place"]

#: what ``taskgeom analyse`` records in its folder, so that ``taskgeom place`` can fit the same picture again
ANALYSIS_FILE = "analysis.json"


def _open_store(path):
    from .store import PredictionStore

    return PredictionStore(path, readonly=True)


def _analyse(store_path, options: dict):
    from .analysis import analyse

    store = _open_store(store_path)
    return store, analyse(store, **options)


def _cmd_analyse(args) -> int:
    from ._provenance import code_version
    from .picture import print_headline
    from .report import publish

    options = {
        "eval_set": args.eval_set,
        "tasks": args.groups,
        "grid": args.grid,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "group_by": args.group_by,
        "method": args.method,
        "reference": args.reference,
    }
    t0 = time.perf_counter()
    store, res = _analyse(args.store, options)
    out = Path(args.out)
    code = code_version()
    settings = {
        "store": str(Path(args.store).resolve()),
        "evaluation set": res.eval_set,
        "groups": f"by {args.group_by}: " + ", ".join(res.progress_on_union_task),
        "method": args.method or "every method",
        "progress grid": str(args.grid),
        "code": f"taskgeom {code.get('taskgeom', '?')}, commit {str(code.get('commit') or 'unknown')[:12]}",
    }
    publish(res, out, settings, title=f"taskgeom analyse: {Path(args.store).name}")
    res = dataclasses.replace(res, seconds={"total": time.perf_counter() - t0})
    relative = os.path.relpath(settings["store"], out.resolve())  # found again when both move together
    spec = {"store": settings["store"], "store_relative": relative, "options": options}
    (out / ANALYSIS_FILE).write_text(json.dumps(spec, indent=2))
    print_headline(res, str(out), title="taskgeom analyse", word="task" if args.group_by == "task" else "group")
    return 0


def _picture_options(folder: Path, store: str | None = None) -> tuple[Path, dict]:
    """The store and analysis options of a folder written by ``taskgeom analyse`` or ``taskgeom picture``
    (``store``: where the store is now, if it moved)."""
    store_path, options = _recorded_options(folder)
    if store is not None:
        store_path = Path(store)
    if not store_path.exists():
        raise CLIError(
            f"{folder}: the store it was analysed from, {store_path}, is not there (moved?): give --store PATH"
        )
    return store_path, options


def _recorded_options(folder: Path) -> tuple[Path, dict]:
    if (folder / ANALYSIS_FILE).is_file():
        spec = json.loads((folder / ANALYSIS_FILE).read_text())
        store = Path(spec["store"])
        if not store.exists() and spec.get("store_relative"):
            store = folder / spec["store_relative"]  # the folder and its store moved together
        return store, {**spec["options"], "n_boot": 0}
    if (folder / "config.json").is_file() and (folder / "results.json").is_file():
        cfg = json.loads((folder / "config.json").read_text())
        res = json.loads((folder / "results.json").read_text())
        store = Path(cfg.get("store") or folder / "store")
        options = {"eval_set": res["eval_set"], "tasks": cfg["tasks"], "grid": cfg["grid"], "n_boot": 0}
        return store, {**options, "method": "supervised"}
    raise CLIError(
        f"{folder}: not a folder written by taskgeom analyse or taskgeom picture (no {ANALYSIS_FILE}; tg.publish "
        "writes a report without the analysis it came from: in Python, tg.place(result, models))"
    )


def _cmd_place(args) -> int:
    from .analysis import place

    folder = Path(args.picture)
    store_path, options = _picture_options(folder, args.store)
    path = Path(args.models)
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    try:
        models = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable .npy of models ({' '.join(str(exc).split())})") from None
    _, res = _analyse(store_path, options)
    name = args.name or path.stem
    try:
        out = place(res, models, name=name)
    except ValueError as exc:
        raise CLIError(f"{path}: {exc}") from None
    from .report import write_report

    line = out.pop("line")
    dest = folder / f"placed-{name}.json"
    dest.write_text(strict_dumps(out, indent=2))
    page = write_report(
        res,
        folder,
        title=f"{folder.name}, with {name} placed",
        settings={"placed": f"{path} ({len(out['points'])} models)", "note": "analysed again without intervals"},
        placed=[line],
        name=f"placed-{name}.html",
    )
    print(
        f"{name}: {len(out['points'])} models placed in {folder} (grid {options.get('grid')}); progress and "
        "distance to each group's mean trajectory at that progress, in tube radii (the mean distance of the "
        "group's own seeds, so about 1 is typical of a seed of that group):"
    )
    for i, p in enumerate(out["points"]):
        tubes = ", ".join(f"{g} {'-' if v is None else f'{v:.2f}'}" for g, v in p["tube_radii"].items())
        print(f"  {i:>3}: progress {p['progress']:.3f}; {tubes}")
    print(
        "(-: the model's progress lies outside the progress every seed of that group reached, so there is no tube "
        "to measure against; distances are taken at the grid value nearest the model's progress)"
    )
    print(f"wrote {dest} and {page} (the picture with the placed models drawn)")
    return 0


def _selection(text: str) -> dict:
    where = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"a selection is FIELD=VALUE[,FIELD=VALUE...], got {text!r}")
        key, value = key.strip(), value.strip()
        where[key] = int(value) if key == "seed" and value.lstrip("-").isdigit() else value
    return where


#: fields a store selects on directly; any other FIELD=VALUE is a recorded extra or config field (``lr=0.1``)
_STORE_FIELDS = {"task", "method", "seed", "architecture", "eval_set", "name"}


def _selected(store, flag: str, text: str, where_from) -> list:
    """The trajectories (two or more checkpoints) of a FIELD=VALUE[,...] selection: store fields, recorded
    extra fields and config fields, each read as ``taskgeom analyse --group-by`` reads it (:func:`group_key`)."""
    from .analysis import group_key

    where = _selection(text)
    everyone = [t for t in store.select() if len(t) > 1]
    for k in where:
        if k not in _STORE_FIELDS and all(group_key(t, k) == "<none>" for t in everyone):
            import difflib

            known = sorted(_STORE_FIELDS | {f for t in everyone for f in (*(t.config or {}), *t.extra)})
            close = difflib.get_close_matches(k, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"{flag}: no trajectory records {k!r}; {hint}fields: {', '.join(known[:20])}")
    trajs = [t for t in everyone if all(_same(group_key(t, k), str(v)) for k, v in where.items())]
    if not trajs:
        values = {k: sorted({group_key(t, k) for t in everyone}) for k in where}
        seen = "; ".join(
            f"{k}: {', '.join(map(str, v[:12]))}{' ...' if len(v) > 12 else ''}" for k, v in values.items()
        )
        raise CLIError(f"{flag} {text}: no trajectory with at least two checkpoints in {where_from} (recorded {seen})")
    return trajs


def _same(recorded: str, given: str) -> bool:
    """A recorded value equals the one given, as text or as numbers (``lr=1e-3`` matches a recorded 0.001)."""
    if recorded == given:
        return True
    try:
        return float(recorded) == float(given)
    except ValueError:
        return False


def _cmd_compare(args) -> int:
    from .comparison import compare

    store = _open_store(args.store)
    groups = [_selected(store, flag, text, args.store) for flag, text in (("--a", args.a), ("--b", args.b))]
    try:
        res = compare(*groups, grid=args.grid, n_boot=args.n_boot, n_perm=args.n_perm, seed=args.seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    iv = res.mean_interval
    bracket = f" [{iv['low']:.3f}, {iv['high']:.3f}; {100 * res.above_estimate:.0f}% of replicates above]" if iv else ""
    print(
        f"{args.a} ({res.seeds[0]} seeds) against {args.b} ({res.seeds[1]} seeds), over progress "
        f"{res.grid[0]:.3f}-{res.grid[-1]:.3f}: mean normalised distance {res.mean:.3f}{bracket}; "
        f"permutation test of exchangeable groups p = {res.p_value:.3g} "
        f"({'all' if res.exhaustive else 'random'} {res.permutations} splits of the seeds)"
    )
    if args.out:
        from .report import write_comparison

        Path(args.out).write_text(strict_dumps({"a": args.a, "b": args.b, **res.to_json()}, indent=2))
        page = write_comparison(res, Path(args.out).with_suffix(".html"), args.a, args.b)
        print(f"wrote {args.out} and {page} (the curve drawn)")
    return 0


def configure_analyse(p) -> None:
    """``taskgeom analyse``'s options (the parser itself comes from :mod:`taskgeom.cli`)."""
    p.description = (
        "Analyse every trajectory of a store (taskgeom's own, a merged sweep, imported .h5 files, "
        "one written by taskgeom.Recorder): progress, re-indexed trajectories, InPCA, tubes, normalised "
        "distances, with bootstrap intervals; writes the main job's report.html and results.json."
    )
    p.add_argument("store", help="a PredictionStore folder")
    p.add_argument("--out", default="taskgeom-analysis", help="output folder (default: %(default)s)")
    p.add_argument(
        "--group-by",
        default="task",
        help="what makes a family: task, method, architecture, seed, a recorded extra field, or a config field "
        "(nested ones dotted: a.b) such as lr (default: %(default)s)",
    )
    p.add_argument("--groups", nargs="+", default=None, help="the groups to keep, in this order (default: all)")
    p.add_argument(
        "--reference", default=None, help="the group distances are measured to (default: 'all' or the first)"
    )
    p.add_argument("--method", default=None, help="only trajectories of this method (default: every method)")
    p.add_argument("--eval-set", default=None, help="the evaluation set (default: the store's only one)")
    p.add_argument("--grid", type=positive_int, default=50, help="progress values (default: %(default)s)")
    p.add_argument(
        "--n-boot", type=nonnegative_int, default=200, help="bootstrap replicates, 0 for none (default: %(default)s)"
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the bootstrap's seed (default: %(default)s)")
    p.set_defaults(fn=_cmd_analyse)


def configure_place(p) -> None:
    """``taskgeom place``'s options."""
    p.add_argument("picture", help="a folder written by taskgeom analyse or taskgeom picture")
    p.add_argument("models", help=".npy of (M, N, C) (or (N, C)) probabilities on the picture's evaluation set")
    p.add_argument("--name", default=None, help="what to call them (default: the file's name)")
    p.add_argument(
        "--store",
        default=None,
        help="the store the picture was analysed from, where it is now (default: where it was, or beside the "
        "folder as it was)",
    )
    p.set_defaults(fn=_cmd_place)


def configure_compare(p) -> None:
    """``taskgeom compare``'s options."""
    p.add_argument("store", help="a PredictionStore folder")
    p.add_argument(
        "--a",
        required=True,
        help="the first group: FIELD=VALUE[,FIELD=VALUE] (task, method, seed, ...) (no default: required)",
    )
    p.add_argument("--b", required=True, help="the second group, as --a (no default: required)")
    p.add_argument("--grid", type=positive_int, default=50, help="progress values compared (default: %(default)s)")
    p.add_argument("--n-boot", type=nonnegative_int, default=200, help="bootstrap replicates (default: %(default)s)")
    p.add_argument(
        "--n-perm", type=nonnegative_int, default=1000, help="most seed splits counted (default: %(default)s)"
    )
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the random draws' seed (default: %(default)s)")
    p.add_argument(
        "--out",
        default=None,
        help="also write the result as JSON here, and its figure beside it as .html (default: none, printed only)",
    )
    p.set_defaults(fn=_cmd_compare)
