"""``taskgeom picture``: the main job, end to end on built-in data.

Trains a small CNN (:mod:`taskgeom.train`) on several tasks (class subsets of scikit-learn's digits,
shipped inside scikit-learn, so nothing is downloaded; or of CIFAR-10 with ``data="cifar10"``) with a few
seeds each, maps every checkpoint onto
the union task by imprinting (eq. 7) and records its predictions in a PredictionStore; then computes progress
(eq. 4), re-indexes the trajectories (Remark 4), their pairwise Bhattacharyya distances, the InPCA
embedding and explained stress (eqs. 9-11), mean trajectories, tube radii and normalised distances
(Remark 5) between every pair of tasks and Riemann lengths (eq. 6), prints the headline numbers and writes a report folder
(``results.json``, ``config.json``, figures). An existing store is re-analysed without retraining.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: The built-in tasks on digits: name -> classes (the union task is all ten digits).
DIGIT_TASKS = {
    "all": list(range(10)),
    "0-4": [0, 1, 2, 3, 4],
    "5-9": [5, 6, 7, 8, 9],
    "even": [0, 2, 4, 6, 8],
    "odd": [1, 3, 5, 7, 9],
}


#: The default CIFAR-10 tasks: the hierarchy of taskgeom.data.CIFAR10_TASKS (the union task is all ten).
CIFAR10_PICTURE_TASKS = ("all", "vehicles", "animals", "mammals", "pets")


@dataclass(frozen=True)
class PictureConfig:
    """Configuration of ``taskgeom picture`` (units in brackets)."""

    out: str = "taskgeom-picture"  # report folder [path]
    store: str | None = None  # PredictionStore folder [path]; default <out>/store
    data: str = "digits"  # "digits" (built in) or "cifar10" (needs data_path)
    data_path: str | None = None  # CIFAR-10 folder or tarballs, e.g. ../shared/data/cifar10
    tasks: tuple | None = None  # task names; default: DIGIT_TASKS, or CIFAR10_PICTURE_TASKS
    seeds: int = 3  # seeds per task
    arch: str = "small-cnn"  # see taskgeom.models.build_model
    epochs: int = 15  # training epochs per run
    batch_size: int = 64  # [samples]
    lr: float = 0.1  # peak learning rate of SGD with Nesterov momentum 0.9, cosine schedule
    weight_decay: float = 1e-5  # excluding normalisation parameters and biases
    checkpoints: int = 20  # recorded checkpoints per run, dense early (geometric in steps)
    grid: int = 50  # progress values of the re-indexed trajectories
    test_fraction: float = 0.35  # held-out evaluation split of digits
    train_per_class: int = 0  # CIFAR-10: training images per class (0: all 5,000)
    eval_samples: int = 0  # CIFAR-10: evaluation images, a class-balanced subset of the test split (0: all)
    imprint_samples: int = 5000  # training images used to imprint each checkpoint onto the union task
    device: str = "auto"
    data_seed: int = 0

    def task_names(self) -> tuple:
        if self.tasks:
            return tuple(self.tasks)
        return tuple(DIGIT_TASKS) if self.data == "digits" else CIFAR10_PICTURE_TASKS


def load_digits_split(test_fraction: float, seed: int):
    """Digits as (N, 8, 8, 3) uint8 images and int64 labels, split once into train (training and
    imprinting) and test (evaluation)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.round(d.images / 16 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return (img[train], y[train]), (img[test], y[test])


def _balanced(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    """Sorted indices of at most ``per_class`` samples of each class."""
    keep = [rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def load_data(cfg: PictureConfig):
    """(train, test, class names, tasks as class-index lists, evaluation set name) for ``cfg.data``."""
    if cfg.data == "digits":
        tr, te = load_digits_split(cfg.test_fraction, cfg.data_seed)
        return tr, te, [str(i) for i in range(10)], dict(DIGIT_TASKS), f"digits-test-seed{cfg.data_seed}"
    if cfg.data != "cifar10":
        raise ValueError(f"unknown dataset {cfg.data!r} (digits, cifar10)")
    from .train import load_dataset

    tr, te, classes, tasks = load_dataset("cifar10", cfg.data_path)
    rng = np.random.default_rng(cfg.data_seed)
    if cfg.train_per_class:
        idx = _balanced(tr[1], cfg.train_per_class, rng)
        tr = (tr[0][idx], tr[1][idx])
    if cfg.eval_samples:
        idx = _balanced(te[1], max(1, cfg.eval_samples // len(classes)), rng)
        te = (te[0][idx], te[1][idx])
    name = f"cifar10-test-{len(te[1])}-seed{cfg.data_seed}"
    return tr, te, classes, tasks, name


def analyse(store, eval_set: str, tasks, grid: int) -> dict:
    """Progress, re-indexing, distances, InPCA, tubes and lengths of every stored trajectory."""
    import taskgeom as tg

    labels = store.eval_set(eval_set).labels
    trajs = [t for t in store.select(eval_set=eval_set, method="supervised") if t.task in tasks and len(t) > 1]
    trajs.sort(key=lambda t: (list(tasks).index(t.task), t.seed))
    if not trajs:
        raise RuntimeError(f"no trajectories with at least two checkpoints on {eval_set!r} in {store.root}")
    res: dict = {"eval_set": eval_set, "n": int(labels.size), "c": int(store.eval_set(eval_set).c),
                 "trajectories": len(trajs), "checkpoints": int(sum(len(t) for t in trajs))}
    final_progress = {}
    reindexed, keys, along, epochs = [], [], [], []
    per_class, trained, lengths = {}, {}, {}
    for t in trajs:
        probs = np.asarray(t.probs)
        prog = tg.progress(probs, labels)
        final_progress.setdefault(t.task, []).append(float(prog[-1]))
        r, info = tg.reindex(probs, labels, grid=grid, return_info=True)
        reindexed.append(r.astype(np.float32))
        cps = t.checkpoints
        keys.append((t.task, t.seed, prog.tolist(), [c["accuracy"] for c in cps]))
        epochs.append([c["epoch"] for c in cps])
        lengths.setdefault(t.task, []).append(tg.riemann_length(probs))
        per_class.setdefault(t.task, []).append(tg.per_class_progress(probs[-1], labels).tolist())
        trained.setdefault(t.task, list(t.extra.get("classes", range(res["c"]))))
        along.append(_interpolate_checkpoints(info, cps))
    R = np.stack(reindexed)  # (K, G, N, C)
    flat = R.reshape(-1, R.shape[2], R.shape[3])
    D = tg.pairwise_distances(flat)
    emb = tg.inpca(D, k=min(10, D.shape[0]))
    chi = emb.explained_stress()
    res["explained_stress"] = {str(k + 1): float(chi[k]) for k in range(min(5, len(chi)))}
    res["progress_on_union_task"] = {task: {"mean": float(np.mean(v)), "seeds": v} for task, v in final_progress.items()}
    res["riemann_length"] = {task: {"mean": float(np.mean(v)), "seeds": v} for task, v in lengths.items()}
    res["geodesic_length_P0_Pstar"] = math.sqrt(2) * math.acos(1 / math.sqrt(res["c"]))
    families = {task: R[[i for i, k in enumerate(keys) if k[0] == task]] for task in dict.fromkeys(k[0] for k in keys)}
    ref = "all" if "all" in families else next(iter(families))
    res["normalized_distance_to_" + ref] = {
        task: tg.normalized_distance(fam, families[ref]).tolist() for task, fam in families.items() if task != ref}
    res["tube_radius"] = {task: tg.tube_radius(fam).tolist() for task, fam in families.items()}
    res["grid"] = np.linspace(0, 1, grid).tolist()
    res["task_distances"] = task_distances(families, final_progress, np.linspace(0, 1, grid))
    # means over seeds and the two ends of the task, placed into the embedding out of sample
    task_names = list(families)
    means = np.stack([families[t].astype(np.float64).mean(0) for t in task_names]).reshape(-1, R.shape[2], R.shape[3])
    c = res["c"]
    ends = np.stack([np.full((res["n"], c), 1.0 / c), np.eye(c)[labels]])
    placed = emb.transform(tg.pairwise_distances(np.concatenate([means, ends]), flat))[:, :3]
    grid_t = np.linspace(0, 1, grid)
    lines = []
    for i, (task, seed, _p, _a) in enumerate(keys):
        pts = [{"xyz": emb.coords[i * grid + g, :3].tolist(), "progress": float(grid_t[g]),
                "epoch": along[i][0][g], "accuracy": along[i][1][g]} for g in range(grid)]
        lines.append({"task": task, "seed": int(seed), "method": "supervised", "mean": False, "points": pts})
    for j, task in enumerate(task_names):
        pts = [{"xyz": placed[j * grid + g].tolist(), "progress": float(grid_t[g]), "epoch": None, "accuracy": None}
               for g in range(grid)]
        lines.append({"task": task, "seed": None, "method": "supervised", "mean": True, "points": pts})
    marks = [{"name": "P0 (ignorance)", "xyz": placed[-2].tolist()}, {"name": "P* (truth)", "xyz": placed[-1].tolist()}]
    res["per_class_progress"] = {task: np.mean(v, axis=0).tolist() for task, v in per_class.items()}
    res["_embedding"] = {"coords": emb.coords[:, :3], "signature": emb.signature[:3].tolist(),
                         "eigenvalues": emb.eigenvalues.tolist(), "keys": keys, "grid": grid,
                         "lines": lines, "marks": marks, "epochs": epochs, "per_class": per_class,
                         "trained": trained}
    return res


def task_distances(families: dict, final_progress: dict, grid: np.ndarray) -> dict:
    """Distances between every pair of task families, over the progress both reach.

    ``families[task]`` is (seeds, G, N, C) re-indexed trajectories. For each pair, the comparison is
    restricted to the grid values up to the smaller of the two tasks' final progress (the lowest over
    seeds): beyond it re-indexing clamps a trajectory to its last model. Reported: ``normalized``, the
    mean over that range of the symmetrised Remark 5 ratio (distance between mean trajectories over the
    mean of the two tube radii), and ``bhattacharyya``, the mean Bhattacharyya distance between the mean
    trajectories. ``normalized_final`` and ``bhattacharyya_final`` compare the final models (the last
    checkpoints) the same way: the comparison that still says something when a task reaches little
    progress on the union task.
    """
    import taskgeom as tg

    names = list(families)
    k = len(names)
    nd, db, nd_end, db_end = (np.zeros((k, k)) for _ in range(4))
    reach = {t: float(min(final_progress[t])) for t in names}
    means = {t: families[t].astype(np.float64).mean(0) for t in names}
    points = {}
    for i, a in enumerate(names):
        for j in range(i + 1, k):
            b = names[j]
            mask = grid <= min(reach[a], reach[b])
            mask[0] = True
            points[f"{a}|{b}"] = int(mask.sum())
            nd[i, j] = nd[j, i] = float(np.mean(tg.normalized_distance(families[a][:, mask], families[b][:, mask])))
            db[i, j] = db[j, i] = float(np.mean(tg.bhattacharyya(means[a][mask], means[b][mask])))
            # the final models (the re-indexed trajectories end at each run's last checkpoint)
            nd_end[i, j] = nd_end[j, i] = float(tg.normalized_distance(families[a][:, -1:], families[b][:, -1:])[0])
            db_end[i, j] = db_end[j, i] = float(tg.bhattacharyya(means[a][-1], means[b][-1]))
    return {"tasks": names, "normalized": nd.tolist(), "bhattacharyya": db.tolist(),
            "normalized_final": nd_end.tolist(), "bhattacharyya_final": db_end.tolist(),
            "progress_reached": reach, "points_compared": points}


def _interpolate_checkpoints(info: dict, checkpoints: list[dict]):
    """Epoch and accuracy at each re-indexed point, interpolated between the two checkpoints whose
    geodesic it lies on (the checkpoint itself where the grid value lies outside the reached range)."""
    epochs = np.array([c["epoch"] if c["epoch"] is not None else np.nan for c in checkpoints], dtype=float)
    accs = np.array([c["accuracy"] if c["accuracy"] is not None else np.nan for c in checkpoints], dtype=float)
    tk = info["checkpoint_progress"]
    ep, ac = [], []
    for g, seg in enumerate(info["segment"]):
        if seg >= 0:
            lam = info["lam"][g]
            e = epochs[seg] + lam * (epochs[seg + 1] - epochs[seg])
            a = accs[seg] + lam * (accs[seg + 1] - accs[seg])
        else:
            k = int(np.argmin(tk)) if info["grid"][g] < tk.min() else int(np.argmax(tk))
            e, a = epochs[k], accs[k]
        ep.append(None if np.isnan(e) else float(e))
        ac.append(None if np.isnan(a) else float(a))
    return ep, ac


def figures(res: dict, out: Path) -> list[str]:
    """Static figures of a run (PNG): 3-D InPCA trajectories, explained stress, progress, distances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emb = res["_embedding"]
    keys, G = emb["keys"], emb["grid"]
    X = np.asarray(emb["coords"]).reshape(len(keys), G, -1)
    tasks = list(dict.fromkeys(k[0] for k in keys))
    colors = {t: plt.cm.tab10(i) for i, t in enumerate(tasks)}
    made = []
    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    for (task, _seed, _p, _a), x in zip(keys, X):
        ax.plot(x[:, 0], x[:, 1], x[:, 2] if x.shape[1] > 2 else 0 * x[:, 0], color=colors[task], lw=0.8, alpha=0.5)
    for task in tasks:
        m = X[[i for i, k in enumerate(keys) if k[0] == task]].mean(0)
        ax.plot(m[:, 0], m[:, 1], m[:, 2] if m.shape[1] > 2 else 0 * m[:, 0], color=colors[task], lw=2.5, label=task)
    sig = emb["signature"]
    ax.set_xlabel(f"PC1 ({'+' if sig[0] > 0 else '-'})")
    ax.set_ylabel(f"PC2 ({'+' if sig[1] > 0 else '-'})")
    ax.set_zlabel(f"PC3 ({'+' if len(sig) > 2 and sig[2] > 0 else '-'})")
    chi3 = res["explained_stress"].get("3", float("nan"))
    ax.set_title(f"InPCA of re-indexed trajectories ({100 * chi3:.1f}% explained stress in 3 dims)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "inpca_3d.png", dpi=110)
    plt.close(fig)
    made.append("inpca_3d.png")

    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    ks = sorted(int(k) for k in res["explained_stress"])
    axes[0].plot(ks, [100 * res["explained_stress"][str(k)] for k in ks], "o-")
    axes[0].set(xlabel="dimensions k", ylabel="explained stress (%)", title="Explained stress (eq. 11)")
    for (task, seed, prog, _acc), ep in zip(keys, emb["epochs"]):
        axes[1].plot(ep, prog, color=colors[task], alpha=0.7, label=task if seed == 0 else None)
    axes[1].set(xlabel="epoch", ylabel="progress on the union task", title="Progress (eq. 4)")
    axes[1].legend(fontsize=8)
    grid = res["grid"]
    ref = [k for k in res if k.startswith("normalized_distance_to_")][0]
    for task, nd in res[ref].items():
        axes[2].plot(grid, nd, color=colors[task], label=task)
    axes[2].axhline(1.0, color="k", ls=":", lw=1)
    axes[2].set(xlabel="progress", ylabel="distance / mean tube radius", yscale="log",
                title=f"Normalised distance to '{ref.split('_to_')[1]}' (Remark 5)")
    axes[2].legend(fontsize=8)
    from .plots import per_class_violins

    per_class_violins(axes[3], emb["per_class"], emb["trained"])
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)
    made.append("summary.png")
    return made


def run(cfg: PictureConfig) -> dict:
    from .store import PredictionStore
    from .train import TrainConfig, train

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    store = PredictionStore(cfg.store or out / "store", create=True)
    tasks = cfg.task_names()
    t0 = time.perf_counter()
    train_data, test_data, class_names, task_classes, eval_set = load_data(cfg)
    unknown = [t for t in tasks if t not in task_classes]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown} for {cfg.data}; known: {sorted(task_classes)}")
    store.add_eval_set(eval_set, test_data[1], class_names=class_names)
    runs = [(task, seed) for task in tasks for seed in range(cfg.seeds)]
    from tqdm.auto import tqdm

    for task, seed in tqdm(runs, desc="training runs", unit="run"):
        tcfg = TrainConfig(method="supervised", arch=cfg.arch, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           lr=cfg.lr, weight_decay=cfg.weight_decay, checkpoints=cfg.checkpoints, seed=seed,
                           device=cfg.device, imprint_samples=min(cfg.imprint_samples, len(train_data[1])))
        # resumable: a finished run is reused, an interrupted one continues where it stopped
        train(tcfg, task_classes[task], train_data, test_data, store, eval_set, task, progress_bar=False)
    t_train = time.perf_counter() - t0
    res = analyse(store, eval_set, tasks, cfg.grid)
    res["seconds"] = {"training": t_train, "total": time.perf_counter() - t0}
    made = figures(res, out)
    res["figures"] = made
    from .report import write_report

    res["report"] = write_report(res, out).name
    public = {k: v for k, v in res.items() if not k.startswith("_")}
    (out / "results.json").write_text(json.dumps(public, indent=2))
    from ._build import build_info
    from ._provenance import code_version

    (out / "config.json").write_text(json.dumps({**asdict(cfg), "tasks": list(tasks), "code": code_version(),
                                                 "build": build_info()}, indent=2, default=str))
    return res


def print_headline(res: dict, out: str) -> None:
    print(f"\ntaskgeom picture: {res['trajectories']} trajectories, {res['checkpoints']} checkpoints, "
          f"evaluated on {res['n']} samples x {res['c']} classes ({res['eval_set']})")
    chi = res["explained_stress"]
    print("explained stress: " + ", ".join(f"{k} dims {100 * v:.2f}%" for k, v in chi.items()))
    print("progress on the union task (final checkpoint, mean over seeds):")
    for task, v in res["progress_on_union_task"].items():
        print(f"  {task:>6}: {v['mean']:.3f}")
    print(f"Riemann length (eq. 6; geodesic P0 -> P* is {res['geodesic_length_P0_Pstar']:.4f}):")
    for task, v in res["riemann_length"].items():
        print(f"  {task:>6}: {v['mean']:.3f}")
    td = res.get("task_distances")
    if td and len(td["tasks"]) > 1:
        names = td["tasks"]
        print("normalised distance between tasks (Remark 5; 1 = tubes touch), over the progress both reach:")
        print("  " + " " * 10 + "".join(f"{n[:9]:>10}" for n in names))
        for n, row in zip(names, td["normalized"]):
            print(f"  {n[:10]:>10}" + "".join(f"{v:10.2f}" for v in row))
    print(f"report: {out}/{res['report']} (open in a browser), {out}/results.json, figures "
          f"{', '.join(res['figures'])}; took {res['seconds']['total']:.1f} s")


def add_parser(sub) -> None:
    p = sub.add_parser("picture", help="the main job: trajectories of several tasks, their geometry, a report",
                       description=__doc__.split("\n\n")[0])
    d = PictureConfig()
    p.add_argument("--out", default=d.out, help="report folder (default %(default)s)")
    p.add_argument("--store", default=None, help="PredictionStore folder (default <out>/store)")
    p.add_argument("--data", default=d.data, choices=["digits", "cifar10"],
                   help="digits (built in, default) or cifar10 (with --data-path)")
    p.add_argument("--data-path", help="CIFAR-10 folder or its train/test tarballs, e.g. ../shared/data/cifar10")
    p.add_argument("--tasks", nargs="+", default=None,
                   help=f"task names (digits: {', '.join(DIGIT_TASKS)}; cifar10 default: "
                        f"{', '.join(CIFAR10_PICTURE_TASKS)}; also airplane-automobile, bird-cat, ship-truck)")
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--arch", default=d.arch, help="small-cnn (default), wrn-16-4, resnet18")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--checkpoints", type=int, default=d.checkpoints)
    p.add_argument("--grid", type=int, default=d.grid)
    p.add_argument("--train-per-class", type=int, default=d.train_per_class,
                   help="CIFAR-10: training images per class (0: all)")
    p.add_argument("--eval-samples", type=int, default=d.eval_samples,
                   help="CIFAR-10: class-balanced evaluation images from the test split (0: all 10,000)")
    p.add_argument("--imprint-samples", type=int, default=d.imprint_samples)
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.set_defaults(fn=_cmd)


def _cmd(args) -> int:
    cfg = PictureConfig(out=args.out, store=args.store, data=args.data, data_path=args.data_path,
                        tasks=tuple(args.tasks) if args.tasks else None, seeds=args.seeds, arch=args.arch,
                        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, checkpoints=args.checkpoints,
                        grid=args.grid, train_per_class=args.train_per_class, eval_samples=args.eval_samples,
                        imprint_samples=args.imprint_samples, device=args.device)
    res = run(cfg)
    print_headline(res, cfg.out)
    return 0
