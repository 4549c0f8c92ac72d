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
import math
from pathlib import Path

import numpy as np
from _family import add_seeds_argument, riemann_density, summary

import taskgeom as tg
from taskgeom._configjson import strict_dumps
from taskgeom.analysis import TrajectoryGroups
from taskgeom.train import TrainConfig

from _data import add_data_arguments, job, load, provenance, scheduler, trained

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


def parser() -> argparse.ArgumentParser:
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
    return ap


def train_families(args, out: Path, families_cfg: dict, ytr_size: int, rename) -> tuple[int, dict]:
    """Every family's runs, trained (or reused) through the experiments' one scheduler: the steps between
    checkpoints and, per family, its trajectories in seed order."""
    steps_per_epoch = int(np.ceil(ytr_size / args.batch_size))
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
                imprint_samples=min(args.imprint_samples, ytr_size),
                imprint_head=args.imprint_head,
                **over,
            )
            jobs.setdefault(name, []).append(job(f"{rename(task)}:{name}", rename(task), cfg))
    sched = scheduler(args, out)
    sched.run([j for js in jobs.values() for j in js])
    return every, trained(sched, jobs)[1]


def measure(args, reference: str, every: int, grouped: TrajectoryGroups) -> dict:
    """The families' summaries, Riemann length ratios to the reference family and normalised distances to
    it (:func:`taskgeom.compare`)."""
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
    for name, ts in grouped.runs.items():
        res["families"][name] = family_summary(ts, grouped.probs(name), grouped.progress(name))
    ref = res["families"][reference]
    for f in res["families"].values():
        f["riemann_length_ratio_to_reference"] = {
            k: f["riemann_length"][k]["mean"] / ref["riemann_length"][k]["mean"] for k in ("full", "half", "third")
        }
        f["riemann_length_paper_convention_ratio"] = (
            f["riemann_length_paper_convention"]["mean"] / ref["riemann_length_paper_convention"]["mean"]
        )
    # the embedding's grid: progress some run reaches (each run embedded where it does)
    res["grid"] = grouped.grid(list(grouped.runs)).tolist()
    res["normalized_distance_to_reference"] = {}
    for name in grouped.runs:
        if name == reference:
            continue
        try:
            c = tg.compare(grouped.probs(name), grouped.probs(reference), grouped.labels, grid=args.grid,
                           n_boot=args.n_boot)  # fmt: skip
        except ValueError as exc:  # one seed, or no progress reached by every run of both
            res["normalized_distance_to_reference"][name] = {"error": str(exc)}
            continue
        res["normalized_distance_to_reference"][name] = c.to_json()
    return res


def figure(res: dict, grouped: TrajectoryGroups, path: Path) -> None:
    """Every run's trajectory in one InPCA embedding (where it reaches the grid) beside the normalised
    distances to the reference family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, reference = list(grouped.runs), res["reference"]
    emb, reached = grouped.embedding(names, np.asarray(res["grid"]), k=3)
    ends = np.concatenate([[0], np.cumsum(reached.sum(1))])
    fig = plt.figure(figsize=(13, 5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    k = 0
    for i, n in enumerate(names):
        for j in range(len(grouped.runs[n])):
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
    fig.savefig(path, dpi=110)


def report(res: dict) -> None:
    reference = res["reference"]
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
            # every split of the seeds counted: the smallest p there is, 2 / splits where the groups are as large
            # (a split and its complement give the same distance), else 1 / splits
            ka, kb = (len(res["families"][f]["seeds"]) for f in (name, reference))
            floor = c.get("exhaustive") and c["p_value"] <= (2 if ka == kb else 1) / c["permutations"] + 1e-12
            print(
                f"{name:>16} vs {reference}: mean normalised distance {c['mean']:.2f} "
                f"[{iv.get('low', float('nan')):.2f}, {iv.get('high', float('nan')):.2f}], p = {c['p_value']:.3f}"
                + (f" (the smallest possible: all {c['permutations']} splits of the seeds)" if floor else "")
            )
        else:
            print(f"{name:>16} vs {reference}: {c['error']}")


def main():
    args = parser().parse_args()
    reference, families_cfg = PRESETS[args.preset]
    out = Path(args.out or args.preset)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte), _, _, _, rename = load(args)
    every, runs = train_families(args, out, families_cfg, len(ytr), rename)
    # progress, grid, re-indexing and reached values: taskgeom.analysis's, on the stored rows in float64
    grouped = TrajectoryGroups(runs, yte, load=lambda t: np.asarray(t.probs, dtype=np.float64), points=args.grid)
    res = {**measure(args, reference, every, grouped), **provenance(args)}
    (out / f"{args.preset}.json").write_text(strict_dumps(res, indent=2))
    figure(res, grouped, out / f"{args.preset}.png")
    report(res)
    print(f"wrote {out / (args.preset + '.json')} and {out / (args.preset + '.png')}")


if __name__ == "__main__":
    from taskgeom.cli import run_script

    run_script(main, "compare_methods.py")
