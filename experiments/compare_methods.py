"""Results 4, 5 and 7 at small scale: families of runs that differ in method and task, all imprinted
onto the ten-digit task, compared by progress, Riemann length (eq. 6), normalised distance to a
reference family (Remark 5) and an InPCA picture.

Measured alike for every family: one imprinted head (--imprint-head), the same density of checkpoints per
training step (a dense geometric start, then every k steps, k set so that the longest run records about
--max-checkpoints), Riemann lengths at full, 1/2 and 1/3 of that density ("not converged" where halving it
changes a length by more than 5%), progress at initialisation and gained, and normalised distances to the
reference family with 95% bootstrap intervals over evaluation samples and seeds and a permutation test
(tg.compare); the embedding holds no clamped copies.

Presets:
  result4  supervised vs episodic prototypical 2-way and 5-way, on all digits (LayerNorm CNN, as App. A)
  result5  supervised vs SimCLR, Barlow Twins and FixMatch (5% labelled, class-balanced), on all digits
  result7  SimCLR on 0-4, 5-9 and all digits vs supervised on 0-4 and all digits

    python experiments/compare_methods.py --preset result4 --out runs/result4     # about 40 s on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from _family import add_seeds_argument, riemann_density, summary

import taskgeom as tg
from taskgeom.train import TrainConfig

from _data import add_data_arguments, job, load, scheduler, trained

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
            # 5% of the 1,168 training digits as in the paper, 6 of every class
            "fixmatch": ("all", dict(method="fixmatch", labelled=60, labelled_draw="balanced")),
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


#: the relative change of a Riemann length, halving the checkpoint density, below which it counts as converged
RIEMANN_TOL = 0.05


def epochs_of(args, method: str) -> int:
    """The paper's per-family epoch budgets: episodic learners train 7.5x longer (App. A)."""
    return max(1, round(args.epochs * (args.episodic_ratio if method == "protonet" else 1)))


def checkpoint_every(args, families_cfg: dict, steps_per_epoch: int) -> int:
    """Steps between checkpoints, the same for every family: the longest run's steps over --max-checkpoints."""
    longest = max(epochs_of(args, over["method"]) for _, over in families_cfg.values()) * steps_per_epoch
    return max(1, math.ceil(longest / args.max_checkpoints))


def family_summary(ts, probs, progress) -> dict:
    """One family's numbers: progress at initialisation, final and gained, accuracy, Riemann lengths against the
    checkpoint density (and the paper's convention, 2 sum sqrt d_B over the recorded checkpoints)."""
    return {
        "seeds": [t.config["seed"] for t in ts],
        "checkpoints": [len(p) for p in probs],
        "progress_at_init": summary([p[0] for p in progress]),
        "final_progress": summary([p[-1] for p in progress]),
        "progress_gain": summary([p[-1] - p[0] for p in progress]),
        "final_accuracy": summary([t.checkpoints[-1]["accuracy"] for t in ts]),
        "riemann_length": riemann_density(probs, RIEMANN_TOL),
        "riemann_length_paper_convention": summary([tg.riemann_length(p, refine=None) for p in probs]),
    }


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
        "--max-checkpoints",
        type=int,
        default=96,
        help="checkpoints of the longest run; every run records one every (its steps / this) steps (default: "
        "%(default)s)",
    )
    ap.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates (default: %(default)s)")
    ap.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu or cuda (default: %(default)s)"
    )
    add_data_arguments(ap)
    args = ap.parse_args()
    reference, families_cfg = PRESETS[args.preset]
    out = Path(args.out or args.preset)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte), _, _, _, rename = load(args)
    steps_per_epoch = int(np.ceil(len(ytr) / args.batch_size))
    every = checkpoint_every(args, families_cfg, steps_per_epoch)
    jobs = {}  # family -> its runs, in seed order
    for name, (task, over) in families_cfg.items():
        over = {"lr": 0.1, "norm": "batch", **over}
        for seed in args.seeds:
            cfg = TrainConfig(
                arch=args.arch,
                batch_size=args.batch_size,
                epochs=epochs_of(args, over["method"]),
                checkpoint_every=every,  # the same density of checkpoints per training step for every family
                seed=seed,
                device=args.device,
                episodes_per_epoch=steps_per_epoch,
                imprint_samples=min(args.imprint_samples, len(ytr)),
                imprint_head=args.imprint_head,
                **over,
            )
            jobs.setdefault(name, []).append(job(f"{rename(task)}:{name}", rename(task), cfg))
    sched = scheduler(args, out)
    sched.run([j for js in jobs.values() for j in js])
    _, runs = trained(sched, jobs)
    res = {
        "preset": args.preset,
        "reference": reference,
        "imprint_head": args.imprint_head,
        "checkpoint_every": every,
        "riemann_note": "lengths at full, 1/2 and 1/3 of the recorded checkpoint density; 'converged' where "
        f"halving the density changes every run's length by at most {100 * RIEMANN_TOL:.0f}%; otherwise lengths "
        "and their ratios are lower bounds that depend on the density",
        "families": {},
    }
    families = {}
    probs = {name: [np.asarray(t.probs, dtype=np.float64) for t in ts] for name, ts in runs.items()}
    progress = {name: [np.asarray(tg.progress(p, yte)) for p in ps] for name, ps in probs.items()}
    grid = tg.trajectories.progress_grid([p for ps in progress.values() for p in ps], args.grid)
    for name, ts in runs.items():
        # NaN outside the progress a run reaches: the embedding holds no clamped copies of first or last models
        families[name] = np.stack(
            [
                tg.reindex(p, yte, grid=grid, outside="nan", progress=tk).astype(np.float32)
                for p, tk in zip(probs[name], progress[name])
            ]
        )
        res["families"][name] = family_summary(ts, probs[name], progress[name])
    ref = res["families"][reference]
    for f in res["families"].values():
        f["riemann_length_ratio_to_reference"] = {
            k: f["riemann_length"][k]["mean"] / ref["riemann_length"][k]["mean"] for k in ("full", "half", "third")
        }
        f["riemann_length_paper_convention_ratio"] = (
            f["riemann_length_paper_convention"]["mean"] / ref["riemann_length_paper_convention"]["mean"]
        )
    res["grid"] = grid.tolist()  # the embedding's grid: progress some run reaches (each run embedded where it does)
    res["normalized_distance_to_reference"] = {}
    for name in families:
        if name == reference:
            continue
        try:
            c = tg.compare(probs[name], probs[reference], yte, grid=args.grid, n_boot=args.n_boot)
        except ValueError as exc:  # one seed, or no progress reached by every run of both
            res["normalized_distance_to_reference"][name] = {"error": str(exc)}
            continue
        res["normalized_distance_to_reference"][name] = c.to_json()
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
        if "grid" not in nd:
            continue
        color = f"C{names.index(n)}"
        ax2.plot(
            nd["grid"], nd["normalized_distance"], color=color, label=f"{n} vs {reference} (p = {nd['p_value']:.3f})"
        )
        if nd["interval"]:
            ax2.fill_between(nd["grid"], nd["interval"]["low"], nd["interval"]["high"], color=color, alpha=0.2)
    ax2.axhline(1.0, color="k", ls=":", lw=1)
    ax2.set(xlabel="progress", ylabel="distance / tube radii at that progress", yscale="log", title="Remark 5")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{args.preset}.png", dpi=110)
    for name, f in res["families"].items():
        r, ratio = f["riemann_length"], f["riemann_length_ratio_to_reference"]
        print(
            f"{name:>16}: progress {f['progress_at_init']['mean']:.3f} -> {f['final_progress']['mean']:.3f}, "
            f"Riemann length {r['full']['mean']:.3f} ({ratio['full']:.2f} x {reference}; every 2nd checkpoint "
            f"{ratio['half']:.2f} x, every 3rd {ratio['third']:.2f} x; {r['verdict']}), "
            f"accuracy {f['final_accuracy']['mean']:.3f}"
        )
    for name, c in res["normalized_distance_to_reference"].items():
        if "mean" in c:
            iv = c["mean_interval"]
            print(
                f"{name:>16} vs {reference}: mean normalised distance {c['mean']:.2f} "
                f"[{iv.get('low', float('nan')):.2f}, {iv.get('high', float('nan')):.2f}], p = {c['p_value']:.3f}"
            )
        else:
            print(f"{name:>16} vs {reference}: {c['error']}")
    print(f"wrote {out / (args.preset + '.json')} and {out / (args.preset + '.png')}")


if __name__ == "__main__":
    main()
