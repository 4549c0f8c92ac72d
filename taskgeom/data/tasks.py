"""Tasks: named class subsets, the union task, k-way episodes, and a built-in CIFAR-10 hierarchy
(the small-scale analogue of the paper's Wordnet phyla)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Task",
    "EpisodeSampler",
    "CIFAR10_CLASSES",
    "CIFAR10_TASKS",
    "DIGIT_TASKS",
    "load_tasks",
    "union",
    "episodes",
    "random_task",
    "RANDOM_TASK",
]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class Task:
    """A task: a name and an ordered list of class names (its labels are their positions)."""

    name: str
    classes: tuple

    def __post_init__(self):
        if len(self.classes) < 2:
            raise ValueError(f"task {self.name!r} needs at least two classes, got {list(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name!r} lists a class twice: {list(self.classes)}")

    def indices(self, all_classes) -> list[int]:
        """Positions of this task's classes in a dataset's class list (names or integer indices)."""
        out = []
        for c in self.classes:
            if isinstance(c, str):
                if c not in all_classes:
                    raise ValueError(f"task {self.name!r}: unknown class {c!r}")
                out.append(list(all_classes).index(c))
            else:
                if not 0 <= int(c) < len(all_classes):
                    raise ValueError(f"task {self.name!r}: class index {c} out of range")
                out.append(int(c))
        return out


#: Built-in CIFAR-10 tasks: a semantic tree (all > vehicles | animals > mammals > pets) plus pairs.
CIFAR10_TASKS = {
    "all": Task("all", tuple(CIFAR10_CLASSES)),
    "vehicles": Task("vehicles", ("airplane", "automobile", "ship", "truck")),
    "animals": Task("animals", ("bird", "cat", "deer", "dog", "frog", "horse")),
    "mammals": Task("mammals", ("cat", "deer", "dog", "horse")),
    "pets": Task("pets", ("cat", "dog")),
    "airplane-automobile": Task("airplane-automobile", ("airplane", "automobile")),
    "bird-cat": Task("bird-cat", ("bird", "cat")),
    "ship-truck": Task("ship-truck", ("ship", "truck")),
}


#: Built-in tasks on scikit-learn's digits: name -> class indices (the union task is all ten digits).
DIGIT_TASKS = {
    "all": list(range(10)),
    "0-4": [0, 1, 2, 3, 4],
    "5-9": [5, 6, 7, 8, 9],
    "even": [0, 2, 4, 6, 8],
    "odd": [1, 3, 5, 7, 9],
}


def load_tasks(path, classes=None) -> dict[str, Task]:
    """Tasks from a JSON or YAML file (``.yaml`` / ``.yml``, read with ``yaml.safe_load``) mapping task
    names to class lists: class names (for an ImageFolder, its class folder names, e.g. WordNet ids such as
    ``n02084071``) or integer indices. With ``classes`` (a dataset's class names), every class is checked
    against them: an unknown one is a one-line ValueError naming the task and the class."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read the tasks file ({exc.strerror or exc})") from exc
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise ValueError(
            f"{p}: not a valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} tasks file ({' '.join(str(exc).split())})"
        ) from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{p}: expected a mapping of task names to class lists")
    tasks = {}
    for name, cls in data.items():
        if not isinstance(cls, list) or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in cls):
            raise ValueError(f"{p}: task {name!r}: expected a list of class names or indices, got {cls!r}")
        tasks[str(name)] = Task(str(name), tuple(cls))
        if classes is not None:
            tasks[str(name)].indices(classes)  # unknown classes fail here, naming the task
    return tasks


#: Built-in random class subsets: ``random<k>-s<seed>`` (e.g. ``random6-s0``, the size-matched control of a
#: six-class task, as the paper's "random 333" against Dogs; or ``random2-s3``, one of the k-way tasks).
RANDOM_TASK = re.compile(r"^random(\d+)-s(\d+)$")


def random_task(name: str, n_classes: int) -> list[int] | None:
    """The class indices of a ``random<k>-s<seed>`` task name (``k`` distinct classes of ``n_classes``
    drawn with the seed, sorted), or None when ``name`` is not of that form."""
    m = RANDOM_TASK.match(name)
    if not m:
        return None
    k, seed = int(m.group(1)), int(m.group(2))
    if not 2 <= k <= n_classes:
        raise ValueError(f"task {name!r}: a random task needs 2 to {n_classes} classes, got {k}")
    return sorted(int(c) for c in np.random.default_rng(seed).choice(n_classes, k, replace=False))


def union(tasks, name: str = "union") -> Task:
    """The task whose classes are the union of the given tasks' (first-seen order)."""
    seen = []
    for t in tasks:
        for c in t.classes:
            if c not in seen:
                seen.append(c)
    return Task(name, tuple(seen))


class EpisodeSampler:
    """``way``-way episodes from ``labels``, the classes indexed once: :meth:`draw` takes ``way`` random
    classes and, per class, ``shot`` support and ``query`` query samples (disjoint), with labels relabelled
    0..way-1. ``sampler(seed)`` is the first episode of ``episodes(labels, way, shot, query, 1, seed)``:
    the same draws, without re-indexing all the labels for every episode (1.6-1.8 ms an episode over
    CIFAR-10's 50,000 labels on the development machine, the cost of a GPU step or more)."""

    def __init__(self, labels, way: int, shot: int, query: int):
        labels = np.asarray(labels)
        self.classes = np.unique(labels)
        if way > len(self.classes):
            raise ValueError(f"{way}-way episodes from {len(self.classes)} classes")
        self.by_class = [np.flatnonzero(labels == c) for c in self.classes]
        short = [int(c) for c, ix in zip(self.classes, self.by_class) if len(ix) < shot + query]
        if short:
            raise ValueError(f"classes {short} have fewer than shot + query = {shot + query} samples")
        self.way, self.shot, self.query = way, shot, query
        self._support_y = np.repeat(np.arange(way), shot)
        self._query_y = np.repeat(np.arange(way), query)

    def draw(self, rng: np.random.Generator):
        """One episode from ``rng``: (support_idx, support_y, query_idx, query_y)."""
        chosen = rng.choice(len(self.classes), size=self.way, replace=False)
        picks = [rng.choice(self.by_class[j], size=self.shot + self.query, replace=False) for j in chosen]
        support = np.concatenate([p[: self.shot] for p in picks])
        query = np.concatenate([p[self.shot :] for p in picks])
        return support, self._support_y.copy(), query, self._query_y.copy()

    def __call__(self, seed: int):
        return self.draw(np.random.default_rng(seed))


def episodes(labels, way: int, shot: int, query: int, count: int, seed: int = 0):
    """``count`` k-way episodes (:class:`EpisodeSampler`) from one generator seeded with ``seed``. Yields
    (support_idx, support_y, query_idx, query_y) with labels relabelled 0..way-1."""
    sampler = EpisodeSampler(labels, way, shot, query)
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield sampler.draw(rng)
