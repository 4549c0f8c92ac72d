"""CIFAR-10 family A (Results 1, 2, 3 and 6) in one GPU run of at most 9 minutes.

Runs (fast-resnet, the fast recipe of bench/bench_train.py, 5 seeds each): supervised on the CIFAR-10
hierarchy (all, vehicles, animals, mammals, pets) and on size-matched random class subsets (random2-s0,
random4-s0, random6-s0: the controls of pets, vehicles and mammals, animals, as the paper's random 333
against Dogs); then fine-tuning on airplane-automobile and on bird-cat from an early, a middle and the
final checkpoint of the supervised all-classes runs (--finetune-seeds seeds). Every checkpoint is imprinted
onto all ten classes (the training default head) and evaluated on --eval-samples test images.

Reported in results.json (and summary.png):
* Result 1: InPCA of the mean trajectories of every task: explained stress of the top 1-3 dimensions;
* Result 2: progress on all ten classes of each task's final models (seed mean, std), against the
  size-matched random control, and split into the task's own (seen) and the other (unseen) classes;
* Result 3: normalised distances between the hierarchy's tasks over the progress both reach, their rank
  correlation with the distance in the tree and its Mantel p-value (exact over all 120 permutations);
* Result 6: the normalised distance (Remark 5) of each fine-tuned family from the supervised one over the
  progress both reach, with a bootstrap interval, and the progress it keeps.

    python experiments/cifar10_family_a.py --out runs/family-a                 # GPU, CIFAR-10 in .devdata
    python experiments/cifar10_family_a.py --smoke --out /tmp/family-a-smoke    # CPU rehearsal, ~1 minute
"""

from __future__ import annotations

import numpy as np
from _family import Family, Run, arguments, run_script, smoke_settings, summary

import taskgeom as tg
from taskgeom.analysis import task_distances
from taskgeom.bootstrap import percentile_interval, progress_replicates, sample_weights, stress_replicates
from taskgeom.data import CIFAR10_TASKS

HIERARCHY = ["all", "vehicles", "animals", "mammals", "pets"]
CONTROLS = {"pets": "random2-s0", "vehicles": "random4-s0", "mammals": "random4-s0", "animals": "random6-s0"}
FINETUNE = ["airplane-automobile", "bird-cat"]


def runs(args, n_checkpoints: int) -> tuple[list[Run], list[Run]]:
    first = []
    for task in HIERARCHY + sorted(set(CONTROLS.values())):
        for s in range(args.seeds):
            first.append(Run(task, task, s, {"keep_states": task == "all"}))
    starts = {"early": max(1, n_checkpoints // 6), "middle": n_checkpoints // 2, "final": n_checkpoints - 1}
    seen: set = set()
    for where in ("final", "early", "middle"):  # distinct checkpoints only: where two coincide, "final" keeps
        if starts[where] in seen:  # its name, then "early"
            del starts[where]
        else:
            seen.add(starts[where])
    second = []
    for where, k in starts.items():
        for task in FINETUNE:
            for s in range(min(args.finetune_seeds, args.seeds)):
                settings = {"epochs": max(1, args.epochs // 2)}
                second.append(Run(f"{task} from {where}", task, s, settings, init=("all", k)))
    return first, second


def result2(fam: Family) -> dict:
    out = {}
    weights = sample_weights(len(fam.labels), 200, 0)  # one bootstrap over evaluation samples for every task
    all_final = fam.final_progress("all").mean()
    for task in HIERARCHY + sorted(set(CONTROLS.values())):
        fp = fam.final_progress(task)
        seen = fam.data.task(task)
        unseen = [c for c in range(10) if c not in seen]
        pc = np.stack([np.asarray(tg.per_class_progress(p[-1], fam.labels)) for p in fam.probs(task)])
        finals = np.stack([p[-1] for p in fam.probs(task)])  # (seeds, N, C)
        reps = progress_replicates(finals, fam.labels, weights).mean(0)  # of the mean over seeds
        out[task] = {
            "progress": summary(fp),
            "progress_interval": dict(zip(("low", "high"), map(float, percentile_interval(np.asarray(reps))))),
            "fraction_of_all": float(fp.mean() / all_final),
            "seen_classes_progress": float(pc[:, seen].mean()),
            "unseen_classes_progress": float(pc[:, unseen].mean()) if unseen else None,
            "control": CONTROLS.get(task),
        }
    for task, ctl in CONTROLS.items():
        out[task]["minus_control"] = out[task]["progress"]["mean"] - out[ctl]["progress"]["mean"]
    return out


def result3(fam: Family, grid: np.ndarray) -> dict:
    import result3_hierarchy as r3

    families = {t: fam.family(t, grid) for t in HIERARCHY}
    final = {t: fam.final_progress(t).tolist() for t in HIERARCHY}
    return r3.analyse(task_distances(families, final, grid, shared=fam.shared))


def result6(fam: Family, grid: np.ndarray) -> dict:
    """Each fine-tuned family against the supervised all-classes one with the one Remark 5 normalisation
    (result6_finetune.compare: both re-indexed over the progress every run of both reaches, each tube
    radius at its own progress, a bootstrap interval)."""
    from types import SimpleNamespace

    import result6_finetune as r6

    sup = fam.family("all", grid)
    out = {
        "grid": grid.tolist(),  # the supervised runs' grid, for their tube radius
        "supervised_final_progress": summary(fam.final_progress("all")),
        "tube_radius": np.asarray(tg.tube_radius(sup)).tolist(),
    }
    opts = SimpleNamespace(grid=fam.args.grid, n_boot=200)
    for group in fam.trajs:
        if " from " in group:
            res = r6.compare(fam.probs(group), fam.probs("all"), fam.labels, opts)
            # where the fine-tuned runs end (the grid point nearest their final progress)
            res["final_normalized_distance"] = res["at_end"]["normalized_distance"] if "at_end" in res else None
            out[group] = res
    return out


def result1(fam: Family, grid: np.ndarray) -> dict:
    groups = HIERARCHY + sorted(set(CONTROLS.values()))
    # each task's mean trajectory over the progress all its seeds reach (no clamped first or last models),
    # on --grid values of its own
    own = {g: fam.shared_grid(g, g) for g in groups}
    left_out = [g for g in groups if own[g] is None]  # its seeds share no progress: no mean trajectory
    groups = [g for g in groups if own[g] is not None]
    if not groups:
        return {"explained_stress": [], "coords": {}, "points": 0, "left_out": left_out}
    means = [fam.family(g, own[g]).astype(np.float64).mean(0) for g in groups]
    stack = np.concatenate(means)
    emb = tg.inpca(np.asarray(tg.pairwise_distances(stack)), k=min(3, len(stack)))
    ends = np.cumsum([0] + [len(m) for m in means])
    # 95% bootstrap over evaluation samples (reweighted per-sample terms, taskgeom.bootstrap)
    reps = stress_replicates(stack, sample_weights(stack.shape[1], 200, 0), k=min(3, len(stack)))
    lo, hi = percentile_interval(reps.T)
    return {
        "explained_stress": [float(x) for x in emb.explained_stress()],
        "explained_stress_interval": {"low": lo.tolist(), "high": hi.tolist(), "over": "evaluation samples"},
        "points": int(ends[-1]),
        "coords": {g: emb.coords[ends[i] : ends[i + 1], :3].tolist() for i, g in enumerate(groups)},
        "left_out": left_out,
    }


def figure(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for g, xy in res["result1"]["coords"].items():
        xy = np.asarray(xy)
        ax[0].plot(xy[:, 0], xy[:, 1], "-o", ms=2, label=g)
    es = res["result1"]["explained_stress"]
    if es:
        ax[0].set_title(f"Result 1: InPCA of mean trajectories (stress {100 * es[min(1, len(es) - 1)]:.0f}% in 2-D)")
        ax[0].legend(fontsize=7)
    else:
        ax[0].set_title("Result 1: no task's seeds share a range of progress")
    left_out = res["result1"].get("left_out")
    if left_out:  # tasks whose seeds share no range of progress have no mean trajectory
        ax[0].text(0.01, 0.01, "not shown (seeds share no progress): " + ", ".join(left_out), fontsize=6,
                   transform=ax[0].transAxes, wrap=True)  # fmt: skip
    r2 = res["result2"]
    names = list(r2)
    ax[1].bar(names, [r2[n]["progress"]["mean"] for n in names], yerr=[r2[n]["progress"]["std"] or 0.0 for n in names])
    ax[1].set_title("Result 2: progress on all ten classes")
    ax[1].tick_params(axis="x", rotation=45)
    r6 = {k: v for k, v in res["result6"].items() if " from " in k}
    for k, v in r6.items():
        if v["grid"]:
            ax[2].plot(v["grid"], v["normalized_distance"], "-o", ms=3, label=k)
    ax[2].axhline(1.0, color="grey", lw=0.8)
    ax[2].set_title("Result 6: normalised distance to supervised")
    ax[2].set_xlabel("progress")
    if ax[2].get_legend_handles_labels()[0]:
        ax[2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = arguments(__doc__.split("\n\n")[0], epochs=10, seeds=5)
    ap.add_argument("--finetune-seeds", type=int, default=3, help="seeds of each fine-tuning (default: 3)")
    args = ap.parse_args()
    if args.smoke:
        smoke_settings(args)
        args.finetune_seeds = 1
    fam = Family(args, "family-a")
    first, _ = runs(args, 0)
    queued = []

    def then(run):
        """Once an all-classes run is trained (and its checkpoints counted), the fine-tuning runs: each
        seed's start after that seed's supervised runs, so a budget that runs short keeps every group."""
        if run.group == "all" and not queued:
            queued.append(True)
            return runs(args, fam.done["all", run.seed]["checkpoints"])[1]
        return []

    fam.train(first, then=then)
    if fam.missing():
        return fam.finish({}, figure)
    grid = fam.grid(fam.trajs)
    hier_grid = fam.grid(HIERARCHY)
    res = {
        "grid": grid.tolist(),  # progress values some run reaches
        "result1": result1(fam, grid),
        "result2": result2(fam),
        "result3": result3(fam, hier_grid),
        "result6": result6(fam, fam.grid(["all"])),
        "tasks": {
            t: CIFAR10_TASKS[t].classes if t in CIFAR10_TASKS else fam.data.task(t)
            for t in fam.trajs
            if " from " not in t
        },
    }
    fam.finish(res, figure)


if __name__ == "__main__":
    run_script(main)
