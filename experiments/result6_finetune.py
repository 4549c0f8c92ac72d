"""Result 6 at small scale: fine-tuning on sub-tasks from checkpoints along the supervised trajectory.

A supervised run on all ten digits keeps the weights of every recorded checkpoint; from an early, a
middle and the final one, models are fine-tuned on 0-4 and on 5-9 (on CIFAR-10 with ``--data cifar10``:
on airplane-automobile and on bird-cat, as in the paper). Every fine-tuned checkpoint is
imprinted onto the ten-digit task, and its distance to the supervised trajectory is the smallest d_B to
any point of the re-indexed supervised trajectory. Reports how far the fine-tuned models move from it
(relative to the supervised trajectory's own tube of seeds) and their progress on the union task.

    python experiments/result6_finetune.py --out runs/result6      # about a minute on 2 CPU cores
    python experiments/result6_finetune.py --data cifar10 --data-path ../shared/data/cifar10 --out runs/r6c
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import taskgeom as tg
from taskgeom.store import PredictionStore
from taskgeom.train import TrainConfig, train

from _data import SUBTASKS, add_data_arguments, load


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="result6", help="output folder (default: %(default)s)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=15, help="epochs of the supervised runs (default: %(default)s)")
    ap.add_argument(
        "--finetune-epochs", type=int, default=5, help="epochs of each fine-tuning run (default: %(default)s)"
    )
    ap.add_argument(
        "--grid", type=int, default=40, help="progress values of the re-indexed trajectories (default: %(default)s)"
    )
    ap.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu or cuda (default: %(default)s)"
    )
    add_data_arguments(ap)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte), class_names, tasks, eval_set, _ = load(args)
    store = PredictionStore(out / "store", create=True)
    store.add_eval_set(eval_set, yte, class_names=class_names)
    base = dict(
        arch=args.arch,
        norm="layer",
        lr=0.1,
        batch_size=args.batch_size,
        device=args.device,
        imprint_samples=min(args.imprint_samples, len(ytr)),
        imprint_head=args.imprint_head,
    )
    sup = [
        train(
            TrainConfig(epochs=args.epochs, checkpoints=20, seed=s, keep_states=True, **base),
            tasks["all"],
            (xtr, ytr),
            (xte, yte),
            store,
            eval_set,
            "all",
            progress_bar=False,
        )
        for s in range(args.seeds)
    ]
    family = np.stack([tg.reindex(np.asarray(t.probs), yte, grid=args.grid) for t in sup]).astype(np.float32)
    mean_sup = family.astype(np.float64).mean(0)
    radius = float(np.mean(tg.tube_radius(family)))
    n_ck = len(sup[0])
    starts = {"early": 3, "middle": n_ck // 2, "final": n_ck - 1}
    res = {
        "supervised": {
            "final_progress": float(np.mean([tg.progress(np.asarray(t.probs)[-1], yte) for t in sup])),
            "mean_tube_radius": radius,
        },
        "finetuned": {},
    }
    state_dir = out / "store" / "state"
    for where, k in starts.items():
        for task in SUBTASKS[args.data]:
            rows = []
            for s, t in enumerate(sup):
                init = state_dir / f"{t.id:06d}_ckpt{k:03d}.pt"
                ft = train(
                    TrainConfig(
                        method="finetune",
                        epochs=args.finetune_epochs,
                        checkpoints=8,
                        seed=s,
                        init_from=str(init),
                        **base,
                    ),
                    tasks[task],
                    (xtr, ytr),
                    (xte, yte),
                    store,
                    eval_set,
                    f"{task}:finetune-from-{where}",
                    progress_bar=False,
                )
                probs = np.asarray(ft.probs)
                d = np.asarray(tg.pairwise_distances(probs, mean_sup))  # (checkpoints, grid)
                rows.append(
                    {
                        "distance_to_supervised": d.min(1).tolist(),
                        "progress": np.asarray(tg.progress(probs, yte)).tolist(),
                    }
                )
            dist = np.array([r["distance_to_supervised"] for r in rows])
            res["finetuned"][f"{task} from {where} (checkpoint {k})"] = {
                "start_progress": float(np.mean([r["progress"][0] for r in rows])),
                "final_progress": float(np.mean([r["progress"][-1] for r in rows])),
                "final_distance_over_tube_radius": float(dist[:, -1].mean() / radius),
                "max_distance_over_tube_radius": float(dist.max(1).mean() / radius),
            }
    (out / "result6.json").write_text(json.dumps(res, indent=2))
    print(f"supervised: final progress {res['supervised']['final_progress']:.3f}, mean tube radius {radius:.2e}")
    for name, r in res["finetuned"].items():
        print(
            f"{name:>32}: progress {r['start_progress']:.3f} -> {r['final_progress']:.3f}, distance to the "
            f"supervised trajectory {r['final_distance_over_tube_radius']:.1f} tube radii at the end"
        )
    print(f"wrote {out / 'result6.json'}")


if __name__ == "__main__":
    main()
