"""CIFAR-10 family B (Results 4, 5 and 7), split into parts of at most 9 GPU minutes each (--part).

* ``r4-episodic`` (Result 4): supervised against prototypical networks, 2-way (5 support + 10 query
  images per class, 30 an episode: the paper's) and 5-way (2 + 10 per class), trained --episodic-ratio
  (7.5, the paper's 750 against 100 epochs) times the supervised epochs, an episodic epoch being one pass
  over the training images in episodes. Riemann lengths (refined, and the paper's 2 sum sqrt d_B over
  checkpoints), their ratio to supervised, and normalised distances to the supervised family.
* ``r4-kway`` (Fig. 4b / 5a): supervised cross-entropy on random k-class tasks, k = 2, 5, 7 (one task per
  seed: random<k>-s<seed>): tube radius around their mean trajectory and the distance of their final mean
  to the truth P*, against k.
* ``r5`` (Result 5): supervised, SimCLR, Barlow Twins and FixMatch (2,500 labels, mu = 7), each family from
  its own initialisations: normalised distances between the families and their progress.
* ``r7`` (Result 7, App. B Fig. A1b): SimCLR on airplane-automobile, bird-cat, ship-truck and all ten
  classes, against supervised on all: distances between the mean trajectories and progress.

With --eval-on-train the models are evaluated on --eval-samples training images (the paper's Figs. 4-5)
instead of test images. Outputs as family A (results.json, summary.png, store.tar, run.log).

    python experiments/cifar10_family_b.py --part r4-episodic --out runs/b-r4e    # GPU
    python experiments/cifar10_family_b.py --part r5 --smoke --out /tmp/b-r5      # CPU rehearsal
"""

from __future__ import annotations

import math

import numpy as np
from _family import Family, Run, arguments, run_script, smoke_settings, summary

import taskgeom as tg
from taskgeom.bootstrap import percentile_interval, sample_weights
from taskgeom.trajectories import normalized_distance, normalized_distance_interval, tube_radius_replicates

PARTS = ("r4-episodic", "r4-kway", "r5", "r7")
#: self-supervised runs: Adam at the method's learning rate (1e-3), batches of 512
SIMCLR = {"method": "simclr", "lr": None, "batch_size": 512, "label_smoothing": 0.0}
#: FixMatch: 2,500 labels (the paper's), labelled batches of 64 and 7 x 64 unlabelled, SGD at 0.05
FIXMATCH = {"method": "fixmatch", "labelled": 2500, "batch_size": 64, "unlabelled_ratio": 7, "lr": None}
EPISODES = {2: {"way": 2, "shot": 5, "query": 10}, 5: {"way": 5, "shot": 2, "query": 10}}


def runs(args, n_train: int) -> list[Run]:
    s = range(args.seeds)
    sup = [Run("supervised", "all", k) for k in s]
    if args.part == "r4-episodic":
        out = list(sup)
        for way, ep in EPISODES.items():
            per_episode = way * (ep["shot"] + ep["query"])
            settings = {
                "method": "protonet",
                "lr": None,  # the method's (SGD 0.05): the fast recipe's 0.8 is for batches of 1,024
                "epochs": max(1, round(args.episodic_ratio * args.epochs)),
                "episodes_per_epoch": max(1, math.ceil(n_train / per_episode)),
                "imprint_head": "euclidean",
                **ep,
            }
            out += [Run(f"protonet {way}-way", "all", k, settings) for k in s]
        return out
    if args.part == "r4-kway":
        return sup + [Run(f"{k}-way cross-entropy", f"random{k}-s{seed}", seed) for k in (2, 5, 7) for seed in s]
    if args.part == "r5":
        return (
            sup
            + [Run("simclr", "all", k, SIMCLR) for k in s]
            + [Run("barlow", "all", k, {**SIMCLR, "method": "barlow"}) for k in s]
            + [Run("fixmatch", "all", k, FIXMATCH) for k in s]
        )
    tasks = ["airplane-automobile", "bird-cat", "ship-truck", "all"]
    return sup + [Run(f"simclr {t}", t, k, SIMCLR) for t in tasks for k in s]


def final_models(end, ref_end) -> dict:
    """Normalised distance (Remark 5) between two families' final models (each family's last checkpoints,
    its tube radius there), with its 95% bootstrap interval over evaluation samples."""
    pair = np.stack(end)[:, None], np.stack(ref_end)[:, None]
    iv = normalized_distance_interval(*pair, n_boot=200)
    return {
        "final_normalized_distance": float(np.asarray(normalized_distance(*pair))[0]),
        "final_normalized_distance_interval": [float(iv["low"][0]), float(iv["high"][0])],
    }


def distances_to(fam: Family, ref: str, grid) -> dict:
    """Normalised distance (Remark 5) of each family to ``ref`` over the progress every run of both
    reaches (both re-indexed afresh on ``--grid`` values over that range; empty, mean NaN, where they share
    none), and the final models compared: the Bhattacharyya distance between the two families' mean final
    models and the normalised distance between the final models (each family's last checkpoints, its tube
    radius there): the comparison that still says something where two families share no progress."""
    out = {}
    for g in fam.trajs:
        if g == ref:
            continue
        shared = fam.shared_grid(g, ref)
        interval = None
        if shared is None:
            shared, nd = np.zeros(0), np.zeros(0)
        else:
            pair = fam.family(g, shared), fam.family(ref, shared)
            nd = np.asarray(normalized_distance(*pair))
            # 95% bootstrap over evaluation samples (reweighted per-sample terms; 2 seeds: not over seeds)
            interval = {k: np.asarray(v).tolist() for k, v in normalized_distance_interval(*pair, n_boot=200).items()}
        end = [np.asarray(p[-1], np.float64) for p in fam.probs(g)]
        ref_end = [np.asarray(p[-1], np.float64) for p in fam.probs(ref)]
        out[g] = {
            "normalized_distance": {
                "progress": shared.tolist(),
                "values": nd.tolist(),
                "interval": interval,
                "mean": float(nd.mean()) if nd.size else float("nan"),
            },
            "final_means_bhattacharyya": float(tg.bhattacharyya(np.mean(end, 0), np.mean(ref_end, 0))),
            **final_models(end, ref_end),
            "final_progress": summary(fam.final_progress(g)),
        }
    return out


def r4_episodic(fam: Family, grid) -> dict:
    out = {"distances_to_supervised": distances_to(fam, "supervised", grid), "riemann": {}}
    for g in fam.trajs:
        refined = [tg.riemann_length(p) for p in fam.probs(g)]
        paper = [tg.riemann_length(p, refine=None) for p in fam.probs(g)]
        out["riemann"][g] = {"refined": summary(refined), "paper_convention": summary(paper)}
    sup = out["riemann"]["supervised"]
    for g, r in out["riemann"].items():
        r["ratio_to_supervised"] = {
            k: r[k]["mean"] / max(sup[k]["mean"], 1e-300) for k in ("refined", "paper_convention")
        }
    return out


def r4_kway(fam: Family) -> dict:
    out = {}
    truth = tg.truth(fam.labels, 10)
    for g in fam.trajs:
        own = fam.shared_grid(g, g)  # the progress every run of g reaches
        radius, interval = np.zeros(0), None
        if own is not None:
            f = fam.family(g, own)
            radius = np.asarray(tg.tube_radius(f))
            weights = sample_weights(f.shape[-2], 200, 0)
            reps = tube_radius_replicates(f, weights)  # (G, B)
            lo, hi = percentile_interval(reps.mean(0))  # of the mean radius over the range
            interval = {"mean_low": float(lo), "mean_high": float(hi)}
        final_mean = np.mean([np.asarray(p[-1], np.float64) for p in fam.probs(g)], 0)
        out[g] = {
            "tube_radius": {"progress": [] if own is None else own.tolist(), "values": radius.tolist()},
            "mean_tube_radius": float(radius.mean()) if radius.size else float("nan"),
            "mean_tube_radius_interval": interval,
            "final_mean_distance_to_truth": float(tg.bhattacharyya(final_mean, truth)),
            "final_progress": summary(fam.final_progress(g)),
        }
    return out


def _finite(values) -> list:
    """Bar heights: an undefined value (NaN: a normalised distance or tube radius of a group with one run)
    drawn as 0; results.json holds it as null."""
    return [v if v is not None and math.isfinite(v) else 0.0 for v in values]


def figure(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    body = res["result"]
    dist = body.get("distances_to_supervised") or body.get("distances") or {}

    def curves(axis, distances, what):
        for g, v in distances.items():
            nd = v["normalized_distance"]
            (line,) = axis.plot(nd["progress"], nd["values"], "-o", ms=3, label=g)
            if nd.get("interval"):  # 95% bootstrap over evaluation samples
                axis.fill_between(nd["progress"], nd["interval"]["low"], nd["interval"]["high"], alpha=0.25,
                                  color=line.get_color(), lw=0)  # fmt: skip
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.set_xlabel("progress")
        axis.set_ylabel(f"normalised distance to {what}")
        axis.legend(fontsize=7)

    curves(ax[0], dist, "supervised")
    if not any(v["normalized_distance"]["values"] for v in dist.values()):
        ax[0].text(0.5, 0.5, "no family shares progress with supervised", ha="center", transform=ax[0].transAxes)
    if res["part"] == "r7":  # final models from SimCLR on all classes (Fig. A1b's end; trajectories may not overlap)
        d = body["distances_to_simclr_all"]
        names = list(d)
        ax[1].bar(names, _finite([d[n]["final_normalized_distance"] for n in names]))
        ax[1].set_title("final models: normalised distance to SimCLR on all classes")
    elif res["part"] == "r4-kway":
        names = list(body["kway"])
        ax[1].bar(names, _finite([body["kway"][n]["mean_tube_radius"] for n in names]))
        ax[1].set_title("mean tube radius")
    elif res["part"] == "r4-episodic":
        names = list(body["riemann"])
        ax[1].bar(names, [body["riemann"][n]["paper_convention"]["mean"] for n in names])
        ax[1].set_title("Riemann length (2 sum sqrt d_B)")
    else:
        names = list(dist)
        ax[1].bar(names, [dist[n]["final_progress"]["mean"] for n in names])
        ax[1].set_title("final progress on all ten classes")
    ax[1].tick_params(axis="x", rotation=30)
    fig.suptitle(f"family B, {res['part']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = arguments(__doc__.split("\n\n")[0], epochs=4, seeds=3)
    ap.add_argument("--part", required=True, choices=PARTS, help="which Results (see above)")
    ap.add_argument("--episodic-ratio", type=float, default=7.5, help="episodic / supervised epochs (default: 7.5)")
    ap.add_argument("--eval-on-train", action="store_true", help="evaluate on training images (Figs. 4-5)")
    args = ap.parse_args()
    if args.smoke:
        smoke_settings(args)
        args.episodic_ratio = 2.0
    fam = Family(args, f"family-b-{args.part}", eval_on_train=args.eval_on_train)
    fam.train(runs(args, len(fam.data.train[1])))
    if fam.missing():
        return fam.finish({"part": args.part}, figure)
    grid = fam.grid(fam.trajs)
    if args.part == "r4-episodic":
        body = r4_episodic(fam, grid)
    elif args.part == "r4-kway":
        body = {"kway": r4_kway(fam), "distances_to_supervised": distances_to(fam, "supervised", grid)}
    elif args.part == "r7":  # Fig. A1b measures every family from SimCLR on all of CIFAR-10
        body = {
            "distances_to_supervised": distances_to(fam, "supervised", grid),
            "distances_to_simclr_all": distances_to(fam, "simclr all", grid),
        }
        # and the two-class SimCLR families' final models from each other ("very close to each other")
        pairs = [g for g in fam.trajs if g.startswith("simclr ") and g != "simclr all"]
        ends = {g: [np.asarray(p[-1], np.float64) for p in fam.probs(g)] for g in pairs}
        body["simclr_pairs_final"] = {
            f"{a} | {b}": final_models(ends[a], ends[b]) for i, a in enumerate(pairs) for b in pairs[i + 1 :]
        }
    else:
        body = {"distances_to_supervised": distances_to(fam, "supervised", grid)}
    fam.finish({"part": args.part, "grid": grid.tolist(), "result": body}, figure)


if __name__ == "__main__":
    run_script(main)
