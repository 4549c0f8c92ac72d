"""CIFAR-10 family A (Results 1, 2, 3 and 6) in one GPU run of at most 9 minutes.

Runs (fast-resnet, the fast recipe of bench/bench_train.py, 5 seeds each): supervised on the CIFAR-10
hierarchy (all, vehicles, animals, mammals, pets) and on size-matched random class subsets (random2-s0,
random4-s0, random6-s0: the controls of pets, vehicles and mammals, animals, as the paper's random 333
against Dogs); supervised on all ten classes with LayerNorm ("all layer-norm", Appendix A's network for
fine-tuning; --finetune-norm batch starts from "all" instead); then fine-tuning on airplane-automobile and
on bird-cat from each seed's checkpoints whose progress is nearest 1/6, 1/2 and all of the way from its
progress at initialisation to its highest ("early", "middle", "final": spaced by progress, not by
checkpoint index) (--finetune-seeds seeds). Every checkpoint is imprinted onto all ten classes (--imprint-head,
the same for every run) and evaluated on --eval-samples test images. Intervals are 95% bootstraps over
evaluation samples and seeds (means recomputed in each replicate; the seeds per group beside each).

Reported in results.json (and summary.png):
* progress on all ten classes at initialisation, at the end and gained, every group;
* Result 1: InPCA of every run's trajectory (each over the progress all its task's seeds reach: no
  clamped copies): explained stress of the top 1-3 dimensions;
* Result 2: progress of each task's models as gains over initialisation (and final), against the
  size-matched random control, and per class for the task's own (seen) and the other (unseen) classes;
* Result 3: normalised distances between the hierarchy's tasks, every pair over one common range (the
  progress every run of every task reaches), their rank correlation with the distance in the tree and its
  Mantel p-value (exact over all 120 permutations);
* Result 6: the normalised distance (Remark 5) of each fine-tuned family from the supervised one it started
  from over the progress both reach, with a bootstrap interval, and the progress it keeps.

    python experiments/cifar10_family_a.py --out runs/family-a                 # GPU, CIFAR-10 in .devdata
    python experiments/cifar10_family_a.py --smoke --out /tmp/family-a-smoke    # CPU rehearsal, ~1 minute
"""

from __future__ import annotations

import numpy as np
from _family import Family, FamilyRun, arguments, run_script, smoke_settings, start_checkpoints, summary

import taskgeom as tg
from taskgeom.analysis import task_distances
from taskgeom.bootstrap import above_estimate, percentile_interval, progress_replicates, stress_replicates
from taskgeom.data import CIFAR10_TASKS

HIERARCHY = ["all", "vehicles", "animals", "mammals", "pets"]
CONTROLS = {"pets": "random2-s0", "vehicles": "random4-s0", "mammals": "random4-s0", "animals": "random6-s0"}
FINETUNE = ["airplane-automobile", "bird-cat"]


#: fine-tuning starts: the checkpoint of the supervised all-classes run (each seed's own) whose progress is
#: nearest these fractions of the way from its progress at initialisation to its highest progress


def source(args) -> str:
    """The supervised all-classes group the fine-tuning starts from (and Result 6 compares with)."""
    return "all" if args.finetune_norm == "batch" else "all layer-norm"


def runs(args) -> list[FamilyRun]:
    first = []
    for task in HIERARCHY + sorted(set(CONTROLS.values())):
        for s in args.seeds:
            first.append(FamilyRun(task, task, s, {"keep_states": task == source(args)}))
    if source(args) != "all":  # Appendix A: LayerNorm for the fine-tuning experiments (Result 6)
        first += [
            FamilyRun(source(args), "all", s, {"keep_states": True, "norm": args.finetune_norm})
            for s in args.seeds[: max(2, args.finetune_seeds)]  # two at least: a tube radius
        ]
    return first


def finetune_runs(args, seed: int, progress: np.ndarray) -> list[FamilyRun]:
    """The fine-tuning runs of one seed, from its supervised all-classes run's checkpoints."""
    out = []
    if seed not in args.seeds[: args.finetune_seeds]:
        return out
    for where, (k, _, _) in start_checkpoints(progress).items():
        for task in FINETUNE:
            settings = {"epochs": max(1, args.epochs // 2), "norm": args.finetune_norm}
            out.append(FamilyRun(f"{task} from {where}", task, seed, settings, init=(source(args), k)))
    return out


def _seed_reps(fam: Family, boot, group: str, models) -> np.ndarray:
    """(B,) replicates of the seed mean of progress of ``models`` (K, N, C), samples and seeds resampled."""
    return boot.seed_mean(group, progress_replicates(models, fam.labels, boot.w))


def result2(fam: Family) -> dict:
    """Progress on all ten classes at initialisation, at the end and gained, per task, seen and unseen
    classes per class at both ends; intervals over evaluation samples and seeds."""
    out = {}
    tasks = HIERARCHY + sorted(set(CONTROLS.values()))
    boot = fam.boot(tasks)
    all_gain = np.mean([p[-1] - p[0] for p in fam.grouped.progress("all")])
    for task in tasks:
        cp = fam.grouped.progress(task)
        init, fp = np.array([p[0] for p in cp]), np.array([p[-1] for p in cp])
        seen = fam.data.task(task)
        unseen = [c for c in range(10) if c not in seen]
        pc = {
            k: np.stack([np.asarray(tg.per_class_progress(p[i], fam.labels)) for p in fam.grouped.probs(task)])
            for k, i in (("init", 0), ("final", -1))
        }
        first, last = (np.stack([p[i] for p in fam.grouped.probs(task)]) for i in (0, -1))  # (seeds, N, C)
        r0, r1 = _seed_reps(fam, boot, task, first), _seed_reps(fam, boot, task, last)

        def classes(which):
            return {k: float(pc[k][:, which].mean()) if which else None for k in ("init", "final")} | {
                "gain": float((pc["final"][:, which] - pc["init"][:, which]).mean()) if which else None
            }

        out[task] = {
            "progress_at_init": {**summary(init), "interval": boot.interval(r0, init.mean())},
            "progress": {**summary(fp), "interval": boot.interval(r1, fp.mean())},
            "progress_gain": {**summary(fp - init), "interval": boot.interval(r1 - r0, (fp - init).mean())},
            "over": boot.over(task),
            "gain_fraction_of_all": float((fp - init).mean() / all_gain),
            "fraction_of_all": float(fp.mean() / fam.grouped.final_progress("all").mean()),
            "seen_classes": classes(seen),
            "unseen_classes": classes(unseen),
            "control": CONTROLS.get(task),
        }
    for task, ctl in CONTROLS.items():
        out[task]["minus_control"] = out[task]["progress"]["mean"] - out[ctl]["progress"]["mean"]
        out[task]["gain_minus_control"] = out[task]["progress_gain"]["mean"] - out[ctl]["progress_gain"]["mean"]
    return out


def result3(fam: Family, grid: np.ndarray) -> dict:
    """The hierarchy's pairs, every pair over one common range: the progress every run of every task
    reaches (a pair's own range would make a task that reaches little progress close to all by
    construction), with intervals over evaluation samples and seeds."""
    import result3_hierarchy as r3

    shared = fam.grouped.pairs_on_shared_grid(HIERARCHY)
    families = {t: fam.grouped.reindexed(t, grid) for t in HIERARCHY}
    final = {t: fam.grouped.final_progress(t).tolist() for t in HIERARCHY}
    td = task_distances(families, final, grid, shared=shared, boot=fam.boot(HIERARCHY))
    out = r3.analyse(td)
    out.update({k: td[k] for k in ("normalized_interval", "bhattacharyya_interval", "progress_compared") if k in td})
    return out


def result6(fam: Family, grid: np.ndarray) -> dict:
    """Each fine-tuned family against the supervised all-classes one it started from with the one Remark 5
    normalisation (result6_finetune.compare: both re-indexed over the progress every run of both reaches,
    each tube radius at its own progress, a bootstrap interval over evaluation samples and seeds)."""
    from types import SimpleNamespace

    import result6_finetune as r6

    src = source(fam.args)
    sup = fam.grouped.reindexed(src, grid)
    out = {
        "source": src,
        "norm": fam.args.finetune_norm,
        "grid": grid.tolist(),  # the supervised runs' grid, for their tube radius
        "supervised_final_progress": summary(fam.grouped.final_progress(src)),
        "tube_radius": np.asarray(tg.tube_radius(sup)).tolist(),
        "starts": {  # each seed's starting checkpoints, spaced by progress
            s: start_checkpoints(p) for s, p in enumerate(fam.grouped.progress(src))
        },
    }
    opts = SimpleNamespace(grid=fam.args.grid, n_boot=fam.args.n_boot, n_perm=1000)
    for group in fam.trajs:
        if " from " in group:
            res = r6.compare(fam.grouped.probs(group), fam.grouped.probs(src), fam.labels, opts)
            # where the fine-tuned runs end (the grid point nearest their final progress)
            res["final_normalized_distance"] = res["at_end"]["normalized_distance"] if "at_end" in res else None
            out[group] = res
    return out


def result1(fam: Family) -> dict:
    """InPCA of every run's trajectory (each re-indexed over the progress all its task's seeds reach: no
    clamped first or last models), explained stress with an interval over evaluation samples and seeds
    (a replicate embeds each run's points as often as it draws its seed); coords: the seed mean of each
    task's embedded points."""
    groups = HIERARCHY + sorted(set(CONTROLS.values()))
    own = {g: fam.grouped.shared_grid([g]) for g in groups}
    left_out = [g for g in groups if own[g] is None]  # its seeds share no progress
    groups = [g for g in groups if own[g] is not None]
    if not groups:
        return {"explained_stress": [], "coords": {}, "points": 0, "left_out": left_out}
    runs = [(g, f) for g in groups for f in fam.grouped.reindexed(g, own[g]).astype(np.float64)]
    stack = np.concatenate([f for _, f in runs])
    k = min(3, len(stack))
    emb = tg.inpca(np.asarray(tg.pairwise_distances(stack)), k=k)
    ends = np.cumsum([0] + [len(f) for _, f in runs])
    boot = fam.boot(groups)
    seed_of = {}
    for i, (g, _) in enumerate(runs):
        seed_of.setdefault(g, []).append(i)
    index = boot.point_index(seed_of, [len(f) for _, f in runs])  # each run's points as often as its seed
    reps = stress_replicates(stack, boot.w, k=k, index=index)
    chi = np.asarray(emb.explained_stress()[:k])
    lo, hi = percentile_interval(reps.T, estimate=chi)  # bias-corrected (taskgeom.bootstrap)
    coords = {g: np.mean([emb.coords[ends[i] : ends[i + 1], :3] for i in seed_of[g]], 0).tolist() for g in groups}
    return {
        "explained_stress": [float(x) for x in emb.explained_stress()],
        "explained_stress_interval": {
            "low": lo.tolist(),
            "high": hi.tolist(),
            "above_estimate": [above_estimate(reps[:, i], chi[i]) for i in range(len(chi))],
            "over": boot.over(*groups),
        },
        "points": int(ends[-1]),
        "clamped_points": 0,
        "embedded": "every run's trajectory, re-indexed over the progress all its task's seeds reach",
        "coords": coords,
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
    ap.add_argument(
        "--finetune-seeds",
        type=int,
        default=3,
        help="fine-tuning runs from the first this many of --seeds (default: 3)",
    )
    ap.add_argument(
        "--finetune-norm", default="layer", choices=("batch", "layer"),
        help="Result 6: normalisation of the fine-tuning runs and of the supervised all-classes runs they start "
        "from (layer: Appendix A's LayerNorm, a separate group 'all layer-norm'; batch: from the 'all' runs of "
        "Results 1-3) (default: %(default)s)",
    )  # fmt: skip
    args = ap.parse_args()
    if args.smoke:
        smoke_settings(args)
        args.finetune_seeds, args.checkpoints = 1, 5
    fam = Family(args, "family-a")

    def then(run):
        """Once a seed's supervised all-classes run (the fine-tuning source) is trained, that seed's
        fine-tuning runs from its checkpoints nearest 1/6, 1/2 and all of its progress range: each seed's
        after that seed's supervised runs, so a budget that runs short keeps every group."""
        if run.group == source(args):
            return finetune_runs(args, run.seed, fam.run_progress(run.group, run.seed))
        return []

    fam.train(runs(args), then=then)
    if fam.missing():
        return fam.finish({}, figure)
    grid = fam.grouped.grid(fam.trajs)
    hier_grid = fam.grouped.grid(HIERARCHY)
    res = {
        "grid": grid.tolist(),  # progress values some run reaches
        "imprint_head": args.imprint_head,
        "progress": fam.progress_summary(),  # at initialisation, final and gained: every group
        "result1": result1(fam),
        "result2": result2(fam),
        "result3": result3(fam, hier_grid),
        "result6": result6(fam, fam.grouped.grid([source(args)])),
        "tasks": {
            t: CIFAR10_TASKS[t].classes if t in CIFAR10_TASKS else fam.data.task(t)
            for t in fam.trajs
            if " from " not in t and t != "all layer-norm"
        },
    }
    fam.finish(res, figure)


if __name__ == "__main__":
    run_script(main)
