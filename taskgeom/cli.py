"""The ``taskgeom`` command line.

Subcommands: ``info`` (what was built), ``distances`` (pairwise divergence matrix of stored models),
``progress`` (progress of stored models on a task), ``analyse`` / ``place`` / ``compare`` (any store's
picture, new models placed in it, two groups compared: :mod:`taskgeom.commands`), ``inpca`` (embedding and explained stress of a
distance matrix), ``export`` (a store's predictions and labels as ``.npy`` files), ``train`` (record training trajectories into a store), ``picture`` (the main job:
see ``taskgeom picture --help``), ``store verify`` (check a store's checkpoints against their checksums).

Every error is one line on stderr, never a traceback (``--debug``, anywhere on the command line, or
``TASKGEOM_TRACEBACK=1`` shows one). Exit statuses: 0 done; 1 the run failed on its input or environment
(the line names the file, model or sample; ``store verify`` also exits 1 when it finds a problem); 2 a usage
error (argparse's, or options that contradict each other); 70 a bug in taskgeom (please report it); 130
interrupted (Ctrl-C, after one line).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

from . import divergences
from ._cliutil import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_USAGE,
    CLIError,
    OneLineParser,
    UsageError,
    _int,
    nonnegative_float,
    nonnegative_int,
    one_line,
    positive_float,
    positive_int,
)
from ._fileio import fsync_dir

__all__ = ["main", "build_parser", "CLIError", "UsageError"]


def _load(path: str, what: str = "array", ndim: tuple[int, ...] | None = None, shape_hint: str = "") -> np.ndarray:
    """A ``.npy`` file as a (read-only) memory map, with one-line errors for anything else."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{path}: no such file")
    if p.is_dir():
        raise CLIError(f"{path}: is a directory, expected a .npy file")
    if p.stat().st_size == 0:
        raise CLIError(f"{path}: empty file, expected a .npy {what}")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and magic[:2] != b"PK":
        raise CLIError(f"{path}: not a readable .npy {what} (no NumPy header: not a .npy file)")
    try:
        a = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        detail = one_line(exc)
        if "allow_pickle" in detail:  # (never loaded: a data file must not run code)
            detail = "it holds Python objects, which taskgeom does not load"
        raise CLIError(f"{path}: not a readable .npy {what} ({detail})") from exc
    if not isinstance(a, np.ndarray):
        raise CLIError(f"{path}: an .npz archive, expected a single .npy {what}")
    if ndim is not None and a.ndim not in ndim:
        raise CLIError(f"{path}: {a.ndim}-d array of shape {a.shape}, expected {shape_hint or what}")
    if a.size == 0:
        raise CLIError(f"{path}: empty {what} of shape {a.shape}")
    return a


_MODELS_HINT = (
    "(m, N, C): m models' probabilities on N samples of C classes; a single model (N, C) "
    "must be given as (1, N, C), e.g. np.save(path, p[None])"
)


def _cmd_info(args) -> int:
    import taskgeom as tg

    print(json.dumps(tg.build_info(), indent=2))
    return 0


def _cmd_distances(args) -> int:
    import taskgeom as tg

    src = Path(args.models)
    if src.is_dir() and not (src / "manifest.sqlite").exists():
        raise CLIError(f"{src}: is a directory, expected a .npy (m, N, C) file or a store folder (manifest.sqlite)")
    out_of_core = src.is_dir() or args.engine != "local" or not str(args.out).endswith(".npy")
    if out_of_core:
        return _distances_out_of_core(args)
    models = _load(args.models, "models", (3,), _MODELS_HINT)
    others = _load(args.others, "models", (3,), _MODELS_HINT) if args.others else None
    t0 = time.perf_counter()
    m, n, c = models.shape
    long = others is None and m > 1024 and m * m * n * c > 2e10  # in tiles of models, with a progress bar
    opts = dict(divergence=args.divergence, backend=args.backend, chunk=args.chunk)
    D = tg.pairwise_distances(models, others, tile=512 if long else None, **opts)
    dt = time.perf_counter() - t0
    np.save(args.out, D)
    print(f"{args.divergence} matrix {D.shape} of {(m, n, c)} models in {dt:.3f} s -> {args.out}")
    return 0


def _distances_out_of_core(args) -> int:
    from . import engines, tiled
    from .modelsets import open_models

    if args.others:
        raise UsageError("--others needs an in-memory matrix: give --out a .npy file name")
    if args.chunk is not None:
        raise UsageError("--chunk applies to an in-memory matrix (--out FILE.npy)")
    filters = {}
    for item in args.select or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--select {item!r}: expected FIELD=VALUE, e.g. task=0-4")
        filters.setdefault(key, []).append(int(value) if key == "seed" and value.lstrip("-").isdigit() else value)
    if filters and not Path(args.models).is_dir():
        raise UsageError("--select applies to a store folder")
    ms = open_models(args.models, **filters)
    t0 = time.perf_counter()
    dm = tiled.open_for(args.out, ms, args.divergence, None, int(args.budget_mb * (1 << 20)))
    todo = len(dm.tasks())
    engines.run_tiles(
        dm,
        ms,
        args.divergence,
        engine=args.engine,
        address=args.address,
        backend=args.backend,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        progress_bar=sys.stderr.isatty(),
    )
    print(
        f"{args.divergence} matrix ({dm.m}, {dm.m}) of {ms.m} models ({ms.n} samples x {ms.c} classes): "
        f"{todo} of {(dm.m + dm.tile - 1) // dm.tile * ((dm.m + dm.tile - 1) // dm.tile + 1) // 2} tiles of "
        f"{dm.tile} computed in {time.perf_counter() - t0:.1f} s ({args.engine}) -> {dm.file}"
    )
    return 0


def _cmd_progress(args) -> int:
    import taskgeom as tg

    models = _load(args.models, "models", (2, 3), "(m, N, C) models (or one model (N, C))")
    labels = np.asarray(_load(args.labels, "labels", (1,), "(N,) integer labels"))
    if labels.dtype.kind not in "iu":
        raise CLIError(f"{args.labels}: labels of dtype {labels.dtype}, expected integers")
    t = tg.progress(models, labels, backend=args.backend)
    t = np.atleast_1d(t)
    if args.out:
        np.save(args.out, t)
    for i, v in enumerate(t):
        print(f"model {i}: progress {v:.6f}")
    return 0


def _cmd_inpca(args) -> int:
    import taskgeom as tg

    if args.out and Path(args.out).suffix not in (".npz", ".npy"):
        raise UsageError(f"-o {args.out}: name a .npz (coordinates, eigenvalues, signature) or a .npy (coordinates)")
    D = np.asarray(_load(args.distances, "distance matrix", (2,), "a square (m, m) distance matrix"))
    est = tg.InPCA(n_components=args.k)
    coords = est.fit_transform(D)
    chi = est.explained_stress()
    if args.out:
        # written to exactly the given name (np.save / np.savez would append a suffix to other names)
        with open(args.out, "wb") as f:
            if args.out.endswith(".npz"):
                np.savez(f, coords=coords, eigenvalues=est.eigenvalues_, signature=est.signature_, explained_stress=chi)
            else:
                np.save(f, coords)
    for k in range(len(chi)):
        sign = "time-like" if est.signature_[k] < 0 else "space-like"
        print(f"dim {k + 1}: eigenvalue {est.eigenvalues_[k]: .6g} ({sign}), explained stress {100 * chi[k]:.2f}%")
    if args.out:
        what = "coordinates, eigenvalues, signature, explained_stress" if args.out.endswith(".npz") else "coordinates"
        print(f"{what} -> {args.out}")
    return 0


def _preallocate(fd: int, start: int, size: int) -> None:
    """Reserve the bytes [start, size) of a file on disk, so that a full disk is an ENOSPC error here, not a
    bus error (SIGBUS) when a memory map's page is first written: ``posix_fallocate``, or where the file
    system cannot, explicit zeros."""
    if size <= start:
        return
    try:
        os.posix_fallocate(fd, start, size - start)
        return
    except AttributeError:
        pass  # no posix_fallocate (macOS): write the zeros
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    zeros = bytes(1 << 20)
    os.lseek(fd, start, os.SEEK_SET)
    left = size - start
    while left:
        left -= os.write(fd, zeros[: min(left, len(zeros))])


def _tmp_name(path: Path) -> Path:
    """A temporary name beside ``path`` (same folder, so that ``os.replace`` is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _publish(tmp: Path, path: Path) -> None:
    """fsync ``tmp`` and rename it over ``path`` (then fsync the folder): ``path`` appears whole or not at all."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _write_failed(path: Path, exc: OSError) -> CLIError:
    what = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else one_line(exc)
    return CLIError(f"{path}: cannot write ({what}); nothing was written")


def _cmd_export(args) -> int:
    from .store import PredictionStore

    out = _export_targets(args.out)
    where = {
        k: v
        for k, v in {"task": args.task, "method": args.method, "seed": args.seed, "eval_set": args.eval_set}.items()
        if v
    }
    # Both files are written under temporary names beside their targets, their bytes reserved on disk first
    # (a full disk is an error, never a bus error in the memory map), and renamed into place only when both
    # are whole: a failed or interrupted export leaves nothing that looks complete.
    tmps = [_tmp_name(p) for p in out]
    try:
        with PredictionStore(args.store, readonly=True) as store:
            trajs = [t for t in store.select(**where) if len(t)]
            if not trajs:
                raise CLIError(f"{args.store}: no trajectory with checkpoints matches {where or 'any'}")
            sets = sorted({t.eval_set for t in trajs})
            if len(sets) > 1:
                raise UsageError(
                    f"{args.store}: trajectories on several evaluation sets {sets}; choose one with --eval-set"
                )
            m = _export_predictions(args, trajs, tmps[0], out[0])
            labels = np.asarray(store.eval_set(sets[0]).labels)
        try:
            with open(tmps[1], "wb") as f:
                np.save(f, labels)
        except OSError as exc:
            raise _write_failed(out[1], exc) from exc
        for tmp, path in zip(tmps, out):
            try:
                _publish(tmp, path)
            except OSError as exc:
                raise _write_failed(path, exc) from exc
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
    which = "last checkpoint of each" if args.checkpoint == "last" else "every checkpoint of"
    print(f"{m} models ({which} {len(trajs)} trajectories on {sets[0]}) -> {args.out[0]}; labels -> {args.out[1]}")
    return 0


def _export_targets(names) -> list:
    """The two output files of ``export -o``, checked: two different files in existing folders."""
    if len(names) != 2:
        raise UsageError(f"-o takes two files, PREDS.npy LABELS.npy; got {len(names)}")
    out = [Path(p) for p in names]
    if out[0].resolve() == out[1].resolve():
        raise UsageError(f"-o {names[0]} {names[1]}: the predictions and labels need two different files")
    for p in out:
        if p.is_dir():
            raise CLIError(f"{p}: is a directory, expected a .npy file name")
        if not p.parent.is_dir():
            raise CLIError(f"{p}: no such folder {str(p.parent)!r}")
    return out


def _export_predictions(args, trajs, tmp: Path, target: Path) -> int:
    """Write the selected checkpoints of ``trajs`` into the .npy ``tmp`` (space reserved first); returns the
    number of models written."""
    from tqdm.auto import tqdm

    first = trajs[0].probs
    m = sum(1 if args.checkpoint == "last" else len(t) for t in trajs)
    try:
        preds = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=(m,) + first.shape[1:])
        fd = os.open(tmp, os.O_RDWR)
        try:
            _preallocate(fd, int(preds.offset), int(preds.offset) + preds.nbytes)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_failed(target, exc) from exc
    i = 0
    for t in tqdm(trajs, desc="exporting trajectories", unit="traj", disable=None):
        p = t.probs[-1:] if args.checkpoint == "last" else t.probs
        if p.shape[1:] != preds.shape[1:]:
            raise CLIError(
                f"{args.store}: trajectory {t.name} has predictions of shape {p.shape[1:]}, "
                f"the others {preds.shape[1:]}; select one kind with --task/--method/--seed"
            )
        preds[i : i + len(p)] = p
        i += len(p)
    preds.flush()
    del preds
    return m


def _cmd_beton(args) -> int:
    from .data.beton import write_beton

    out = write_beton(
        args.folder,
        args.out,
        split=args.split,
        max_resolution=args.max_resolution,
        jpeg_quality=args.jpeg_quality,
        write_mode=args.write_mode,
        num_workers=args.workers,
    )
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {out.name}.classes.json")
    return 0


def _cmd_store_verify(args) -> int:
    from .store import PredictionStore

    bad = 0
    for path in args.paths:
        with PredictionStore(path, readonly=True) as store:
            problems = store.verify()
            n_traj = len(store.select())
            for p in problems:
                print(f"taskgeom store verify: {path}: {p}", file=sys.stderr)
            bad += len(problems)
            if not problems:
                extra = f", {store.unchecked} written before checksums (unchecked)" if store.unchecked else ""
                print(f"{path}: ok ({n_traj} trajectories, {store.checked} checkpoints match their checksums{extra})")
    return EXIT_FAILED if bad else 0


def _cmd_store_merge(args) -> int:
    from .shards import merge_stores

    res = merge_stores(args.shards, args.out)
    print(
        f"merged {res['shards']} shards into {args.out}: {res['trajectories']} trajectories, "
        f"{res['checkpoints_added']} checkpoints added"
    )
    return 0


def engines_names():
    from .engines import ENGINES

    return list(ENGINES)


_BACKEND_HELP = (
    "auto (CUDA kernels for CUDA tensors, C++ otherwise), cpu, cuda, or torch (the float64 reference) "
    "(default: %(default)s)"
)


def _quality(text: str) -> int:
    v = _int(text)
    if not 1 <= v <= 100:
        raise argparse.ArgumentTypeError(f"must be in 1-100, got {v}")
    return v


_DEBUG_HELP = "on an error, show its traceback too (default: off; also TASKGEOM_TRACEBACK=1)"


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on every subcommand's parser too, so that it may stand anywhere on the line (there it is
    set only when given: a subcommand's default never hides the top level's)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                if not any("--debug" in a.option_strings for a in sp._actions):
                    sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
                _add_debug(sp)


def _megabytes(text: str) -> float:
    """A positive number of MiB that is at least one byte (``--budget-mb 1e-9`` would be 0 bytes)."""
    v = positive_float(text)
    if v * (1 << 20) < 1:
        raise argparse.ArgumentTypeError(f"must be at least one byte (1 / 2**20 MiB), got {text!r}")
    return v


def _configure_info(p: argparse.ArgumentParser) -> None:
    p.set_defaults(fn=_cmd_info)


def _configure_distances(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "models",
        help="a .npy (m, N, C) of m models' probabilities on N samples of C classes, or a "
        "store folder (every checkpoint of the selected trajectories)",
    )
    p.add_argument("--others", help="second set (m', N, C) for a cross matrix (default: none, models against models)")
    p.add_argument(
        "--divergence",
        default="bhattacharyya",
        choices=divergences.names(),
        help="; ".join(f"{d.name}: {d.doc}" for d in divergences.REGISTRY.values()) + " (default: %(default)s)",
    )
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "torch"], help=_BACKEND_HELP)
    p.add_argument(
        "--chunk", type=positive_int, default=None, help="samples per streamed chunk (default: from the cache size)"
    )
    p.add_argument(
        "-o",
        "--out",
        default="distances.npy",
        help="a .npy file: the matrix computed in memory; any other path: a folder the matrix is "
        "computed into tile by tile, out of core (resumable; added models add only their rows and "
        "columns; np.load(PATH/D.npy, mmap_mode='r') reads it) (default: %(default)s)",
    )
    p.add_argument(
        "--select",
        action="append",
        metavar="FIELD=VALUE",
        help="with a store folder: only trajectories with this task, method, seed, architecture or "
        "eval_set (repeatable) (default: every trajectory)",
    )
    p.add_argument(
        "--engine",
        default="local",
        choices=engines_names(),
        help="out of core: compute tiles in this process (local) or as Ray tasks (ray, the ray extra) "
        "(default: %(default)s)",
    )
    p.add_argument("--address", default=None, help="ray: the cluster's address (default: start a local Ray)")
    p.add_argument(
        "--num-cpus", type=nonnegative_float, default=1, help="ray: CPUs per tile task (default: %(default)s)"
    )
    p.add_argument(
        "--num-gpus",
        type=nonnegative_float,
        default=0,
        help="ray: GPUs per tile task, fractions allowed (default: %(default)s)",
    )
    p.add_argument(
        "--budget-mb",
        type=_megabytes,
        default=1024,
        help="out of core: memory for model blocks and one tile, which sets the tile size (default: %(default)s)",
    )
    p.set_defaults(fn=_cmd_distances)


def _configure_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", help="a .npy (m, N, C) of models (or one model (N, C))")
    p.add_argument("labels", help="a .npy (N,) of integer labels")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "torch"], help=_BACKEND_HELP)
    p.add_argument("-o", "--out", help="also save the (m,) progress values as .npy (default: print only)")
    p.set_defaults(fn=_cmd_progress)


def _configure_inpca(p: argparse.ArgumentParser) -> None:
    p.add_argument("distances", help="a .npy (m, m) divergence matrix (symmetric, zero diagonal)")
    p.add_argument("-k", type=positive_int, default=3, help="dimensions to keep (default: %(default)s)")
    p.add_argument(
        "-o",
        "--out",
        help="a .npz gets coords, eigenvalues, signature and explained_stress; a .npy the (m, k) coordinates "
        "(default: print only)",
    )
    p.set_defaults(fn=_cmd_inpca)


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", metavar="STORE", help="PredictionStore folder")
    p.add_argument("--task", nargs="+", help="only these tasks (default: all)")
    p.add_argument("--method", nargs="+", help="only these methods (default: all)")
    p.add_argument("--seed", type=nonnegative_int, nargs="+", help="only these seeds (default: all)")
    p.add_argument("--eval-set", help="the evaluation set (default: the only one the selected runs use)")
    p.add_argument(
        "--checkpoint",
        choices=["all", "last"],
        default="all",
        help="every checkpoint of each trajectory, in order, or only the last (default: %(default)s)",
    )
    p.add_argument(
        "-o",
        "--out",
        nargs=2,
        metavar=("PREDS", "LABELS"),
        default=["preds.npy", "labels.npy"],
        help="(m, N, C) predictions and (N,) labels (default: preds.npy labels.npy)",
    )
    p.set_defaults(fn=_cmd_export)


def _configure_beton(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="directory of <class>/<image> (or <split>/<class>/<image>)")
    p.add_argument(
        "out",
        help="the .beton file to write (for taskgeom train --data beton: DIR/train.beton from --split train and "
        "DIR/val.beton from --split val)",
    )
    p.add_argument("--split", help="e.g. train or val, for <split>/<class>/<image> layouts (default: <class>/<image>)")
    p.add_argument(
        "--max-resolution", type=positive_int, default=256, help="longest side of stored images (default: %(default)s)"
    )
    p.add_argument("--jpeg-quality", type=_quality, default=90, help="JPEG quality, 1-100 (default: %(default)s)")
    p.add_argument(
        "--write-mode",
        default="smart",
        choices=["smart", "jpg", "raw"],
        help="how images are stored: smart (JPEG for large ones), jpg or raw (default: %(default)s)",
    )
    p.add_argument(
        "--workers", type=positive_int, default=None, help="writer processes (default: the cores, at most 8)"
    )
    p.set_defaults(fn=_cmd_beton)


def _configure_store(p: argparse.ArgumentParser) -> None:
    store_sub = p.add_subparsers(dest="store_command", required=True)
    v = store_sub.add_parser(
        "verify",
        help="check every checkpoint of a store against its checksum (exit 0 when clean, 1 with one line per problem)",
    )
    v.add_argument("paths", nargs="+", metavar="PATH", help="store directory")
    v.set_defaults(fn=_cmd_store_verify)
    mg = store_sub.add_parser(
        "merge", help="merge store shards into one store (verified, idempotent; a new store appears whole)"
    )
    mg.add_argument("shards", nargs="+", metavar="SHARD", help="store folders to merge")
    mg.add_argument("-o", "--out", required=True, help="the merged store, created when missing (no default: required)")
    mg.set_defaults(fn=_cmd_store_merge)


#: Every subcommand: its one-line help and the function that adds its options to its parser. A command's
#: options (and the modules they need: torch, the training code) are built only when that command runs, so
#: that ``taskgeom --help`` answers at once.
COMMANDS = {
    "info": ("backends compiled into this install", "taskgeom.cli:_configure_info"),
    "distances": (
        "pairwise divergence matrix of models (.npy (m, N, C) or a store), in memory or out of core",
        "taskgeom.cli:_configure_distances",
    ),
    "progress": (
        "progress (eq. 4) of models (.npy (m, N, C)) on a task's labels (.npy (N,))",
        "taskgeom.cli:_configure_progress",
    ),
    "inpca": ("InPCA embedding and explained stress of a distance matrix (.npy)", "taskgeom.cli:_configure_inpca"),
    "export": (
        "a store's predictions and labels as .npy files (the inputs of distances, progress and the Python API)",
        "taskgeom.cli:_configure_export",
    ),
    "beton": (
        "write an ImageFolder directory as an FFCV .beton (needs the ffcv extra)",
        "taskgeom.cli:_configure_beton",
    ),
    "store": ("store maintenance: verify PATH (checksums), merge SHARDS -o STORE", "taskgeom.cli:_configure_store"),
    "picture": (
        "the main job: trajectories of several tasks, their geometry, a report",
        "taskgeom.picture:configure_parser",
    ),
    "analyse": (
        "the main job's report and results.json for any store, grouped by any recorded field",
        "taskgeom.commands:configure_analyse",
    ),
    "place": (
        "put new models (.npy (M, N, C)) into an analysed picture: coordinates, progress, tube distances",
        "taskgeom.commands:configure_place",
    ),
    "compare": (
        "two groups of a store's trajectories: normalised distance with intervals, permutation test",
        "taskgeom.commands:configure_compare",
    ),
    "train": ("train runs and record their imprinted predictions in a store", "taskgeom.train.cli:configure_train"),
    "sweep": (
        "a grid of training runs, locally or on Ray, merged into one store",
        "taskgeom.train.cli:configure_sweep",
    ),
}


def _command_in(argv) -> str | None:
    """The subcommand an argument list names (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The command line's parser: every subcommand in full, or with ``argv``, only the one it names (the
    others listed by name and help)."""
    from importlib import import_module

    from . import __version__

    wanted = None if argv is None else _command_in(argv)
    ap = OneLineParser(prog="taskgeom", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--version",
        action="version",
        version=f"taskgeom {__version__}",
        help="print the version and exit (default: off)",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (help_, where) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if argv is None or name == wanted:
            module, function = where.split(":")
            getattr(import_module(module), function)(p)
    ap.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    _add_debug(ap)
    return ap


def _input_errors() -> tuple:
    """Exceptions that mean the run failed on its input or environment (one line naming the file, model or
    sample, exit status 1): bad files (unreadable, truncated, not YAML/JSON/SQLite/a state dict), bad values in
    them, missing modules or devices, no memory. Anything else is a bug (one line, exit status 70)."""
    errors = [
        CLIError,
        ValueError,  # json.JSONDecodeError among them
        TypeError,
        RuntimeError,
        OSError,
        ImportError,
        KeyError,
        IndexError,
        EOFError,
        sqlite3.Error,  # sqlite3.DatabaseError: a file that is not a store's manifest
        pickle.UnpicklingError,
        MemoryError,
    ]
    try:
        import yaml

        errors.append(yaml.YAMLError)
    except ImportError:
        pass
    return tuple(errors)


def _debug(argv) -> bool:
    return bool(os.environ.get("TASKGEOM_TRACEBACK")) or "--debug" in argv


def main(argv=None) -> int:
    """Run the command line; returns the exit status (argparse's usage errors exit 2 through SystemExit)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    state = {"command": "taskgeom", "debug": _debug(argv)}

    def run() -> int:
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        state["debug"] = state["debug"] or bool(getattr(args, "debug", False))
        state["command"] = f"taskgeom {args.command}" + (
            f" {args.store_command}" if getattr(args, "store_command", None) else ""
        )
        return int(args.fn(args) or 0)

    return guarded(run, state)


def guarded(run, state: dict) -> int:
    """``run()``'s exit status under the command line's error policy: an error is one line on stderr
    prefixed with ``state["command"]`` (its traceback only where ``state["debug"]``), with the exit statuses
    of the module docstring. The command line and the experiment scripts (:func:`run_script`) use it."""
    try:
        return run()
    except KeyboardInterrupt as exc:
        if state["debug"]:
            raise
        # what to do next: the interrupt's own words where it has them (a script that knows), else the state's
        again = str(exc) if str(exc) else state.get("interrupted", "run the same command again to resume")
        print(f"{state['command']}: interrupted; {again}", file=sys.stderr)
        return 130
    except UsageError as exc:
        if state["debug"]:
            raise
        command = state["command"]
        print(f"{command}: error: {one_line(exc)} (see {command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except _input_errors() as exc:
        if state["debug"]:
            raise
        what = "out of memory: " if isinstance(exc, MemoryError) else ""
        print(f"{state['command']}: error: {what}{one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - never a traceback on the command line
        if state["debug"]:
            raise
        print(
            f"{state['command']}: internal error ({type(exc).__name__}: {one_line(exc)}); please report it, "
            f"{state.get('traceback', '--debug')} shows the traceback",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def run_script(main, name: str, interrupted: str = "run the same command again to resume") -> None:
    """Run a script's ``main()`` (an experiment's) with the command line's error policy (:func:`guarded`) and
    exit: 0 done (whatever ``main`` returns but an int status), 2 a usage error (argparse's), and an error
    in one line naming ``name``: 1 on the input or environment, 70 a bug, 130 interrupted (with
    ``interrupted``, or the interrupt's own words, after it). ``SystemExit`` from ``main`` passes as it is;
    ``TASKGEOM_TRACEBACK=1`` shows the traceback."""
    state = {
        "command": name,
        "debug": bool(os.environ.get("TASKGEOM_TRACEBACK")),
        "traceback": "TASKGEOM_TRACEBACK=1",
        "interrupted": interrupted,
    }

    def run() -> int:
        status = main()
        return status if isinstance(status, int) and not isinstance(status, bool) else 0

    sys.exit(guarded(run, state))


if __name__ == "__main__":
    sys.exit(main())
