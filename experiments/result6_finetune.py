"""Result 6 at small scale: fine-tuning on sub-tasks from checkpoints along the supervised trajectory.

A supervised run on all ten digits keeps the weights of every recorded checkpoint; from an early, a
middle and the final one, models are fine-tuned on 0-4 and on 5-9 (on CIFAR-10 with ``--data cifar10``:
on airplane-automobile and on bird-cat, as in the paper). Every fine-tuned checkpoint is
imprinted onto the ten-digit task. The fine-tuned family (one run per supervised seed) and the supervised
family are re-indexed on a grid over the progress every run of both reaches, and their normalised distance
(Remark 5: the distance between the mean trajectories at each progress over the two tube radii at that
progress, tg.normalized_distance) is reported as a curve over progress, as in the paper's Figs. 3b and
7b, with a bootstrap interval; and their progress on the union task.

    python experiments/result6_finetune.py --out runs/result6      # about a minute on 2 CPU cores
    python experiments/result6_finetune.py --data cifar10 --data-path ../shared/data/cifar10 --out runs/r6c
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

from _data import SUBTASKS, add_data_arguments, load


def compare(ft_probs, sup_probs, labels, args) -> dict:
    """The fine-tuned family against the supervised one (Remark 5, as the paper's Figs. 3b and 7b): both
    re-indexed on a grid over the progress every run of both reaches, and the normalised distance
    (tg.normalized_distance: each tube radius at its own progress) as a curve over it, with a bootstrap
    interval over evaluation samples (per-sample terms reweighted) and seeds (means recomputed)."""
    prog = [np.asarray(tg.progress(p, labels)) for p in ft_probs]
    out = {
        "start_progress": float(np.mean([p[0] for p in prog])),
        "final_progress": float(np.mean([p[-1] for p in prog])),
        # the paper's other reading, "the distance travelled": from the starting checkpoint to the end
        "travelled_bhattacharyya": float(np.mean([float(tg.bhattacharyya(p[0], p[-1])) for p in ft_probs])),
        "travelled_riemann_length": float(np.mean([float(tg.riemann_length(p)) for p in ft_probs])),
        "grid": [],
        "normalized_distance": [],
    }
    sup_prog = [np.asarray(tg.progress(p, labels)) for p in sup_probs]
    try:
        grid = tg.trajectories.progress_grid(prog + sup_prog, args.grid, shared=True)
    except ValueError:
        return out  # the fine-tuned runs never reach progress the supervised ones did
    fams = [np.stack([tg.reindex(p, labels, grid=grid) for p in group]) for group in (ft_probs, sup_probs)]
    # 95% bootstrap over evaluation samples and, where a family has two or more runs, its seeds (the mean
    # trajectories and tube radii recomputed from the seeds each replicate draws)
    from taskgeom.bootstrap import percentile_interval, sample_weights, seed_weights

    rng = np.random.default_rng(0)
    w = sample_weights(len(labels), args.n_boot, rng)
    seeds = [seed_weights(len(f), args.n_boot, rng) for f in fams]
    with np.errstate(invalid="ignore"):
        reps, _ = tg.trajectories.pair_replicates(*fams, w, *seeds)
    lo, hi = percentile_interval(reps)
    ci = {"low": np.asarray(lo), "high": np.asarray(hi)}
    over = f"evaluation samples and seeds (seeds: fine-tuned {len(fams[0])}, supervised {len(fams[1])})"
    nd = np.asarray(tg.normalized_distance(*fams))
    # where the fine-tuning ends: the grid point nearest its final progress (fine-tuning from a late
    # checkpoint lowers progress, so the highest shared progress is where it starts, not where it ends)
    k = int(np.argmin(np.abs(grid - out["final_progress"])))
    out.update(
        grid=grid.tolist(),
        normalized_distance=nd.tolist(),
        interval={"low": ci["low"].tolist(), "high": ci["high"].tolist(), "level": 0.95, "over": over},
        tube_radius_supervised=np.asarray(tg.tube_radius(fams[1])).tolist(),
        at_end={
            "progress": float(grid[k]),
            "normalized_distance": float(nd[k]),
            "interval": [float(ci["low"][k]), float(ci["high"][k])],
        },
    )
    return out


def plot(res: dict, path: Path) -> None:
    """The normalised distance curves over progress with their bootstrap bands (as Figs. 3b and 7b)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, r) in enumerate(res["finetuned"].items()):
        y = np.asarray(r["normalized_distance"], dtype=float)
        if y.size == 0 or not np.isfinite(y).any():
            continue
        ax.plot(r["grid"], y, color=f"C{i}", label=name)
        ax.fill_between(r["grid"], r["interval"]["low"], r["interval"]["high"], color=f"C{i}", alpha=0.2)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set(xlabel="progress on the union task", ylabel="distance / tube radii (Remark 5)", yscale="log")
    ax.set_title("Fine-tuned against supervised trajectories")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="result6", help="output folder (default: %(default)s)")
    add_seeds_argument(ap, 3, "of every run")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of the supervised runs (default: %(default)s)")
    ap.add_argument(
        "--finetune-epochs", type=int, default=5, help="epochs of each fine-tuning run (default: %(default)s)"
    )
    ap.add_argument(
        "--grid", type=int, default=40, help="progress values of the re-indexed trajectories (default: %(default)s)"
    )
    ap.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu or cuda (default: %(default)s)"
    )
    ap.add_argument(
        "--n-boot", type=int, default=200, help="bootstrap replicates over evaluation samples (default: %(default)s)"
    )
    add_data_arguments(ap)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte), class_names, tasks, eval_set, _ = load(args)
    store = PredictionStore(out / "store", create=True)
    store.add_eval_set(eval_set, yte, class_names=class_names)
    base = dict(
        arch=args.arch,
        norm="layer",
        lr=0.1,
        batch_size=args.batch_size,
        device=args.device,
        imprint_samples=min(args.imprint_samples, len(ytr)),
        imprint_head=args.imprint_head,
    )
    sup = [
        train(
            TrainConfig(epochs=args.epochs, checkpoints=20, seed=s, keep_states=True, **base),
            tasks["all"],
            (xtr, ytr),
            (xte, yte),
            store,
            eval_set,
            "all",
            progress_bar=False,
        )
        for s in args.seeds
    ]
    n_ck = len(sup[0])
    starts = {"early": 3, "middle": n_ck // 2, "final": n_ck - 1}
    sup_probs = [np.asarray(t.probs) for t in sup]
    res = {
        "supervised": {"final_progress": float(np.mean([tg.progress(p[-1], yte) for p in sup_probs]))},
        "normalisation": "Remark 5: 2 d_B(mean_ft(t), mean_sup(t)) / (r_ft(t) + r_sup(t)), radii at each progress t, "
        "over the progress every run of both families reaches",
        "finetuned": {},
    }
    state_dir = out / "store" / "state"
    for where, k in starts.items():
        for task in SUBTASKS[args.data]:
            ft_probs = []
            for s, t in enumerate(sup):
                init = state_dir / f"{t.id:06d}_ckpt{k:03d}.pt"
                ft = train(
                    TrainConfig(
                        method="finetune",
                        epochs=args.finetune_epochs,
                        checkpoints=8,
                        seed=s,
                        init_from=str(init),
                        **base,
                    ),
                    tasks[task],
                    (xtr, ytr),
                    (xte, yte),
                    store,
                    eval_set,
                    f"{task}:finetune-from-{where}",
                    progress_bar=False,
                )
                ft_probs.append(np.asarray(ft.probs))
            res["finetuned"][f"{task} from {where} (checkpoint {k})"] = compare(ft_probs, sup_probs, yte, args)
    if len(args.seeds) < 2:
        res["warning"] = "one seed per family: both tube radii are 0, so the normalised distance is 0 or inf"
    (out / "result6.json").write_text(json.dumps(res, indent=2))
    plot(res, out / "result6_normalized_distance.png")
    print(f"supervised: final progress {res['supervised']['final_progress']:.3f}")
    for name, r in res["finetuned"].items():
        curve = r["normalized_distance"]
        where = (
            f"normalised distance (Remark 5) {curve[0]:.2f} -> {curve[-1]:.2f} over progress "
            f"{r['grid'][0]:.3f} - {r['grid'][-1]:.3f}; where it ends (progress {r['at_end']['progress']:.3f}): "
            f"{r['at_end']['normalized_distance']:.2f}"
            if curve
            else "no progress shared with the supervised runs"
        )
        print(
            f"{name:>32}: progress {r['start_progress']:.3f} -> {r['final_progress']:.3f}, travelled d_B "
            f"{r['travelled_bhattacharyya']:.4f} (Riemann {r['travelled_riemann_length']:.3f}); {where}"
        )
    print(f"wrote {out / 'result6.json'} and {out / 'result6_normalized_distance.png'}")


if __name__ == "__main__":
    main()
