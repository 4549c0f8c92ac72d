"""Figures (matplotlib): the picture's static figures, drawn from the same data as the interactive report's
(:mod:`taskgeom.figures`), and helpers shared with the experiments."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import figures

__all__ = ["per_class_violins", "picture_figures"]


def per_class_violins(ax, per_class: dict, trained: dict) -> None:
    """Violins of per-class progress (Fig. 2a): for each task, its trained classes (blue) and the
    unseen ones (orange). ``per_class[task]``: (seeds, C) progress; ``trained[task]``: class indices."""
    pos, data, colors = [], [], []
    tasks = list(per_class)
    for i, task in enumerate(tasks):
        pc = np.asarray(per_class[task], dtype=float)
        seen = np.asarray(sorted(trained[task]), dtype=int)
        unseen = np.setdiff1d(np.arange(pc.shape[1]), seen)
        for j, (sel, color) in enumerate(((seen, "tab:blue"), (unseen, "tab:orange"))):
            if sel.size:
                pos.append(3 * i + j)
                data.append(pc[:, sel].ravel())
                colors.append(color)
    parts = ax.violinplot(data, positions=pos, showmeans=True)
    for body, color in zip(parts["bodies"], colors):
        body.set_facecolor(color)
    ax.set_xticks([3 * i + 0.5 for i in range(len(tasks))], tasks)
    ax.set_ylabel("per-class progress")
    ax.set_title("Per-class progress (blue: trained, orange: unseen)")


def picture_figures(res, out: Path) -> list[str]:
    """Static figures of a picture run (PNG): 3-D InPCA trajectories; explained stress, progress against
    epochs, normalised distances and per-class progress. ``res``: a :class:`taskgeom.analysis.PictureResult`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(k[0] for k in res.embedding.keys))
    colors = {t: plt.cm.tab10(i) for i, t in enumerate(tasks)}
    return [_inpca_png(res, out, colors), _summary_png(res, out, colors)]


def _inpca_png(res, out: Path, colors: dict) -> str:
    """inpca_3d.png: seeds thin, task means bold, each over the progress it reached."""
    import matplotlib.pyplot as plt

    emb = res.embedding
    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    for line in emb.lines:  # seeds thin, task means bold; each over the progress it reached
        x = np.array(figures.curve_xyz(line.points)).reshape(-1, 3)
        style = {"lw": 2.5, "label": line.task} if line.mean else {"lw": 0.8, "alpha": 0.5}
        ax.plot(x[:, 0], x[:, 1], x[:, 2], color=colors[line.task], **style)
    sig = emb.signature
    for axis, k in zip((ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), range(3)):
        axis(f"InPCA {k + 1} ({'+' if len(sig) > k and sig[k] > 0 else '-'})")
    chi3 = res.explained_stress.get("3", float("nan"))
    ax.set_title(f"InPCA of re-indexed trajectories ({100 * chi3:.1f}% explained stress in 3 dims)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "inpca_3d.png", dpi=110)
    plt.close(fig)
    return "inpca_3d.png"


def _summary_png(res, out: Path, colors: dict) -> str:
    """summary.png: explained stress, progress against epochs, normalised distances, per-class progress."""
    import matplotlib.pyplot as plt

    emb = res.embedding
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    stress = figures.stress(res)
    axes[0].plot(stress["ks"], stress["percent"], "o-")
    axes[0].set_xticks(stress["ks"])
    axes[0].set(xlabel="dimensions k", ylabel="explained stress (%)", title="Explained stress (eq. 11)")
    progress = figures.progress_curves(res)
    labelled = set()
    for c in progress["curves"]:
        task = c["task"]
        axes[1].plot(c["x"], c["progress"], color=colors[task], alpha=0.7, label=None if task in labelled else task)
        labelled.add(task)
    axes[1].set(xlabel=progress["x_label"], ylabel="progress on the union task", title="Progress (eq. 4)")
    axes[1].legend(fontsize=8)
    distances = figures.distance_curves(res)
    grid = np.asarray(distances["grid"])
    for c in distances["curves"]:
        keep = np.asarray(c["reached"], dtype=bool)  # only the progress both tasks reached
        axes[2].plot(grid[keep], figures.as_array(c["values"])[keep], color=colors[c["task"]], label=c["task"])
    axes[2].axhline(1.0, color="k", ls=":", lw=1)
    axes[2].set(
        xlabel="progress",
        ylabel="distance / mean tube radius",
        yscale="log",
        title=f"Normalised distance to '{distances['reference']}' (Remark 5)",
    )
    if distances["curves"]:  # (one group: nothing to compare, no legend)
        axes[2].legend(fontsize=8)
    per_class_violins(axes[3], emb.per_class, emb.trained)
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)
    return "summary.png"
