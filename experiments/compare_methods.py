"""Results 4, 5 and 7 at small scale: families of runs that differ in method and task, all imprinted
onto the ten-digit task, compared by progress, Riemann length (eq. 6), normalised distance to a
reference family (Remark 5) and an InPCA picture.

Presets:
  result4  supervised vs episodic prototypical 2-way and 5-way, on all digits (LayerNorm CNN)
  result5  supervised vs SimCLR, Barlow Twins and FixMatch (500 labelled), on all digits
  result7  SimCLR on 0-4, 5-9 and all digits vs supervised on 0-4 and all digits

    python experiments/compare_methods.py --preset result4 --out runs/result4     # about 40 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _family import add_seeds_argument

import taskgeom as tg
from taskgeom.store import PredictionStore
from taskgeom.train import TrainConfig, train

from _data import add_data_arguments, load

#: preset -> (reference family, {family: (task, TrainConfig overrides)})
PRESETS = {
    "result4": (
        "supervised",
        {
            "supervised": ("all", dict(method="supervised", norm="layer")),
            "protonet-2way": ("all", dict(method="protonet", norm="layer", way=2, shot=5, query=10)),
            "protonet-5way": ("all", dict(method="protonet", norm="layer", way=5, shot=5, query=10)),
        },
    ),
    "result5": (
        "supervised",
        {
            "supervised": ("all", dict(method="supervised")),
            "simclr": ("all", dict(method="simclr", lr=1e-3)),
            "barlow": ("all", dict(method="barlow", lr=1e-3)),
            "fixmatch": ("all", dict(method="fixmatch", labelled=500)),
        },
    ),
    "result7": (
        "simclr all",
        {
            "simclr all": ("all", dict(method="simclr", lr=1e-3)),
            "simclr 0-4": ("0-4", dict(method="simclr", lr=1e-3)),
            "simclr 5-9": ("5-9", dict(method="simclr", lr=1e-3)),
            "supervised 0-4": ("0-4", dict(method="supervised")),
            "supervised all": ("all", dict(method="supervised")),
        },
    ),
}


def shared_curve(probs_a, probs_b, progress, labels, points: int) -> dict:
    """Remark 5 between two families as a curve over the progress every run of both reaches (both
    re-indexed afresh on that shared range; never extrapolated): ``{"progress", "value"}``, empty lists
    where they share no progress."""
    try:
        grid = tg.trajectories.progress_grid(progress, points, shared=True)
    except ValueError:
        return {"progress": [], "value": []}
    fams = [np.stack([tg.reindex(p, labels, grid=grid) for p in ps]) for ps in (probs_a, probs_b)]
    return {"progress": grid.tolist(), "value": np.asarray(tg.normalized_distance(*fams)).tolist()}


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if "\n\n" in __doc__ else None,
    )
    ap.add_argument(
        "--preset", choices=sorted(PRESETS), default="result4", help="which comparison (default: %(default)s)"
    )
    ap.add_argument("--out", default=None, help="output folder (default: the preset's name)")
    add_seeds_argument(ap, 3, "of every family")
    ap.add_argument("--epochs", type=int, default=15, help="training epochs per run (default: %(default)s)")
    ap.add_argument(
        "--episodic-ratio",
        type=float,
        default=7.5,
        help="epochs of episodic (protonet) runs over --epochs: the paper trains them about 750 against 100 "
        "(default: %(default)s)",
    )
    ap.add_argument(
        "--grid", type=int, default=40, help="progress values of the re-indexed trajectories (default: %(default)s)"
    )
    ap.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu or cuda (default: %(default)s)"
    )
    add_data_arguments(ap)
    args = ap.parse_args()
    reference, families_cfg = PRESETS[args.preset]
    out = Path(args.out or args.preset)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte), class_names, tasks, eval_set, rename = load(args)
    store = PredictionStore(out / "store", create=True)
    store.add_eval_set(eval_set, yte, class_names=class_names)
    steps_per_epoch = int(np.ceil(len(ytr) / args.batch_size))
    runs = {}
    for name, (task, over) in families_cfg.items():
        over = {"lr": 0.1, "norm": "batch", **over}
        for seed in args.seeds:
            cfg = TrainConfig(
                arch=args.arch,
                batch_size=args.batch_size,
                # the paper's per-family epoch budgets: episodic learners train 7.5x longer (App. A)
                epochs=max(1, round(args.epochs * (args.episodic_ratio if over["method"] == "protonet" else 1))),
                checkpoints=20,
                seed=seed,
                device=args.device,
                episodes_per_epoch=steps_per_epoch,
                imprint_samples=min(args.imprint_samples, len(ytr)),
                imprint_head=args.imprint_head,
                **over,
            )
            runs.setdefault(name, []).append(
                train(
                    cfg,
                    tasks[rename(task)],
                    (xtr, ytr),
                    (xte, yte),
                    store,
                    eval_set,
                    f"{rename(task)}:{name}",
                    progress_bar=False,
                )
            )
    res = {"preset": args.preset, "reference": reference, "families": {}}
    families = {}
    probs = {name: [np.asarray(t.probs) for t in ts] for name, ts in runs.items()}
    progress = {name: [np.asarray(tg.progress(p, yte)) for p in ps] for name, ps in probs.items()}
    grid = tg.trajectories.progress_grid([p for ps in progress.values() for p in ps], args.grid)
    for name, ts in runs.items():
        # NaN outside the progress a run reaches: the embedding holds no clamped copies of first or last models
        families[name] = np.stack(
            [tg.reindex(p, yte, grid=grid, outside="nan").astype(np.float32) for p in probs[name]]
        )
        res["families"][name] = {
            "final_progress": [float(p[-1]) for p in progress[name]],
            "riemann_length": [tg.riemann_length(p) for p in probs[name]],
            # the paper's convention: 2 sum sqrt(d_B) over the recorded checkpoints, without refinement
            "riemann_length_paper_convention": [tg.riemann_length(p, refine=None) for p in probs[name]],
            "final_accuracy": [t.checkpoints[-1]["accuracy"] for t in ts],
        }
    ref_len = np.mean(res["families"][reference]["riemann_length"])
    ref_paper = np.mean(res["families"][reference]["riemann_length_paper_convention"])
    for f in res["families"].values():
        f["riemann_length_ratio_to_reference"] = float(np.mean(f["riemann_length"]) / ref_len)
        f["riemann_length_paper_convention_ratio"] = float(np.mean(f["riemann_length_paper_convention"]) / ref_paper)
    res["grid"] = grid.tolist()  # the embedding's grid: progress some run reaches (each run embedded where it does)
    res["normalized_distance_to_reference"] = {
        name: shared_curve(probs[name], probs[reference], progress[name] + progress[reference], yte, args.grid)
        for name in families
        if name != reference
    }
    (out / f"{args.preset}.json").write_text(json.dumps(res, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(families)
    allr = np.concatenate([families[n] for n in names])
    reached = np.isfinite(allr).all(axis=(2, 3))  # (runs, G): the grid values each run reached
    emb = tg.inpca(tg.pairwise_distances(allr[reached]), k=3)
    ends = np.concatenate([[0], np.cumsum(reached.sum(1))])
    fig = plt.figure(figsize=(13, 5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    k = 0
    for i, n in enumerate(names):
        for j in range(len(families[n])):
            ax.plot(*emb.coords[ends[k] : ends[k + 1]].T, color=f"C{i}", lw=1, alpha=0.6, label=n if j == 0 else None)
            k += 1
    ax.set_title(f"InPCA ({100 * emb.explained_stress(3):.1f}% explained stress in 3 dims)")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    for n, nd in res["normalized_distance_to_reference"].items():
        ax2.plot(nd["progress"], nd["value"], color=f"C{names.index(n)}", label=f"{n} vs {reference}")
    ax2.axhline(1.0, color="k", ls=":", lw=1)
    ax2.set(xlabel="progress", ylabel="distance / tube radii at that progress", yscale="log", title="Remark 5")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{args.preset}.png", dpi=110)
    for name, f in res["families"].items():
        print(
            f"{name:>16}: final progress {np.mean(f['final_progress']):.3f}, Riemann length "
            f"{np.mean(f['riemann_length']):.3f} ({f['riemann_length_ratio_to_reference']:.3f} x {reference}), "
            f"accuracy {np.mean(f['final_accuracy']):.3f}"
        )
    print(f"wrote {out / (args.preset + '.json')} and {out / (args.preset + '.png')}")


if __name__ == "__main__":
    main()
