"""A short real-data run on the GPU: WRN-16-4 supervised on CIFAR-10 for a few epochs (images per
second of the training loop, imprinted and head accuracy), then each other method for one short run,
all recorded into a PredictionStore. Writes JSON to --out.

    python experiments/cifar_gpu_smoke.py --data ../shared/data/cifar10 --epochs 8 --out results.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from taskgeom.data import CIFAR10_TASKS, load_images
from taskgeom.store import PredictionStore
from taskgeom.train import TrainConfig, train


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--data", required=True, help="CIFAR-10: an ImageFolder, a tarball or torchvision's batches folder (required)"
    )
    ap.add_argument("--epochs", type=int, default=8, help="training epochs (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=256, help="samples per batch (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate, cosine schedule (default: %(default)s)")
    ap.add_argument("--store", default="/tmp/taskgeom-smoke", help="PredictionStore folder (default: %(default)s)")
    ap.add_argument(
        "--other-epochs", type=int, default=1, help="epochs of the other methods' short runs (default: %(default)s)"
    )
    ap.add_argument(
        "--out", default="smoke.json", help="where the timings and accuracies are written (default: %(default)s)"
    )
    return ap


def supervised(args, tr, te, store) -> dict:
    """WRN-16-4 on all ten classes: its time, images per second and accuracies."""
    classes = CIFAR10_TASKS["all"].indices(tr.classes)
    cfg = TrainConfig(
        method="supervised",
        arch="wrn-16-4",
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=5e-4,
        checkpoints=10,
        device="cuda",
    )
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    traj = train(
        cfg, classes, (tr.images, tr.labels), (te.images, te.labels), store, "cifar10-test", "all", progress_bar=False
    )
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    cps = traj.checkpoints
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seconds": dt,
        "images_per_s_including_recording": args.epochs * len(tr.labels) / dt,
        "accuracy": [c["accuracy"] for c in cps],
        "head_accuracy": [c.get("head_accuracy") for c in cps],
    }


def other_method(args, method: str, arch: str, task: str, tr, sub, te, store) -> dict:
    """One short run of another method on the training images ``sub`` (10,000 of them; their copy timed with
    the run, as before)."""
    c = TrainConfig(
        method=method,
        arch=arch,
        norm="layer" if method == "protonet" else "batch",
        epochs=args.other_epochs,
        batch_size=256,
        checkpoints=4,
        device="cuda",
        episodes_per_epoch=200,
        way=5,
        shot=5,
        query=15,
        labelled=2500,
        imprint_samples=5000,
    )
    t0 = time.perf_counter()
    cls = CIFAR10_TASKS[task].indices(tr.classes)
    tj = train(
        c, cls, (tr.images[sub], tr.labels[sub]), (te.images, te.labels), store, "cifar10-test", task,
        progress_bar=False,
    )  # fmt: skip
    return {
        "arch": arch,
        "task": task,
        "seconds": time.perf_counter() - t0,
        "accuracy": [x["accuracy"] for x in tj.checkpoints],
    }


def main():
    args = parser().parse_args()
    t0 = time.perf_counter()
    tr = load_images(f"{args.data}/train.tar.gz", split="train")
    te = load_images(f"{args.data}/test.tar.gz", split="test")
    res = {"decode_s": time.perf_counter() - t0, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    store = PredictionStore(args.store, create=True)
    store.add_eval_set("cifar10-test", te.labels, class_names=te.classes)
    res["supervised"] = supervised(args, tr, te, store)
    print(json.dumps(res["supervised"], indent=1))
    sub = np.random.default_rng(0).choice(len(tr.labels), 10_000, replace=False)
    for method, arch, task in (
        ("protonet", "wrn-16-4", "all"),
        ("simclr", "resnet18", "airplane-automobile"),
        ("barlow", "resnet18", "all"),
        ("fixmatch", "wrn-16-4", "all"),
    ):
        res[method] = other_method(args, method, arch, task, tr, sub, te, store)
        print(method, json.dumps(res[method]))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    from taskgeom.cli import run_script

    run_script(main, "cifar_gpu_smoke.py", interrupted="the store may hold unfinished runs: use a new --store")
