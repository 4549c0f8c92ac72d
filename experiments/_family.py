"""What the CIFAR-10 family scripts (cifar10_family_a.py, cifar10_family_b.py) share: options, data, the
runs of a family trained one after the other into one store (resumable: a rerun continues), the
re-indexed families on a grid over the progress reached, and the output folder (at most 8 files and
64 MB: results.json, summary.png, store.tar, run.log; the store's training states stay in --work).

``--smoke`` runs the same code on the CPU in about a minute: a generated 32 x 32 ImageFolder with
CIFAR-10's class names, the small CNN, one epoch, two seeds, few checkpoints.
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

import taskgeom as tg
from taskgeom.data import CIFAR10_CLASSES, DataConfig, balanced_subset, load
from taskgeom.store import PredictionStore
from taskgeom.train import PRESETS, TrainConfig, train

MAX_FILES, MAX_BYTES = 8, 64 * 2**20

#: the fast recipe (bench/bench_train.py) for every run unless a family overrides a field
FAST = dict(PRESETS["cifar10-fast-resnet"])


@dataclass
class Run:
    """One run of a family: a label (its group in the analysis), the task, the seed and its settings."""

    group: str
    task: str
    seed: int
    settings: dict = field(default_factory=dict)
    init: tuple | None = None  # (label of a supervised run, checkpoint index) to fine-tune from


def arguments(description: str, epochs: int, seeds: int) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data-path", default=".devdata/cifar10", help="CIFAR-10 (default: %(default)s)")
    ap.add_argument("--out", required=True, help="output folder: at most 8 files and 64 MB (required)")
    ap.add_argument("--work", help="store and training states (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny generated data on the CPU (a rehearsal)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    ap.add_argument("--arch", default="fast-resnet", help="network (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=epochs, help="supervised epochs (default: %(default)s)")
    ap.add_argument("--seeds", type=int, default=seeds, help="seeds per configuration (default: %(default)s)")
    ap.add_argument("--checkpoints", type=int, default=16, help="checkpoints per run (default: %(default)s)")
    ap.add_argument("--eval-samples", type=int, default=2000, help="evaluation images (default: %(default)s)")
    ap.add_argument(
        "--train-per-class", type=int, default=0, help="training images per class, 0: all (default: %(default)s)"
    )
    ap.add_argument("--imprint-samples", type=int, default=5000, help="imprinting images (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, help="samples per batch (default: the fast recipe's 1,024)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: the fast recipe's 0.8)")
    ap.add_argument("--grid", type=int, default=24, help="progress values of the re-indexed runs (default: 24)")
    return ap


def smoke_settings(args) -> None:
    """Shrink everything for a CPU rehearsal (same code path)."""
    args.arch, args.epochs, args.seeds, args.checkpoints = "small-cnn", 1, 2, 3
    args.eval_samples, args.imprint_samples, args.grid, args.device = 100, 100, 6, "cpu"
    args.train_per_class = 0


def smoke_data(root: Path, per_class: int = 24, test_per_class: int = 10) -> str:
    """A tiny CIFAR-like ImageFolder (``<split>/<class>/<image>.png``, 32 x 32) with a class signal."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(CIFAR10_CLASSES):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 200, (32, 32, 3), dtype=np.uint8)
                img[: 3 + 2 * c, :, c % 3] = 255
                Image.fromarray(img).save(d / f"{i}.png")
    return str(root)


class Family:
    """The data, store and runs of one family script."""

    def __init__(self, args, name: str, eval_on_train: bool = False):
        self.args, self.name, self.t0 = args, name, time.perf_counter()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work or tempfile.mkdtemp(prefix=f"taskgeom-{name}-"))
        self.log_file = open(self.out / "run.log", "a", encoding="utf-8")
        path = smoke_data(self.work / "data") if args.smoke else args.data_path
        self.data_path = str(path)
        self.data = load(
            DataConfig(
                data="cifar10", data_path=path, eval_samples=args.eval_samples, train_per_class=args.train_per_class
            )
        )
        if eval_on_train:  # evaluate on training images (the paper's Figs. 4-5), class-balanced
            idx = balanced_subset(self.data.train[1], max(1, args.eval_samples // 10), np.random.default_rng(0))
            test = (self.data.train[0][idx], self.data.train[1][idx])
            self.data = replace(self.data, test=test, eval_set=f"cifar10-train-{len(idx)}-seed0")
        self.store = PredictionStore(self.work / "store", create=True)
        self.store.add_eval_set(self.data.eval_set, self.data.test[1], class_names=self.data.classes)
        self.labels = np.asarray(self.data.test[1])
        self.trajs: dict[str, list] = {}  # group -> trajectories (seed order)
        self._cache: dict = {}  # (kind, group) -> probabilities / checkpoint progress, read once after training
        self.log(f"{name}: {len(self.data.train[1])} training, {len(self.labels)} evaluation images")

    def log(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.1f} s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def config(self, run: Run) -> TrainConfig:
        a = self.args
        base = {**FAST, "arch": a.arch, "epochs": a.epochs, "checkpoints": a.checkpoints, "device": a.device}
        base.update(imprint_samples=a.imprint_samples, seed=run.seed, state_dir=str(self.work / "state"))
        if a.smoke:
            base.update(batch_size=64, lr=0.1)
        base.update({k: v for k, v in (("batch_size", a.batch_size), ("lr", a.lr)) if v is not None})
        cfg = {**base, **run.settings}
        if run.init is not None:
            src, k = run.init
            t = self.trajs[src][run.seed]
            cfg.update(method="finetune", init_from=str(self.work / "state" / f"{t.id:06d}_ckpt{k:03d}.pt"))
        return TrainConfig(**cfg)

    def train(self, runs: list[Run]) -> None:
        self._cache.clear()
        for i, run in enumerate(runs):
            cfg = self.config(run)
            t = time.perf_counter()
            traj = train(
                cfg, self.data.task(run.task), self.data.train, self.data.test, self.store, self.data.eval_set,
                run.group, progress_bar=False,
            )  # fmt: skip
            self.trajs.setdefault(run.group, []).append(traj)
            acc = traj.checkpoints[-1].get("accuracy", float("nan"))
            self.log(
                f"run {i + 1}/{len(runs)} {run.group} seed {run.seed}: {time.perf_counter() - t:.1f} s, imprinted accuracy {acc:.3f}"
            )

    def probs(self, group: str) -> list[np.ndarray]:
        """Each run's checkpoints (T, N, C) in float64, rows renormalised (stored as float16); read from the
        store once per group."""
        if ("probs", group) not in self._cache:
            out = []
            for t in self.trajs[group]:
                p = np.asarray(t.probs, dtype=np.float64)
                out.append(p / p.sum(-1, keepdims=True))
            self._cache["probs", group] = out
        return self._cache["probs", group]

    def final_progress(self, group: str) -> np.ndarray:
        """Each run's progress at its last checkpoint."""
        return np.array([p[-1] for p in self.checkpoint_progress(group)])

    def checkpoint_progress(self, group: str) -> list[np.ndarray]:
        """Each run's progress at every checkpoint (the range it reaches runs from its lowest to its highest)."""
        if ("progress", group) not in self._cache:
            self._cache["progress", group] = [
                np.asarray(tg.progress(p, self.labels), dtype=np.float64) for p in self.probs(group)
            ]
        return self._cache["progress", group]

    def grid(self, groups) -> np.ndarray:
        """At most ``--grid`` progress values over the range the runs of ``groups`` reach, only values some
        run reaches (:func:`taskgeom.progress_grid`): nothing below the lowest start or above the highest end."""
        return tg.progress_grid([p for g in groups for p in self.checkpoint_progress(g)], self.args.grid)

    def family(self, group: str, grid: np.ndarray) -> np.ndarray:
        """(seeds, G, N, C) re-indexed trajectories of ``group``; outside a run's range its first or last
        model (callers compare only where every run compared reaches: :meth:`reached`)."""
        return np.stack([np.asarray(tg.reindex(p, self.labels, grid=grid)) for p in self.probs(group)]).astype(
            np.float32
        )

    def reached(self, groups, grid) -> np.ndarray:
        """The grid points every run of ``groups`` reaches, from the highest start to the lowest end (no
        clamped first or last models)."""
        runs = [p for g in groups for p in self.checkpoint_progress(g)]
        lo, hi = max(float(p.min()) for p in runs), min(float(p.max()) for p in runs)
        return (np.asarray(grid) >= lo - 1e-12) & (np.asarray(grid) <= hi + 1e-12)

    def shared_grid(self, a: str, b: str) -> np.ndarray | None:
        """``--grid`` progress values over the range every run of groups a and b reaches; None if none."""
        try:
            return tg.progress_grid(
                self.checkpoint_progress(a) + self.checkpoint_progress(b), self.args.grid, shared=True
            )
        except ValueError:
            return None

    def shared(self, a: str, b: str):
        """Both groups re-indexed on :meth:`shared_grid`, or None where they share no progress
        (``taskgeom.analysis.task_distances``'s ``shared``)."""
        g = self.shared_grid(a, b)
        return None if g is None else (self.family(a, g), self.family(b, g))

    def finish(self, results: dict, figure) -> None:
        """results.json, summary.png, store.tar (the prediction store without training states), run.log;
        checks the folder's limits."""
        from taskgeom._provenance import code_version

        results = {**results, "family": self.name, "device": _device(), "seconds": time.perf_counter() - self.t0}
        results["settings"] = {k: v for k, v in vars(self.args).items() if k not in ("out", "work")}
        results["settings"]["data_path"] = self.data_path  # the data actually used (generated with --smoke)
        results["code"] = code_version()
        (self.out / "results.json").write_text(json.dumps(_plain(results), indent=1, allow_nan=False))
        figure(results, self.out / "summary.png")
        self.store.close()
        with tarfile.open(self.out / "store.tar", "w") as tar:
            for f in sorted((self.work / "store").rglob("*")):
                if f.is_file() and "state" not in f.relative_to(self.work / "store").parts:
                    tar.add(f, arcname=str(Path("store") / f.relative_to(self.work / "store")))
        self.log(f"done: {self.out}")
        self.log_file.close()
        files = [f for f in self.out.rglob("*") if f.is_file()]
        size = sum(f.stat().st_size for f in files)
        if len(files) > MAX_FILES or size > MAX_BYTES:
            raise SystemExit(f"{self.out}: {len(files)} files, {size / 2**20:.1f} MB (limits {MAX_FILES}, 64 MB)")


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None  # (strict JSON has no NaN)
    return x


def summary(values) -> dict:
    """Mean, standard deviation over seeds and the values."""
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "values": v.tolist()}
