"""Result 2 at small scale: progress on the union task and per-class progress on trained and unseen
classes (Fig. 2a), from a store written by ``taskgeom picture`` (or ``taskgeom train``).

    taskgeom picture --out runs/picture
    python experiments/result2_progress.py --store runs/picture/store --out runs/result2

Writes ``result2.json`` (``tasks``: progress per task and class, mean over seeds, at initialisation
(checkpoint 0, the untrained network), at the final checkpoint and gained between them; ``settings`` and
``code``: the options and the code's commit) and ``per_class_progress.png``
(violins over seeds x classes, trained classes against unseen ones). An untrained network already has
progress (0.5-0.6 on digits with the fitted-temperature head), so the gains are what training did; a
sub-task's ``gain_fraction_of_all`` is its gain over the all-classes task's gain.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import taskgeom as tg
from taskgeom._configjson import strict_dumps
from taskgeom.store import PredictionStore

from _data import provenance


def collect(store) -> dict:
    """Per task: each run's progress on the union task and per class, at initialisation and at the end."""
    res = {}
    for traj in store.select():
        es = store.eval_set(traj.eval_set)
        first, final = np.asarray(traj.probs[0]), np.asarray(traj.probs[-1])  # as stored
        trained = set(traj.extra.get("classes", range(es.c)))
        entry = res.setdefault(
            traj.task,
            {"union": [], "union_init": [], "per_class": [], "per_class_init": [], "trained": sorted(trained)},
        )
        entry["union"].append(float(tg.progress(final, es.labels)))
        entry["union_init"].append(float(tg.progress(first, es.labels)))
        entry["per_class"].append(tg.per_class_progress(final, es.labels).tolist())
        entry["per_class_init"].append(tg.per_class_progress(first, es.labels).tolist())
    return res


def summarise(res: dict) -> dict:
    """Per task: means over seeds, on the trained and the unseen classes, and the gains."""
    summary = {}
    for task, e in res.items():
        pc, pc0 = np.array(e["per_class"]), np.array(e["per_class_init"])  # (seeds, C)
        trained = np.array(e["trained"])
        unseen = np.setdiff1d(np.arange(pc.shape[1]), trained)

        def part(x, cls):
            return float(x[:, cls].mean()) if cls.size else None

        summary[task] = {
            "seeds": len(e["union"]),
            "progress_on_union_task": float(np.mean(e["union"])),
            "progress_at_init": float(np.mean(e["union_init"])),
            "progress_gain": float(np.mean(e["union"]) - np.mean(e["union_init"])),
            "per_class_mean": pc.mean(0).tolist(),
            "per_class_at_init": pc0.mean(0).tolist(),
            "trained_classes_mean": part(pc, trained),
            "unseen_classes_mean": part(pc, unseen),
            "trained_classes_at_init": part(pc0, trained),
            "unseen_classes_at_init": part(pc0, unseen),
            "trained_classes_gain": part(pc - pc0, trained),
            "unseen_classes_gain": part(pc - pc0, unseen),
        }
    if "all" in summary:
        for v in summary.values():
            v["gain_fraction_of_all"] = v["progress_gain"] / summary["all"]["progress_gain"]
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a PredictionStore, e.g. <picture out>/store (required)")
    ap.add_argument("--out", default="result2", help="output folder (default: %(default)s)")
    args = ap.parse_args()
    store = PredictionStore(args.store, readonly=True)  # only read
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = collect(store)
    summary = summarise(res)
    (out / "result2.json").write_text(strict_dumps({"tasks": summary, **provenance(args)}, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taskgeom.plots import per_class_violins

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(res)), 4))
    per_class_violins(ax, {t: e["per_class"] for t, e in res.items()}, {t: e["trained"] for t, e in res.items()})
    fig.tight_layout()
    fig.savefig(out / "per_class_progress.png", dpi=110)

    def arrow(s, key, init):
        return "-" if s[key] is None else f"{s[init]:.3f} -> {s[key]:.3f}"

    for task, s in summary.items():
        frac = f", {100 * s['gain_fraction_of_all']:.0f}% of all's gain" if "gain_fraction_of_all" in s else ""
        print(
            f"{task:>6}: union {arrow(s, 'progress_on_union_task', 'progress_at_init')} (gain "
            f"{s['progress_gain']:+.3f}{frac}); trained classes "
            f"{arrow(s, 'trained_classes_mean', 'trained_classes_at_init')}, unseen classes "
            f"{arrow(s, 'unseen_classes_mean', 'unseen_classes_at_init')}"
        )
    print(f"wrote {out / 'result2.json'} and {out / 'per_class_progress.png'}")


if __name__ == "__main__":
    from taskgeom.cli import run_script

    run_script(main, "result2_progress.py", interrupted="the outputs may be incomplete: run it again")
