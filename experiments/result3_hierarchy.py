"""Result 3 at small scale: do the trajectories of tasks built from a semantic hierarchy reflect it?

The paper (Fig. 3) trains on sub-tasks of two Wordnet phyla of ImageNet and finds that trajectories of
semantically close tasks are close. Here the hierarchy is CIFAR-10's (taskgeom.data.CIFAR10_TASKS):

    all -> vehicles, animals;   animals -> mammals;   mammals -> pets

Every model is imprinted onto all ten classes, trajectories are re-indexed by progress, and each pair of
tasks is compared with the normalised distance of Remark 5 (distance between mean trajectories over the
mean tube radius, averaged over the progress both reach). The script then compares those distances with
the distances in the tree (edges between the two task nodes) and with the overlap of their class sets.

    # train (or reuse) the runs and analyse them, CIFAR-10 on the CPU (about 15 minutes on 2 cores):
    python experiments/result3_hierarchy.py --data-path ../shared/data/cifar10 --out runs/result3
    # paper-like scale on a GPU:
    python experiments/result3_hierarchy.py --data-path ../shared/data/cifar10 --out runs/result3-gpu \\
        --arch wrn-16-4 --epochs 30 --seeds 0 1 2 3 4 --train-per-class 0 --eval-samples 0 --device cuda

Writes ``result3.json`` (distance matrices, tree distances, rank correlations, nearest tasks) and
``result3.png`` beside the ``taskgeom picture`` report of the same runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from taskgeom._configjson import strict_dumps

from _data import provenance

#: parent of each task node in CIFAR-10's semantic tree (None: the root)
PARENT = {
    "all": None,
    "vehicles": "all",
    "animals": "all",
    "mammals": "animals",
    "pets": "mammals",
    "airplane-automobile": "vehicles",
    "ship-truck": "vehicles",
    "bird-cat": "animals",
}


def tree_distance(a: str, b: str) -> int:
    """Number of edges between two task nodes of the tree."""

    def ancestors(x):
        out = [x]
        while PARENT[out[-1]] is not None:
            out.append(PARENT[out[-1]])
        return out

    pa, pb = ancestors(a), ancestors(b)
    common = next(x for x in pa if x in pb)
    return pa.index(common) + pb.index(common)


def class_overlap_distance(a: str, b: str) -> float:
    """1 - Jaccard index of the two tasks' class sets."""
    from taskgeom.data import CIFAR10_TASKS

    ca, cb = set(CIFAR10_TASKS[a].classes), set(CIFAR10_TASKS[b].classes)
    return 1.0 - len(ca & cb) / len(ca | cb)


def analyse(td: dict) -> dict:
    from scipy.stats import spearmanr

    from taskgeom.stats import mantel

    names = td["tasks"]
    unknown = [t for t in names if t not in PARENT]
    if unknown:
        raise ValueError(
            f"tasks {', '.join(unknown)} are not in CIFAR-10's semantic tree ({', '.join(PARENT)}): Result 3 "
            "needs a picture of CIFAR-10 tasks"
        )
    # (null in a results.json, an undefined or infinite distance, reads as NaN: a pair not compared)
    nd = np.asarray(td["normalized"], dtype=float)
    db = np.asarray(td["bhattacharyya"], dtype=float)
    nd_end = np.asarray(td["normalized_final"], dtype=float)
    iu = np.triu_indices(len(names), 1)
    tree = np.array([[tree_distance(a, b) for b in names] for a in names])
    overlap = np.array([[class_overlap_distance(a, b) for b in names] for a in names])
    out = {
        "tasks": names,
        "normalized_distance": nd.tolist(),
        "bhattacharyya_between_means": db.tolist(),
        "tree_distance": tree.tolist(),
        "class_overlap_distance": overlap.tolist(),
        "normalized_distance_final": nd_end.tolist(),
        "progress_reached": td["progress_reached"],
        "grid_points_compared": td["points_compared"],
    }
    for key, m in (("tree_distance", tree), ("class_overlap_distance", overlap)):
        for dist, d in (("normalized", nd), ("bhattacharyya", db), ("normalized_final", nd_end)):
            # Spearman's rho of the pairs, with the p-value of a Mantel permutation test (exact: every
            # permutation of the tasks); spearmanr's own p-value treats the pairs as independent: invalid
            ok = np.isfinite(d[iu])  # pairs without a shared progress range are NaN
            if ok.all():
                test = mantel(d, m, method="spearman")
                how = f"Mantel, one-sided, {'exact' if test.exact else 'sampled'} over {test.permutations} permutations"
                rho, pval = test.statistic, test.p
            else:  # the permutation test needs every pair: rho over the pairs there are, no p-value
                rho = float(spearmanr(m[iu][ok], d[iu][ok])[0]) if ok.sum() >= 3 else float("nan")
                pval, how = None, f"no test: {int((~ok).sum())} pairs share no progress range"
            out[f"spearman_{dist}_vs_{key}"] = {"rho": float(rho), "p": pval, "test": how, "pairs": int(ok.sum())}
    nearest = {}
    for i, a in enumerate(names):
        others = [j for j in range(len(names)) if j != i]
        # nearest by distance; a pair not compared (NaN: no shared range, or null read from a results.json) last
        j = min(others, key=lambda j: (bool(np.isnan(nd[i, j])), nd[i, j]))
        je = min(others, key=lambda j: (bool(np.isnan(nd_end[i, j])), nd_end[i, j]))
        nearest[a] = {
            "nearest": names[j],
            "normalized_distance": float(nd[i, j]),
            "nearest_final": names[je],
            "normalized_distance_final": float(nd_end[i, je]),
            "tree_neighbours": [names[k] for k in others if tree[i, k] == 1],
        }
    out["nearest_task"] = nearest
    return out


def figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = res["tasks"]
    tree = np.asarray(res["tree_distance"])
    iu = np.triu_indices(len(names), 1)
    panels = [
        ("normalized_distance", "over the progress both reach", "spearman_normalized_vs_tree_distance"),
        ("normalized_distance_final", "final models", "spearman_normalized_final_vs_tree_distance"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    nd = np.asarray(res["normalized_distance_final"])
    im = axes[0].imshow(np.log10(np.where(nd > 0, nd, np.nan)), cmap="viridis")
    axes[0].set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes[0].set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            if i != j:
                axes[0].text(
                    j, i, f"{nd[i, j]:.1f}\n(tree {tree[i, j]})", ha="center", va="center", fontsize=7, color="w"
                )
    fig.colorbar(im, ax=axes[0], label="log10 normalised distance")
    axes[0].set_title("Final models: Remark 5 distance (tree distance)")
    for ax, (key, what, rho_key) in zip(axes[1:], panels):
        d = np.asarray(res[key])
        ax.scatter(tree[iu], d[iu])
        for i, j in zip(*iu):
            ax.annotate(
                f"{names[i]}-{names[j]}", (tree[i, j], d[i, j]), fontsize=7, xytext=(3, 2), textcoords="offset points"
            )
        ax.set(
            xlabel="edges between the tasks in the semantic tree",
            ylabel="normalised distance",
            yscale="log",
            title=f"{what}: Spearman rho = {res[rho_key]['rho']:.2f}",
        )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    from _family import add_seeds_argument

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    ap.add_argument(
        "--data-path",
        default="../shared/data/cifar10",
        help="CIFAR-10: an ImageFolder, a tarball or torchvision's batches folder (default: %(default)s)",
    )
    ap.add_argument("--out", default="result3", help="output folder (default: %(default)s)")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=["all", "vehicles", "animals", "mammals", "pets"],
        help="tasks of the hierarchy (default: %(default)s)",
    )
    ap.add_argument("--arch", default="small-cnn", help="network (default: %(default)s)")
    add_seeds_argument(ap, 2, "of every task")
    ap.add_argument("--epochs", type=int, default=6, help="training epochs per run (default: %(default)s)")
    ap.add_argument("--checkpoints", type=int, default=10, help="recorded checkpoints per run (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=128, help="samples per batch (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate, cosine schedule (default: %(default)s)")
    ap.add_argument("--train-per-class", type=int, default=800, help="training images per class (default: %(default)s)")
    ap.add_argument(
        "--eval-samples", type=int, default=2000, help="evaluation samples, class-balanced (default: %(default)s)"
    )
    ap.add_argument(
        "--imprint-samples",
        type=int,
        default=2000,
        help="training images used to imprint each checkpoint (default: %(default)s)",
    )
    ap.add_argument(
        "--imprint-head",
        choices=("cosine", "cosine-ml", "euclidean"),
        default="cosine-ml",
        help="imprinted head (taskgeom.imprinting.HEADS) (default: %(default)s)",
    )
    ap.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu or cuda (default: %(default)s)"
    )
    ap.add_argument(
        "--results",
        help="analyse the results.json of an existing `taskgeom picture --data cifar10` run instead of training (default: train)",
    )
    return ap


def picture(args, out: Path) -> dict:
    """The results.json of ``--results``, or of a ``taskgeom picture`` run trained here on CIFAR-10."""
    if args.results:
        try:
            pic = json.loads(Path(args.results).read_text())
        except ValueError as exc:
            raise ValueError(f"{args.results}: not a results.json ({exc})") from None
        for key in ("task_distances", "explained_stress", "progress_on_union_task"):
            if not isinstance(pic, dict) or key not in pic:
                raise ValueError(f"{args.results}: not a taskgeom picture's results.json (no {key!r})")
        out.mkdir(parents=True, exist_ok=True)
        return pic
    from taskgeom.data import DataConfig
    from taskgeom.picture import PictureConfig, print_headline, run

    cfg = PictureConfig(
        out=str(out),
        tasks=tuple(args.tasks),
        seeds=list(args.seeds),
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        checkpoints=args.checkpoints,
        imprint_samples=args.imprint_samples,
        imprint_head=args.imprint_head,
        device=args.device,
    )
    data = DataConfig(
        data="cifar10",
        data_path=args.data_path,
        train_per_class=args.train_per_class,
        eval_samples=args.eval_samples,
    )
    result = run(cfg, data)
    print_headline(result, str(out))
    return result.to_json()


def report(res: dict, out: Path) -> None:
    for key in (
        "spearman_normalized_vs_tree_distance",
        "spearman_normalized_final_vs_tree_distance",
        "spearman_normalized_vs_class_overlap_distance",
        "spearman_normalized_final_vs_class_overlap_distance",
    ):
        r = res[key]
        p = "no p-value" if r["p"] is None else f"Mantel p {r['p']:.3g}"
        print(f"{key}: rho {r['rho']:.3f} ({p}, {r['pairs']} pairs; {r['test']})")
    for a, v in res["nearest_task"].items():
        print(
            f"  {a:>9}: nearest {v['nearest']} ({v['normalized_distance']:.2f}), final models nearest "
            f"{v['nearest_final']} ({v['normalized_distance_final']:.2f}); tree neighbours "
            f"{', '.join(v['tree_neighbours'])}"
        )
    print(f"wrote {out / 'result3.json'} and {out / 'result3.png'}")


def main():
    args = parser().parse_args()
    out = Path(args.out)
    pic = picture(args, out)
    res = analyse(pic["task_distances"])
    res["explained_stress"] = pic["explained_stress"]
    res["progress_on_union_task"] = {t: v["mean"] for t, v in pic["progress_on_union_task"].items()}
    res.update(provenance(args))
    (out / "result3.json").write_text(strict_dumps(res, indent=2))
    figure(res, out / "result3.png")
    report(res, out)


if __name__ == "__main__":
    from taskgeom.cli import run_script

    run_script(main, "result3_hierarchy.py")
