"""Result 6 at small scale: fine-tuning on sub-tasks from checkpoints along the supervised trajectory.

A supervised run on all ten digits (LayerNorm, as App. A) keeps the weights of every recorded checkpoint;
from an early, a middle and the final one (the checkpoints nearest 1/6, 1/2 and all of the way from its
progress at initialisation to its highest), models are fine-tuned on 0-4 and on 5-9 (on CIFAR-10 with ``--data cifar10``:
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
from pathlib import Path

import numpy as np
from _family import STARTS, add_seeds_argument, start_checkpoints

import taskgeom as tg
from taskgeom._configjson import strict_dumps
from taskgeom.train import TrainConfig

from _data import SUBTASKS, add_data_arguments, job, load, provenance, scheduler, trained


def compare(ft_probs, sup_probs, labels, args) -> dict:
    """The fine-tuned family against the supervised one (Remark 5, as the paper's Figs. 3b and 7b):
    :func:`taskgeom.compare` (both re-indexed on a grid over the progress every run of both reaches, the
    normalised distance as a curve over it with a 95% bootstrap interval over evaluation samples and seeds,
    and a permutation test), with the progress the fine-tuning starts and ends at and the distance it
    travels. Needs two seeds a family (a tube needs two); otherwise ``error`` says so."""
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
    try:
        c = tg.compare(ft_probs, sup_probs, labels, grid=args.grid, n_boot=args.n_boot, n_perm=args.n_perm)
    except ValueError as exc:  # one seed, or no progress shared with the supervised runs
        out["error"] = str(exc)
        return out
    out.update(c.to_json())
    grid, nd, iv = np.asarray(c.grid), np.asarray(c.normalized_distance), c.interval
    # where the fine-tuning ends: the grid point nearest its final progress (fine-tuning from a late
    # checkpoint lowers progress, so the highest shared progress is where it starts, not where it ends)
    k = int(np.argmin(np.abs(grid - out["final_progress"])))
    out["at_end"] = {
        "progress": float(grid[k]),
        "normalized_distance": float(nd[k]),
        "interval": [iv["low"][k], iv["high"][k]] if iv else None,
    }
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


def parser() -> argparse.ArgumentParser:
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
        "--n-boot",
        type=int,
        default=200,
        help="bootstrap replicates over evaluation samples and seeds (default: %(default)s)",
    )
    ap.add_argument(
        "--n-perm", type=int, default=1000, help="most seed splits of the permutation test (default: %(default)s)"
    )
    add_data_arguments(ap)
    return ap


def finetune_jobs(args, base: dict, sup_jobs: list, starts: list) -> dict:
    """The fine-tuning runs ("task from where" -> runs) in seed order, each from its supervised seed's checkpoint."""
    ft_jobs = {}
    for where in STARTS:
        for task in SUBTASKS[args.data]:
            ft_jobs[f"{task} from {where}"] = [
                job(
                    f"{task}:finetune-from-{where}",
                    task,
                    TrainConfig(method="finetune", epochs=args.finetune_epochs, checkpoints=8, seed=seed, **base),
                    start_from=(sj.id, st[where][0]),  # the checkpoint's saved weights: init_from
                )
                for seed, sj, st in zip(args.seeds, sup_jobs, starts)
            ]
    return ft_jobs


def run(args, out: Path) -> dict:
    """Train (or reuse) the supervised runs, then the fine-tuning runs from their checkpoints, and compare."""
    (xtr, ytr), (xte, yte), _, _, _, _ = load(args)
    base = dict(
        arch=args.arch,
        norm="layer",
        lr=0.1,
        batch_size=args.batch_size,
        device=args.device,
        imprint_samples=min(args.imprint_samples, len(ytr)),
        imprint_head=args.imprint_head,
    )
    sched = scheduler(args, out)
    sup_jobs = [
        job("all", "all", TrainConfig(epochs=args.epochs, checkpoints=20, seed=s, keep_states=True, **base))
        for s in args.seeds
    ]
    sched.run(sup_jobs)
    store, sup = trained(sched, {"all": sup_jobs})
    sup_probs = [np.asarray(t.probs) for t in sup["all"]]
    # each seed's starts: the checkpoints nearest 1/6, 1/2 and all of the way from its progress at
    # initialisation to its highest (spaced by training progress, not by checkpoint index)
    starts = [start_checkpoints(tg.progress(p, yte)) for p in sup_probs]
    res = {
        "supervised": {"final_progress": float(np.mean([tg.progress(p[-1], yte) for p in sup_probs]))},
        "normalisation": "Remark 5: 2 d_B(mean_ft(t), mean_sup(t)) / (r_ft(t) + r_sup(t)), radii at each progress t, "
        "over the progress every run of both families reaches",
        "finetuned": {},
    }
    res["starts"] = {  # seed -> {where: (checkpoint, its progress, the target progress)}
        seed: st for seed, st in zip(args.seeds, starts)
    }
    ft_jobs = finetune_jobs(args, base, sup_jobs, starts)
    store.close()  # before more runs are merged into it
    sched.run([j for js in ft_jobs.values() for j in js])
    store, ft = trained(sched, ft_jobs)
    for name, ts in ft.items():
        res["finetuned"][name] = compare([np.asarray(t.probs) for t in ts], sup_probs, yte, args)
    store.close()
    if len(args.seeds) < 2:
        res["warning"] = "one seed per family: no tube, so no normalised distance (give two seeds or more)"
    return res


def report(res: dict) -> None:
    print(f"supervised: final progress {res['supervised']['final_progress']:.3f}")
    for name, r in res["finetuned"].items():
        curve = r["normalized_distance"]
        if "error" in r:
            print(f"{name:>32}: {r['error']}")
            continue
        where = (
            f"normalised distance (Remark 5) {curve[0]:.2f} -> {curve[-1]:.2f} over progress "
            f"{r['grid'][0]:.3f} - {r['grid'][-1]:.3f}; where it ends (progress {r['at_end']['progress']:.3f}): "
            f"{r['at_end']['normalized_distance']:.2f}; mean {r['mean']:.2f}, p = {r['p_value']:.3f}"
            if curve
            else "no progress shared with the supervised runs"
        )
        print(
            f"{name:>32}: progress {r['start_progress']:.3f} -> {r['final_progress']:.3f}, travelled d_B "
            f"{r['travelled_bhattacharyya']:.4f} (Riemann {r['travelled_riemann_length']:.3f}); {where}"
        )


def main():
    args = parser().parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {**run(args, out), **provenance(args)}
    (out / "result6.json").write_text(strict_dumps(res, indent=2))
    plot(res, out / "result6_normalized_distance.png")
    report(res)
    print(f"wrote {out / 'result6.json'} and {out / 'result6_normalized_distance.png'}")


if __name__ == "__main__":
    from taskgeom.cli import run_script

    run_script(main, "result6_finetune.py")
