"""The ``taskgeom`` command line.

Subcommands: ``info`` (what was built), ``distances`` (pairwise divergence matrix of stored models),
``progress`` (progress of stored models on a task), ``inpca`` (embedding and explained stress of a
distance matrix), ``train`` (record training trajectories into a store), ``picture`` (the main job:
see ``taskgeom picture --help``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import divergences


def _load(path: str) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"taskgeom: {path}: no such file")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise SystemExit(f"taskgeom: {path}: not a readable .npy array ({exc})") from exc


def _cmd_info(args) -> int:
    import taskgeom as tg

    print(json.dumps(tg.build_info(), indent=2))
    return 0


def _cmd_distances(args) -> int:
    import taskgeom as tg

    models = _load(args.models)
    others = _load(args.others) if args.others else None
    t0 = time.perf_counter()
    D = tg.pairwise_distances(models, others, divergence=args.divergence, backend=args.backend, chunk=args.chunk)
    dt = time.perf_counter() - t0
    np.save(args.out, D)
    print(f"{args.divergence} matrix {D.shape} of {models.shape} models in {dt:.3f} s -> {args.out}")
    return 0


def _cmd_progress(args) -> int:
    import taskgeom as tg

    t = tg.progress(_load(args.models), np.asarray(_load(args.labels)), backend=args.backend)
    t = np.atleast_1d(t)
    if args.out:
        np.save(args.out, t)
    for i, v in enumerate(t):
        print(f"model {i}: progress {v:.6f}")
    return 0


def _cmd_inpca(args) -> int:
    import taskgeom as tg

    emb = tg.inpca(np.asarray(_load(args.distances)), k=args.k)
    if args.out:
        np.save(args.out, emb.coords)
    chi = emb.explained_stress()
    for k in range(len(chi)):
        sign = "time-like" if emb.signature[k] < 0 else "space-like"
        print(f"dim {k + 1}: eigenvalue {emb.eigenvalues[k]: .6g} ({sign}), explained stress {100 * chi[k]:.2f}%")
    return 0


def _cmd_beton(args) -> int:
    from .data.beton import write_beton

    out = write_beton(args.folder, args.out, split=args.split, max_resolution=args.max_resolution,
                      jpeg_quality=args.jpeg_quality, write_mode=args.write_mode, num_workers=args.workers)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {out.name}.classes.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="taskgeom", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="backends compiled into this install")
    p.set_defaults(fn=_cmd_info)

    p = sub.add_parser("distances", help="pairwise divergence matrix of models stored as .npy (m, N, C)")
    p.add_argument("models")
    p.add_argument("--others", help="second set (m', N, C) for a cross matrix")
    p.add_argument("--divergence", default="bhattacharyya", choices=divergences.names(),
                   help="; ".join(f"{d.name}: {d.doc}" for d in divergences.REGISTRY.values()) + " (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "torch"])
    p.add_argument("--chunk", type=int, default=None, help="samples per streamed chunk")
    p.add_argument("-o", "--out", default="distances.npy")
    p.set_defaults(fn=_cmd_distances)

    p = sub.add_parser("progress", help="progress (eq. 4) of models (.npy (m, N, C)) on a task's labels (.npy (N,))")
    p.add_argument("models")
    p.add_argument("labels")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "torch"])
    p.add_argument("-o", "--out")
    p.set_defaults(fn=_cmd_progress)

    p = sub.add_parser("inpca", help="InPCA embedding and explained stress of a distance matrix (.npy)")
    p.add_argument("distances")
    p.add_argument("-k", type=int, default=3)
    p.add_argument("-o", "--out")
    p.set_defaults(fn=_cmd_inpca)

    p = sub.add_parser("beton", help="write an ImageFolder directory as an FFCV .beton (needs the ffcv extra)")
    p.add_argument("folder", help="directory of <class>/<image> (or <split>/<class>/<image>)")
    p.add_argument("out", help="the .beton file to write")
    p.add_argument("--split", help="e.g. train or val, for <split>/<class>/<image> layouts")
    p.add_argument("--max-resolution", type=int, default=256)
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--write-mode", default="smart", choices=["smart", "jpg", "raw"])
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(fn=_cmd_beton)

    from . import picture
    from .train import cli as train_cli

    picture.add_parser(sub)
    train_cli.add_parser(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (ValueError, TypeError, RuntimeError, FileNotFoundError, ImportError) as exc:
        print(f"taskgeom {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
