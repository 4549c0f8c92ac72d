"""``taskgeom picture``: the main job, end to end on built-in data.

Trains a small CNN (:mod:`taskgeom.train`) on several tasks (class subsets of scikit-learn's digits,
shipped inside scikit-learn, so nothing is downloaded) with a few seeds each, maps every checkpoint onto
the union task by imprinting (eq. 7) and records its predictions in a PredictionStore; then computes progress
(eq. 4), re-indexes the trajectories (Remark 4), their pairwise Bhattacharyya distances, the InPCA
embedding and explained stress (eqs. 9-11), mean trajectories, tube radii and normalised distances
(Remark 5) and Riemann lengths (eq. 6), prints the headline numbers and writes a report folder
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


@dataclass(frozen=True)
class PictureConfig:
    """Configuration of ``taskgeom picture`` (units in brackets)."""

    out: str = "taskgeom-picture"  # report folder [path]
    store: str | None = None  # PredictionStore folder [path]; default <out>/store
    tasks: tuple = tuple(DIGIT_TASKS)  # task names from DIGIT_TASKS
    seeds: int = 3  # seeds per task
    arch: str = "small-cnn"  # see taskgeom.models.build_model
    epochs: int = 15  # training epochs per run
    batch_size: int = 64  # [samples]
    lr: float = 0.1  # peak learning rate of SGD with Nesterov momentum 0.9, cosine schedule
    weight_decay: float = 1e-5  # excluding normalisation parameters and biases
    checkpoints: int = 20  # recorded checkpoints per run, dense early (geometric in steps)
    grid: int = 50  # progress values of the re-indexed trajectories
    test_fraction: float = 0.35  # held-out evaluation split of digits
    device: str = "auto"
    data_seed: int = 0


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
    eval_set = f"digits-test-seed{cfg.data_seed}"
    t0 = time.perf_counter()
    data = load_digits_split(cfg.test_fraction, cfg.data_seed)
    store.add_eval_set(eval_set, data[1][1], class_names=[str(i) for i in range(10)])
    runs = [(task, seed) for task in cfg.tasks for seed in range(cfg.seeds)]
    from tqdm.auto import tqdm

    for task, seed in tqdm(runs, desc="training runs", unit="run"):
        tcfg = TrainConfig(method="supervised", arch=cfg.arch, epochs=cfg.epochs, batch_size=cfg.batch_size,
                           lr=cfg.lr, weight_decay=cfg.weight_decay, checkpoints=cfg.checkpoints, seed=seed,
                           device=cfg.device, imprint_samples=len(data[0][1]))
        # resumable: a finished run is reused, an interrupted one continues where it stopped
        train(tcfg, DIGIT_TASKS[task], data[0], data[1], store, eval_set, task, progress_bar=False)
    t_train = time.perf_counter() - t0
    res = analyse(store, eval_set, cfg.tasks, cfg.grid)
    res["seconds"] = {"training": t_train, "total": time.perf_counter() - t0}
    made = figures(res, out)
    res["figures"] = made
    from .report import write_report

    res["report"] = write_report(res, out).name
    public = {k: v for k, v in res.items() if not k.startswith("_")}
    (out / "results.json").write_text(json.dumps(public, indent=2))
    from ._build import build_info
    from ._provenance import code_version

    (out / "config.json").write_text(json.dumps({**asdict(cfg), "tasks": list(cfg.tasks), "code": code_version(),
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
    print(f"report: {out}/{res['report']} (open in a browser), {out}/results.json, figures "
          f"{', '.join(res['figures'])}; took {res['seconds']['total']:.1f} s")


def add_parser(sub) -> None:
    p = sub.add_parser("picture", help="the main job: trajectories of several tasks, their geometry, a report",
                       description=__doc__.split("\n\n")[0])
    d = PictureConfig()
    p.add_argument("--out", default=d.out, help="report folder (default %(default)s)")
    p.add_argument("--store", default=None, help="PredictionStore folder (default <out>/store)")
    p.add_argument("--tasks", nargs="+", default=list(d.tasks), choices=list(DIGIT_TASKS))
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--checkpoints", type=int, default=d.checkpoints)
    p.add_argument("--grid", type=int, default=d.grid)
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.set_defaults(fn=_cmd)


def _cmd(args) -> int:
    cfg = PictureConfig(out=args.out, store=args.store, tasks=tuple(args.tasks), seeds=args.seeds, epochs=args.epochs,
                        checkpoints=args.checkpoints, grid=args.grid, device=args.device)
    res = run(cfg)
    print_headline(res, cfg.out)
    return 0
