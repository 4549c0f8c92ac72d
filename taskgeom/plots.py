"""Plot helpers shared by the main job and the experiments (matplotlib, drawn on a given axis)."""

from __future__ import annotations

import numpy as np

__all__ = ["per_class_violins"]


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
