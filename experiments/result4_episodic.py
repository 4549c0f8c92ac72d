"""Result 4 at small scale: episodic meta-learning (prototypical loss, 2-way and 5-way) against
supervised learning on all ten digits, every checkpoint imprinted onto the ten-digit task. Reports,
per method, the final progress on the union task and the Riemann length (eq. 6), the ratio of the
2-way to the supervised length, and the normalised distance (Remark 5) between each episodic mean
trajectory and the supervised one as a function of progress; draws the InPCA of all runs.

    python experiments/result4_episodic.py --out runs/result4            # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import taskgeom as tg
from taskgeom.picture import load_digits_split
from taskgeom.store import PredictionStore
from taskgeom.train import TrainConfig, train

METHODS = {  # name -> training configuration overrides (LayerNorm for every method, as in Appendix A)
    "supervised": dict(method="supervised"),
    "protonet-2way": dict(method="protonet", way=2, shot=5, query=10),
    "protonet-5way": dict(method="protonet", way=5, shot=5, query=10),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="result4")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--grid", type=int, default=40)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = load_digits_split(0.35, 0)
    store = PredictionStore(out / "store", create=True)
    store.add_eval_set("digits-test", yte, class_names=[str(i) for i in range(10)])
    steps_per_epoch = int(np.ceil(len(ytr) / 64))
    trajs = {}
    for name, over in METHODS.items():
        for seed in range(args.seeds):
            cfg = TrainConfig(arch="small-cnn", norm="layer", epochs=args.epochs, lr=0.1, checkpoints=20, seed=seed,
                              device=args.device, episodes_per_epoch=steps_per_epoch, imprint_samples=len(ytr),
                              **over)
            t = train(cfg, list(range(10)), (xtr, ytr), (xte, yte), store, "digits-test", f"all:{name}",
                      progress_bar=False)
            trajs.setdefault(name, []).append(t)
    res = {"methods": {}}
    families = {}
    for name, ts in trajs.items():
        probs = [np.asarray(t.probs) for t in ts]
        families[name] = np.stack([tg.reindex(p, yte, grid=args.grid).astype(np.float32) for p in probs])
        res["methods"][name] = {
            "final_progress": [float(tg.progress(p[-1], yte)) for p in probs],
            "riemann_length": [tg.riemann_length(p) for p in probs],
            "final_accuracy": [t.checkpoints[-1]["accuracy"] for t in ts],
        }
    sup_len = np.mean(res["methods"]["supervised"]["riemann_length"])
    res["riemann_length_ratio_2way_over_supervised"] = float(np.mean(res["methods"]["protonet-2way"]["riemann_length"])
                                                             / sup_len)
    res["riemann_length_ratio_5way_over_supervised"] = float(np.mean(res["methods"]["protonet-5way"]["riemann_length"])
                                                             / sup_len)
    res["grid"] = np.linspace(0, 1, args.grid).tolist()
    res["normalized_distance_to_supervised"] = {
        name: tg.normalized_distance(fam, families["supervised"]).tolist()
        for name, fam in families.items() if name != "supervised"}
    (out / "result4.json").write_text(json.dumps(res, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(families)
    allr = np.concatenate([families[n] for n in names])
    D = tg.pairwise_distances(allr.reshape(-1, allr.shape[2], allr.shape[3]))
    emb = tg.inpca(D, k=3)
    X = emb.coords.reshape(len(allr), args.grid, 3)
    fig = plt.figure(figsize=(13, 5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    k = 0
    for i, n in enumerate(names):
        for _ in range(len(families[n])):
            ax.plot(*X[k].T, color=f"C{i}", lw=1, alpha=0.6, label=n if _ == 0 else None)
            k += 1
    ax.set_title(f"InPCA ({100 * emb.explained_stress(3):.1f}% explained stress in 3 dims)")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    for i, (n, nd) in enumerate(res["normalized_distance_to_supervised"].items()):
        ax2.plot(res["grid"], nd, color=f"C{names.index(n)}", label=f"{n} vs supervised")
    ax2.axhline(1.0, color="k", ls=":", lw=1)
    ax2.set(xlabel="progress", ylabel="distance / mean tube radius", yscale="log", title="Remark 5")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "result4.png", dpi=110)
    for name, m in res["methods"].items():
        print(f"{name:>14}: final progress {np.mean(m['final_progress']):.3f}, Riemann length "
              f"{np.mean(m['riemann_length']):.3f}, accuracy {np.mean(m['final_accuracy']):.3f}")
    print(f"Riemann length ratio 2-way / supervised: {res['riemann_length_ratio_2way_over_supervised']:.3f}; "
          f"5-way / supervised: {res['riemann_length_ratio_5way_over_supervised']:.3f}")
    print(f"wrote {out / 'result4.json'} and {out / 'result4.png'}")


if __name__ == "__main__":
    main()
