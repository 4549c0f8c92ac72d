"""Result 2 at small scale: progress on the union task and per-class progress on trained and unseen
classes (Fig. 2a), from a store written by ``taskgeom picture`` (or ``taskgeom train``).

    taskgeom picture --out runs/picture
    python experiments/result2_progress.py --store runs/picture/store --out runs/result2

Writes ``result2.json`` (progress per task and class, mean over seeds) and ``per_class_progress.png``
(violins over seeds x classes, trained classes against unseen ones).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import taskgeom as tg
from taskgeom.store import PredictionStore


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a PredictionStore, e.g. <picture out>/store (required)")
    ap.add_argument("--out", default="result2", help="output folder (default: %(default)s)")
    args = ap.parse_args()
    store = PredictionStore(args.store)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    for traj in store.select():
        es = store.eval_set(traj.eval_set)
        final = np.asarray(traj.probs[-1])  # as stored (float16 rows are checked at float16 tolerance)
        per_class = tg.per_class_progress(final, es.labels)
        trained = set(traj.extra.get("classes", range(es.c)))
        entry = res.setdefault(traj.task, {"union": [], "per_class": [], "trained": sorted(trained)})
        entry["union"].append(float(tg.progress(final, es.labels)))
        entry["per_class"].append(per_class.tolist())
    summary = {}
    for task, e in res.items():
        pc = np.array(e["per_class"])  # (seeds, C)
        trained = np.array(e["trained"])
        unseen = np.setdiff1d(np.arange(pc.shape[1]), trained)
        summary[task] = {
            "progress_on_union_task": float(np.mean(e["union"])),
            "per_class_mean": pc.mean(0).tolist(),
            "trained_classes_mean": float(pc[:, trained].mean()),
            "unseen_classes_mean": float(pc[:, unseen].mean()) if unseen.size else None,
        }
    (out / "result2.json").write_text(json.dumps(summary, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from taskgeom.plots import per_class_violins

    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(res)), 4))
    per_class_violins(ax, {t: e["per_class"] for t, e in res.items()}, {t: e["trained"] for t, e in res.items()})
    fig.tight_layout()
    fig.savefig(out / "per_class_progress.png", dpi=110)
    for task, s in summary.items():
        unseen = "-" if s["unseen_classes_mean"] is None else f"{s['unseen_classes_mean']:.3f}"
        print(
            f"{task:>6}: union {s['progress_on_union_task']:.3f}, trained classes {s['trained_classes_mean']:.3f}, "
            f"unseen classes {unseen}"
        )
    print(f"wrote {out / 'result2.json'} and {out / 'per_class_progress.png'}")


if __name__ == "__main__":
    main()
