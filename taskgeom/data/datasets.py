"""The datasets taskgeom trains on, their subsets and their named tasks, with one naming scheme for
evaluation sets shared by training, the picture and the experiments.

* ``digits``: scikit-learn's 8 x 8 digits (shipped inside scikit-learn, nothing is downloaded), split
  once into a training part (training and imprinting) and a held-out evaluation part;
* ``cifar10``: CIFAR-10 from an ImageFolder directory (``<split>/<class>/<image>``), its
  ``train.tar.gz`` / ``test.tar.gz`` tarballs, or torchvision's ``cifar-10-batches-py`` folder
  (:func:`taskgeom.data.load_images`), optionally reduced to class-balanced subsets;
* ``imagefolder`` and ``beton``: ImageNet-style data streamed from disk, never decoded whole
  (:mod:`taskgeom.data.stream`). ``imagefolder`` PATH holds ``train/<class>/<image>`` and
  ``val/<class>/<image>`` (or ``test/``); ``beton`` PATH holds ``train.beton`` and ``val.beton`` (or
  ``test.beton``), each with the class list :func:`taskgeom.data.write_beton` writes beside it
  (``train.beton.classes.json``). Their tasks: ``all``, the random subsets ``random<k>-s<seed>`` and
  those of a ``--tasks-file``.

The evaluation set's name says how it was made (dataset, size, subset seed), so runs made by different
commands on the same data share one evaluation set in a store, and different data never share one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import option
from .tasks import CIFAR10_TASKS, DIGIT_TASKS, Task, load_tasks, random_task

__all__ = ["DATASETS", "DEFAULT_TASKS", "DataConfig", "Data", "load", "load_digits_split", "balanced_subset"]

DATASETS = ("digits", "cifar10", "imagefolder", "beton")
STREAMED = ("imagefolder", "beton")

#: The tasks the picture trains by default, per dataset (CIFAR-10: the semantic hierarchy).
DEFAULT_TASKS = {"digits": tuple(DIGIT_TASKS), "cifar10": ("all", "vehicles", "animals", "mammals", "pets")}


@dataclass(frozen=True)
class DataConfig:
    """Which data, and which subset of it."""

    data: str = option(
        "digits",
        "dataset: digits (built in), cifar10 (in memory), imagefolder or beton (ImageNet-style, streamed from "
        "disk); all but digits need --data-path",
        choices=DATASETS,
    )
    data_path: str | None = option(
        None,
        "cifar10: an ImageFolder directory (<split>/<class>/<image>), a folder "
        "with train.tar.gz and test.tar.gz, or torchvision's cifar-10-batches-py "
        "folder; imagefolder: a folder with train/<class>/<image> and val/<class>/<image> (or test/); "
        "beton: a folder with train.beton and val.beton (or test.beton), as written by taskgeom beton",
        metavar="PATH",
    )
    tasks_file: str | None = option(
        None,
        "JSON or YAML file of tasks: task name -> list of class names (an ImageFolder's class folder names, "
        "e.g. WordNet ids such as n02084071) or indices",
        metavar="FILE",
    )
    test_fraction: float = option(
        0.35, "digits: held-out fraction used as the evaluation set (in (0, 1))", above=0.0, below=1.0
    )
    train_per_class: int = option(
        0, "cifar10, imagefolder, beton: training images per class, a class-balanced subset (0: all 5,000)", minimum=0
    )
    eval_samples: int = option(
        0,
        "cifar10, imagefolder, beton: evaluation images, a class-balanced subset of the test split (0: all)",
        minimum=0,
    )
    data_seed: int = option(0, "seed of the digits split and of the class-balanced subsets", minimum=0)


@dataclass
class Data:
    """Loaded data: ``train`` and ``test`` as (images (N, H, W, 3) uint8, labels (N,) int64), or for
    streamed data (imagefolder, beton) as sources (:mod:`taskgeom.data.stream`: labels and a ``loader``);
    class names, named tasks (name -> class indices) and the evaluation set's name."""

    train: tuple
    test: tuple
    classes: list
    tasks: dict
    eval_set: str

    def task(self, name: str) -> list[int]:
        """The class indices of task ``name``: a named task of :attr:`tasks` or a random subset
        ``random<k>-s<seed>`` (:func:`taskgeom.data.tasks.random_task`)."""
        if name in self.tasks:
            return list(self.tasks[name])
        drawn = random_task(name, len(self.classes))
        if drawn is None:
            raise ValueError(f"unknown task {name!r}; known: {sorted(self.tasks)} or random<k>-s<seed>")
        return drawn

    @property
    def streamed(self) -> bool:
        """Whether the data are streamed from disk (imagefolder, beton) rather than held in memory."""
        return not isinstance(self.train, tuple)

    @property
    def train_labels(self) -> np.ndarray:
        return np.asarray(self.train.labels if self.streamed else self.train[1])

    @property
    def test_labels(self) -> np.ndarray:
        return np.asarray(self.test.labels if self.streamed else self.test[1])


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


def balanced_subset(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    """Sorted indices of at most ``per_class`` samples of each class, drawn with ``rng``."""
    keep = [rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def _cifar10(path: str | None):
    if path is None:
        raise ValueError(
            "--data cifar10 needs --data-path (an ImageFolder directory, a folder with train.tar.gz "
            "and test.tar.gz, or torchvision's cifar-10-batches-py folder)"
        )
    p = Path(path)
    train_src = p / "train.tar.gz" if (p / "train.tar.gz").exists() else p
    test_src = p / "test.tar.gz" if (p / "test.tar.gz").exists() else p
    from .images import load_images

    tr = load_images(train_src, split="train")
    te = load_images(test_src, split="test")
    tasks = {k: t.indices(tr.classes) for k, t in CIFAR10_TASKS.items()}
    return (tr.images, tr.labels), (te.images, te.labels), tr.classes, tasks


def _streamed(cfg: DataConfig):
    """(train source, evaluation source, evaluation split name) of imagefolder / beton data."""
    from .stream import BetonSource, ImageFolderSource

    if cfg.data_path is None:
        raise ValueError(f"--data {cfg.data} needs --data-path (see taskgeom train --help)")
    p = Path(cfg.data_path)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such folder (--data {cfg.data} --data-path)")
    name = "{}" if cfg.data == "imagefolder" else "{}.beton"
    splits = [s for s in ("val", "test") if (p / name.format(s)).exists()]
    if not (p / name.format("train")).exists() or not splits:
        raise FileNotFoundError(
            f"{p}: expected {name.format('train')} and {name.format('val')} (or {name.format('test')})"
        )
    if cfg.data == "imagefolder":
        tr, te = ImageFolderSource(p, "train"), ImageFolderSource(p, splits[0])
    else:
        tr, te = BetonSource(p / "train.beton"), BetonSource(p / name.format(splits[0]))
    if te.classes != tr.classes:
        raise ValueError(f"{p}: the {splits[0]} split's classes differ from the train split's")
    return tr, te, splits[0]


def _with_tasks_file(data: Data, cfg: DataConfig) -> Data:
    if cfg.tasks_file:
        data.tasks.update({k: t.indices(data.classes) for k, t in load_tasks(cfg.tasks_file, data.classes).items()})
    return data


def load(cfg: DataConfig) -> Data:
    """The data of ``cfg``: train and evaluation parts, class names, named tasks, evaluation-set name."""
    if cfg.data == "digits":
        tr, te = load_digits_split(cfg.test_fraction, cfg.data_seed)
        tasks = {k: list(v) for k, v in DIGIT_TASKS.items()}
        return _with_tasks_file(
            Data(tr, te, [str(i) for i in range(10)], tasks, f"digits-test-seed{cfg.data_seed}"), cfg
        )
    if cfg.data in STREAMED:
        tr, te, split = _streamed(cfg)
        rng = np.random.default_rng(cfg.data_seed)
        if cfg.train_per_class:
            tr = tr.subset(balanced_subset(tr.labels, cfg.train_per_class, rng))
        if cfg.eval_samples:
            te = te.subset(balanced_subset(te.labels, max(1, cfg.eval_samples // len(tr.classes)), rng))
        tasks = {"all": Task("all", tuple(tr.classes)).indices(tr.classes)} if len(tr.classes) >= 2 else {}
        name = f"{cfg.data}-{Path(cfg.data_path).resolve().name}-{split}-{len(te)}-seed{cfg.data_seed}"
        return _with_tasks_file(Data(tr, te, list(tr.classes), tasks, name), cfg)
    if cfg.data != "cifar10":
        raise ValueError(f"unknown dataset {cfg.data!r} ({', '.join(DATASETS)})")
    tr, te, classes, tasks = _cifar10(cfg.data_path)
    rng = np.random.default_rng(cfg.data_seed)
    if cfg.train_per_class:
        idx = balanced_subset(tr[1], cfg.train_per_class, rng)
        tr = (tr[0][idx], tr[1][idx])
    if cfg.eval_samples:
        idx = balanced_subset(te[1], max(1, cfg.eval_samples // len(classes)), rng)
        te = (te[0][idx], te[1][idx])
    return _with_tasks_file(Data(tr, te, classes, tasks, f"cifar10-test-{len(te[1])}-seed{cfg.data_seed}"), cfg)
